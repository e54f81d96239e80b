"""maild's parse workers live and die with the daemon: none is left behind by a clean stop or
by kill -9, and mail goes through them."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.store.blobs import BlobStore
from maild.store.db import make_engine
from maild.store.models import Message
from maild.store.raw_messages import raw_message
from tests.support.daemon import Daemon
from tests.support.mails import mail
from tests.support.sink import Sink


def descendants(pid: int) -> list[int]:
    """Children of every thread of `pid` (the forkserver is started from a worker thread, and
    /proc lists a child under the thread that forked it), and theirs."""
    out: list[int] = []
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += (task / "children").read_text().split()
        except OSError:
            continue
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



def test_mail_from_a_worker_served_session_is_kept_byte_for_byte(desk: Daemon, tmp_path: Path) -> None:
    """A worker hands a small mail's bytes over with the parsed mail and the daemon's commit
    keeps them (no file of its own); a large one's are a file of the raw store."""
    small = mail("jane@acme.test", "support@example.com", "Printer", "It jams.")
    large = mail("joe@acme.test", "support@example.com", "Spooler log",
                 "\n".join(f"10:00:{i % 60:02d} ERROR spooler: paper jam in tray {i % 3}" for i in range(1600)))
    for raw in (small, large):
        desk.send(raw, "jane@acme.test", ["support@example.com"])
    raw_files = BlobStore(tmp_path / "data" / "raw")
    engine = make_engine(f"sqlite:///{tmp_path}/maild.db")
    with Session(engine) as s:
        shas = list(s.scalars(select(Message.sha256).order_by(Message.id)))
        assert [raw_message(s, raw_files, sha) for sha in shas] == [small, large]
    engine.dispose()
    assert not raw_files.path(shas[0]).exists() and raw_files.path(shas[1]).exists()

def test_kill_9_of_the_daemon_leaves_no_worker(desk: Daemon) -> None:
    workers = workers_of(desk)
    assert workers
    assert desk.proc is not None
    os.kill(desk.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(workers) == []


def _server_side_pid(desk: Daemon, client: socket.socket) -> int:
    """The process of maild's tree that holds the server end of `client`'s connection."""
    local_port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == desk.smtp_port and int(remote.split(":")[1], 16) == local_port:
            inodes.add(fields[9])
    assert desk.proc is not None
    for pid in [desk.proc.pid, *descendants(desk.proc.pid)]:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return pid
    raise AssertionError("no process of maild's holds the connection")


def test_smtp_sessions_are_served_by_the_workers_and_one_killed_loses_no_mail(desk: Daemon) -> None:
    """The workers, not the daemon's process (whose GIL the writer needs), serve SMTP. A worker
    killed in the middle of a session costs that session only: no 250 was given, the sender
    sends again, the mail is stored once, and a new worker takes the dead one's place."""
    assert desk.proc is not None
    before = workers_of(desk)
    raw = mail("jane@acme.test", "support@example.com", "Printer", "It jams.")
    client = smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30)
    client.ehlo()
    client.mail("jane@acme.test")
    serving = _server_side_pid(desk, client.sock)
    assert serving != desk.proc.pid and serving in before
    os.kill(serving, signal.SIGKILL)
    with pytest.raises(smtplib.SMTPException):
        client.rcpt("support@example.com")
        client.data(raw)
    client.close()
    desk.send(raw, "jane@acme.test", ["support@example.com"])  # the sender's retry
    assert [c["subject"] for c in desk.cases()] == ["Printer"]
    deadline = time.monotonic() + 10
    while len(alive(workers_of(desk))) < len(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(alive(workers_of(desk))) == len(before) and serving not in workers_of(desk)


def test_a_mailbox_added_by_reload_is_accepted_by_the_workers(desk: Daemon) -> None:
    assert desk.proc is not None and desk.config is not None
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        desk.send(mail("jane@acme.test", "sales@example.com", "Quote", "How much?"), "jane@acme.test",
                  ["sales@example.com"])
    sales = '\n[[mailboxes]]\naddress = "sales@example.com"\nteam = "support"\n'
    desk.config.write_text(desk.config.read_text() + sales)
    desk.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reloaded" not in desk.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(4):  # a session per try: each worker has to know it, whichever accepts
        desk.send(mail("jane@acme.test", "sales@example.com", "Quote", "How much?"), "jane@acme.test",
                  ["sales@example.com"])
    assert {c["subject"] for c in desk.cases()} == {"Quote"}
