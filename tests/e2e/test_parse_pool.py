"""Parsing in worker processes gives the same mail as parsing in place, keeps the blobs on
disk before the writer sees the mail, and survives a worker that is killed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.domain.errors import ParseError
from maild.domain.message import RawMail
from maild.ingest.parse import parse_message
from maild.ingest.parse_pool import WORKER_NICENESS, WORKER_POLICY, ParsePool
from maild.ingest.smtp_worker import SmtpInWorkers
from maild.ingest.wire import Envelope, ParsedMail
from maild.store.blobs import RAW_IN_DATABASE_MAX, BlobStore
from tests.unit.test_large_mail import assert_same_mail

EML = Path(__file__).resolve().parents[1] / "eml"


def crlf(name: str) -> bytes:
    return (EML / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The daemon's event loop stands in a thread of its own, so that the test can be the
    IMAP poller's thread too."""
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(10)
    lp.close()


def on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(30)


@pytest.fixture
def pool(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[ParsePool]:
    p = ParsePool(1, tmp_path / "raw", tmp_path / "attachments")
    on(loop, p.start())
    yield p
    on(loop, p.close())


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_worker_parses_as_in_place_and_stores_the_blobs(pool: ParsePool, tmp_path: Path,
                                                         loop: asyncio.AbstractEventLoop) -> None:
    raw = crlf("attachments-non-ascii-names.eml")
    msg = on(loop, pool.parse(raw))
    assert_same_mail(parse_message(raw), dataclasses.replace(msg, raw_mail=RawMail()),
                     BlobStore(tmp_path / "attachments"))
    assert msg.raw_mail == RawMail(data=raw) and msg.attachments  # the commit keeps a small mail's bytes
    assert not (tmp_path / "raw").exists()
    for a in msg.attachments:
        assert a.data is None or BlobStore(tmp_path / "attachments").get(a.sha256) == a.data


def test_worker_puts_a_large_mails_bytes_into_the_raw_store(pool: ParsePool, tmp_path: Path,
                                                             loop: asyncio.AbstractEventLoop) -> None:
    log = "\r\n".join(f"2026-11-20 10:{i // 60:02d}:{i % 60:02d} ERROR spooler: paper jam" for i in range(1800))
    raw = ("From: Jane <jane@acme.test>\r\nTo: support@example.com\r\nSubject: Spooler log\r\n"
           "Message-ID: <log@acme.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + log + "\r\n").encode()
    assert len(raw) > RAW_IN_DATABASE_MAX
    msg = on(loop, pool.parse(raw))
    assert msg.raw_mail.path == str(BlobStore(tmp_path / "raw").path(msg.sha256))
    assert Path(msg.raw_mail.path).read_bytes() == raw


def test_unreadable_mail_raises_parse_error_and_stores_nothing(pool: ParsePool, tmp_path: Path,
                                                               loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(ParseError, match="no header section"):
        on(loop, pool.parse(b"\r\n\r\njust a body, no headers\r\n"))
    assert not (tmp_path / "raw").exists()
    assert on(loop, pool.parse(crlf("apple-mail-new.eml"))).subject  # the worker goes on


def test_a_killed_worker_loses_no_mail(pool: ParsePool, loop: asyncio.AbstractEventLoop) -> None:
    raw = crlf("gmail-new-plain-and-html.eml")
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert on(loop, pool.parse(raw)) == parse_message(raw)  # parsed in a thread; a new worker started
    (new_pid,) = pool.pids()
    assert new_pid != pid
    assert on(loop, pool.parse(raw)) == parse_message(raw)  # and the new worker works
    assert pool.pids() == [new_pid]


def test_a_poller_batch_parses_ahead_and_survives_a_killed_worker(pool: ParsePool) -> None:
    raws = [crlf(name) for name in ("gmail-new-plain-and-html.eml", "apple-mail-new.eml",
                                    "russian-koi8r.eml")]
    batch = [pool.submit(raw) for raw in raws]
    assert [p.result() for p in batch] == [parse_message(raw) for raw in raws]
    os.kill(pool.pids()[0], signal.SIGKILL)
    time.sleep(0.2)
    assert [pool.submit(raw).result() for raw in raws] == [parse_message(raw) for raw in raws]


def test_workers_end_with_the_pool(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    p = ParsePool(2, tmp_path / "raw", tmp_path / "attachments")
    on(loop, p.start())
    pids = p.pids()
    assert len(pids) == 2
    on(loop, p.close())
    assert all(process_gone(pid) for pid in pids)


def test_mail_is_parsed_in_place_when_no_worker_can_be_started(pool: ParsePool, loop: asyncio.AbstractEventLoop,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def cannot_fork() -> None:
        raise OSError("Resource temporarily unavailable")  # fork failing under a process limit

    monkeypatch.setattr(pool, "_new_worker", cannot_fork)
    raw = crlf("apple-mail-new.eml")
    os.kill(pool.pids()[0], signal.SIGKILL)
    time.sleep(0.2)
    assert on(loop, pool.parse(raw)) == parse_message(raw)
    assert pool.pids() == []
    assert on(loop, pool.parse(raw)) == parse_message(raw)  # still taking mail, with no worker at all


def test_workers_yield_the_cpu_to_the_writer_also_when_replaced(pool: ParsePool,
                                                                 loop: asyncio.AbstractEventLoop) -> None:
    """The writer thread is the stage every mail waits for in turn: the workers run at a
    lower priority than the daemon, as batch work, and a worker started after one died does too."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    expected = min(19, ours + WORKER_NICENESS)
    (pid,) = pool.pids()
    assert os.getpriority(os.PRIO_PROCESS, pid) == expected
    assert WORKER_POLICY is None or os.sched_getscheduler(pid) == WORKER_POLICY
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    raw = crlf("apple-mail-new.eml")
    assert on(loop, pool.parse(raw)) == parse_message(raw)
    (new_pid,) = pool.pids()
    assert new_pid != pid
    assert os.getpriority(os.PRIO_PROCESS, new_pid) == expected
    assert WORKER_POLICY is None or os.sched_getscheduler(new_pid) == WORKER_POLICY


def test_when_no_worker_can_serve_smtp_the_daemon_is_handed_the_sockets(tmp_path: Path,
                                                                          loop: asyncio.AbstractEventLoop,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that serve SMTP and cannot be started again must not leave the port unserved."""
    listening = socket.create_server(("127.0.0.1", 0))
    smtp = SmtpInWorkers([listening], "support.example.com", 1_000_000, None, frozenset({"support@example.com"}))
    handed: list[list[socket.socket]] = []

    async def commit(parsed: ParsedMail, envelope: Envelope) -> str:
        return "250 2.0.0 OK"

    async def serve_here(socks: list[socket.socket]) -> None:
        handed.append(socks)

    pool = ParsePool(1, tmp_path / "raw", tmp_path / "attachments", smtp=smtp, commit=commit,
                     serve_here=serve_here)
    on(loop, pool.start())
    try:
        async def cannot_fork() -> None:
            raise OSError("Resource temporarily unavailable")

        monkeypatch.setattr(pool, "_new_worker", cannot_fork)
        os.kill(pool.pids()[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not handed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handed == [[listening]] and pool.pids() == []
    finally:
        on(loop, pool.close())
        listening.close()
