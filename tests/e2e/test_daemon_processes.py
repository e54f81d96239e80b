"""maild's parse workers live and die with the daemon: none is left behind by a clean stop or
by kill -9, and mail goes through them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_spine import mail
from tests.support.daemon import Daemon
from tests.support.sink import Sink


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += [child, *descendants(child)]
    return out


def alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


@pytest.fixture
def desk(sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, f"sqlite:///{tmp_path}/maild.db", f"smtp://127.0.0.1:{sink.port}",
                           extra="")
    d.start()
    yield d
    d.stop()


def workers_of(desk: Daemon) -> list[int]:
    assert desk.proc is not None
    return [p for p in descendants(desk.proc.pid)
            if "forkserver" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def test_mail_is_parsed_by_workers_that_end_with_a_clean_stop(desk: Daemon) -> None:
    desk.send(mail("jane@acme.test", "support@example.com", "Printer", "It jams."), "jane@acme.test",
              ["support@example.com"])
    assert [c["subject"] for c in desk.cases()] == ["Printer"]
    workers = workers_of(desk)
    assert len(workers) >= 2  # the forkserver and at least one worker
    t0 = time.monotonic()
    assert desk.stop() == 0
    assert time.monotonic() - t0 < 10
    assert alive(workers) == []


def test_kill_9_of_the_daemon_leaves_no_worker(desk: Daemon) -> None:
    workers = workers_of(desk)
    assert workers
    assert desk.proc is not None
    os.kill(desk.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(workers) == []
