"""Parsing in worker processes, so that it runs beside the writer instead of under its GIL.

A worker parses the raw bytes and writes the raw message and its attachments to the blob
stores (fsync included) before the mail reaches the writer thread; the pipeline's own
`put` then finds the files there. Only the parsed mail travels back, without the raw bytes,
which the caller still holds. A worker that dies takes no mail with it: the caller hears of
it and the mail is parsed in the caller's thread instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import structlog

from maild.ingest.parse import InboundMessage, parse_stored
from maild.store.blobs import BlobStore

log = structlog.get_logger("maild.parse")

def default_processes() -> int:
    """One per core, at most four: beyond that the single writer is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


def _end_with(daemon_pid: int) -> None:
    """Worker start: exit as soon as the daemon is gone, even by kill -9. Workers are children
    of the forkserver, not of the daemon, and hold their own queue's pipe open, so neither a
    parent-death signal nor EOF would tell them; the forkserver ends when its workers have."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the daemon, which stops us

    def watch() -> None:
        try:
            fd = os.pidfd_open(daemon_pid)
        except ProcessLookupError:
            os._exit(0)
        except OSError:  # no pidfd (old kernel): look once a second
            while os.path.exists(f"/proc/{daemon_pid}"):
                time.sleep(1)
            os._exit(0)
        select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="watch-daemon", daemon=True).start()


def parse_and_store(raw: bytes, raw_root: str, attachment_root: str) -> InboundMessage:
    """In a worker: parse (ParseError propagates), keep the blobs, return the mail without raw."""
    msg = parse_stored(raw, BlobStore(Path(attachment_root)))
    BlobStore(Path(raw_root)).put(raw, msg.sha256)
    _store_attachments(msg, attachment_root)
    return msg


def parse_spooled(spool: Path, raw_root: str, attachment_root: str) -> InboundMessage:
    """A mail the receiver spooled to disk: large attachments decoded straight into the store,
    the file itself moved into the raw store. On ParseError the file stays where it is."""
    msg = parse_stored(spool, BlobStore(Path(attachment_root)))
    _store_attachments(msg, attachment_root)
    with open(spool, "rb+") as f:
        os.fsync(f.fileno())
    path = BlobStore(Path(raw_root)).adopt(spool, msg.sha256)
    return dataclasses.replace(msg, raw_path=str(path))


def _store_attachments(msg: InboundMessage, attachment_root: str) -> None:
    attachments = BlobStore(Path(attachment_root))
    for a in msg.attachments:
        if a.data is not None:
            attachments.put(a.data, a.sha256)


class Parsing:
    """A mail being parsed in the pool, for a caller that is a thread (the IMAP poller)."""

    def __init__(self, pool: ParsePool, executor: ProcessPoolExecutor, raw: bytes, future: Future[InboundMessage]):
        self._pool, self._executor, self._raw, self._future = pool, executor, raw, future

    def result(self) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        try:
            msg = self._future.result()
        except BrokenProcessPool:  # a worker was killed: do this one here
            self._pool.restart(self._executor)
            msg = parse_and_store(self._raw, *self._pool.roots)
        return dataclasses.replace(msg, raw=self._raw)


class ParsePool:
    def __init__(self, processes: int, raw_root: Path, attachment_root: Path):
        self.processes = processes
        self.roots = (str(raw_root), str(attachment_root))
        self._pool = self._new_pool()
        self._lock = threading.Lock()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # workers fork with mail-parser imported
        return ProcessPoolExecutor(self.processes, mp_context=context, initializer=_end_with,
                                   initargs=(os.getpid(),))

    async def parse(self, raw: bytes) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        msg = await self._run(parse_and_store, raw)
        return dataclasses.replace(msg, raw=raw)

    async def parse_spooled(self, spool: Path) -> InboundMessage:
        """parse_spooled in a worker."""
        return await self._run(parse_spooled, spool)

    async def _run(self, job: Callable[..., InboundMessage], first: bytes | Path) -> InboundMessage:
        loop = asyncio.get_running_loop()
        executor = self._pool
        try:
            return await loop.run_in_executor(executor, job, first, *self.roots)
        except BrokenProcessPool:  # a worker was killed: start afresh, and do this one here
            self.restart(executor)
            return await asyncio.to_thread(job, first, *self.roots)

    def submit(self, raw: bytes) -> Parsing:
        """parse_and_store in a worker, waited for by Parsing.result()."""
        with self._lock:
            executor = self._pool
        try:
            return Parsing(self, executor, raw, executor.submit(parse_and_store, raw, *self.roots))
        except BrokenProcessPool:
            self.restart(executor)
            return self.submit(raw)

    def restart(self, broken: ProcessPoolExecutor) -> None:
        """After a worker died, the executor takes no more work: a new one takes over (once,
        however many callers saw `broken` fail)."""
        with self._lock:
            if self._pool is not broken:
                return
            log.error("parse worker died; parse pool restarted")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def warm_up(self) -> None:
        """Starts the workers now rather than on the first mail, which should not wait for them."""
        for f in [self._pool.submit(os.getpid) for _ in range(self.processes)]:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
