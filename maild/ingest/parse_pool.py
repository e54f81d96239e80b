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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import structlog

from maild.ingest.parse import InboundMessage, parse_message
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
    msg = parse_message(raw)
    BlobStore(Path(raw_root)).put(raw, msg.sha256)
    attachments = BlobStore(Path(attachment_root))
    for a in msg.attachments:
        attachments.put(a.data, a.sha256)
    return dataclasses.replace(msg, raw=b"")


class ParsePool:
    def __init__(self, processes: int, raw_root: Path, attachment_root: Path):
        self.processes = processes
        self._roots = (str(raw_root), str(attachment_root))
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # workers fork with mail-parser imported
        return ProcessPoolExecutor(self.processes, mp_context=context, initializer=_end_with,
                                   initargs=(os.getpid(),))

    async def parse(self, raw: bytes) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        loop = asyncio.get_running_loop()
        try:
            msg = await loop.run_in_executor(self._pool, parse_and_store, raw, *self._roots)
        except BrokenProcessPool:  # a worker was killed: start afresh, and parse this one here
            log.error("parse worker died; parse pool restarted")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return await asyncio.to_thread(parse_message, raw)
        return dataclasses.replace(msg, raw=raw)

    def warm_up(self) -> None:
        """Starts the workers now rather than on the first mail, which should not wait for them."""
        for f in [self._pool.submit(os.getpid) for _ in range(self.processes)]:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
