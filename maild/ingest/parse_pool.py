"""The daemon's side of its parse workers: it starts them, asks them to parse, and commits
what they hand over.

Parsing runs in worker processes (ingest.smtp_worker) so that it runs beside the committer's
writer thread instead of under its GIL. A worker that dies takes no mail with it: the caller
hears of it and the mail is parsed in a thread instead, while a new worker starts.

Each worker talks to the event loop over its own socket pair (wire.Channel): the loop writes
a request (the raw bytes, or a spool file's path) and a reader task of the loop takes the
pickled answer. ProcessPoolExecutor did the same through two threads of the daemon (a feeder
and a result manager), each a GIL hand-off per mail beside the writer, and ~8 % of the
daemon's CPU under load. A worker ends when its socket does, so with the daemon, kill -9
included.

Started with `SmtpInWorkers`, the workers also serve the SMTP sessions, on sockets the daemon
bound: each parses its own mails and sends them (wire.MailIn) over a second socket pair,
where `_serve_mail` hands each to the daemon's `commit` (the same one its own SMTP handler
calls) and sends the reply back (wire.MailAnswer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog

from maild.domain.message import InboundMessage
from maild.ingest import wire
from maild.ingest.smtp_worker import (
    WORKER_NICENESS,
    WORKER_POLICY,
    SmtpInWorkers,
    parse_and_store,
    parse_spooled,
    worker_main,
)

__all__ = ["WORKER_NICENESS", "WORKER_POLICY", "ParsePool", "Parsing", "SmtpInWorkers",
           "default_processes"]

log = structlog.get_logger("maild.parse")


def default_processes() -> int:
    """One per core, at most four: beyond that the single writer is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


# What the daemon does with a mail a worker parsed: commit it and say the reply to its DATA.
CommitMail = Callable[[wire.ParsedMail, wire.Envelope], Awaitable[str]]


class _Worker(wire.Channel):
    """One worker process and the loop's end of its socket (and of its hand-over socket, when
    it serves SMTP: `serving`, the task answering what it hands over)."""

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 slot: int = 0):
        super().__init__(reader, writer, f"parse worker {process.pid}")
        self.process = process
        self.slot = slot  # its row in the shared SMTP session table, taken over by its successor
        self.serving: asyncio.Task[None] | None = None


async def _serve_mail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, commit: CommitMail) -> None:
    """The daemon's end of a worker's hand-over socket: each mail (MailIn) committed as it
    comes, the reply to its DATA sent back (MailAnswer)."""
    answering: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, mail: wire.MailIn) -> None:
        try:
            body = wire.pickled(True, wire.MailAnswer(await commit(mail.parsed, mail.envelope)))
        except Exception as e:  # the worker answers 451: the sender retries, nothing is lost
            log.error("handed-over mail failed", error=f"{type(e).__name__}: {e}")
            body = wire.pickled(False, e)
        if not writer.is_closing():
            writer.write(wire.answer_frame(request_id, body))

    try:
        while True:
            request_id, _, payload = await wire.read_request(reader)
            task = asyncio.create_task(answer(request_id, pickle.loads(payload)))
            answering.add(task)
            task.add_done_callback(answering.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        if answering:
            await asyncio.gather(*answering, return_exceptions=True)
        writer.close()


class Parsing:
    """A mail being parsed in the pool, for a caller that is a thread (the IMAP poller)."""

    def __init__(self, raw: bytes, future: Future[InboundMessage]):
        self._raw, self._future = raw, future

    def result(self) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        msg = self._future.result()
        return dataclasses.replace(msg, raw_mail=dataclasses.replace(msg.raw_mail, data=self._raw))


class ParsePool:
    """Worker processes serving the event loop it was started on (`start`). With `smtp` they
    serve the SMTP sessions too, and hand each parsed mail to `commit`; if none can be
    started, `serve_here` is called once with the sockets, for the daemon to serve them.
    `max_parts`: attachments kept per mail ([protection] max_mime_parts), fixed at start."""

    def __init__(self, processes: int, raw_root: Path, attachment_root: Path, *,
                 smtp: SmtpInWorkers | None = None, commit: CommitMail | None = None,
                 serve_here: Callable[[list[socket.socket]], Awaitable[None]] | None = None,
                 max_parts: int | None = None):
        self.processes = processes
        self.roots = (str(raw_root), str(attachment_root))
        self.max_parts = max_parts
        self.smtp = smtp
        self.commit = commit
        self.serve_here = serve_here
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._replacing: set[asyncio.Task[None]] = set()
        self._context = multiprocessing.get_context("forkserver")
        # workers fork with mail-parser and aiosmtpd imported (the worker's entry module)
        self._context.set_forkserver_preload([worker_main.__module__])

    async def start(self) -> None:
        """Starts the workers and waits until each answers, so that the first mail need not."""
        self._loop = asyncio.get_running_loop()
        for _ in range(self.processes):
            self._workers.append(await self._new_worker())

    async def _new_worker(self) -> _Worker:
        # the first row of the session table no live worker counts in: a dead one's, if any
        slot = min(set(range(self.processes)) - {w.slot for w in self._workers}, default=0)
        ours, theirs = socket.socketpair()
        handover = socket.socketpair() if self.smtp is not None else None
        args = (theirs, *self.roots) + ((self.smtp, handover[1]) if handover else ())
        process = self._context.Process(target=worker_main, args=args,
                                        kwargs={"max_parts": self.max_parts, "slot": slot}, daemon=True,
                                        name="maild-parse")
        try:
            await asyncio.to_thread(process.start)  # the forkserver starts first: not on the loop
        finally:
            theirs.close()
            if handover:
                handover[1].close()
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = _Worker(process, reader, writer, slot)
        if handover:
            assert self.commit is not None
            reader, writer = await asyncio.open_connection(sock=handover[0])
            worker.serving = asyncio.create_task(_serve_mail(reader, writer, self.commit),
                                                 name=f"handovers-{process.pid}")
        await worker.ask(next(self._ids), wire.PING, b"")
        worker.reading.add_done_callback(lambda _: self._ended(worker))
        return worker

    def _ended(self, worker: _Worker) -> None:
        """A worker's socket ended: unless the pool is closing, a new worker takes its place
        now rather than at the next parse, since one that served SMTP may get none."""
        if not self._closing and worker in self._workers:
            task = asyncio.get_running_loop().create_task(self._replace(worker))
            self._replacing.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._replacing.discard)

    async def serve_smtp(self) -> None:
        """The daemon is ready: the workers start accepting (and any started later, at once)."""
        assert self.smtp is not None
        self.smtp = dataclasses.replace(self.smtp, serving=True)
        await asyncio.gather(*(w.ask(next(self._ids), wire.SERVE, b"") for w in self._workers), return_exceptions=True)

    def set_mailboxes(self, addresses: frozenset[str]) -> None:
        """A reload's mailboxes, for the RCPT checks of workers serving SMTP (and later ones)."""
        if self.smtp is None:
            return
        self.smtp = dataclasses.replace(self.smtp, mailboxes=addresses)
        payload = "\n".join(sorted(addresses)).encode()
        for w in self._workers:
            w.ask(next(self._ids), wire.MAILBOXES, payload).add_done_callback(lambda f: f.exception())

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def parse(self, raw: bytes) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        msg = await self._run(wire.RAW, raw, parse_and_store, raw)
        return dataclasses.replace(msg, raw_mail=dataclasses.replace(msg.raw_mail, data=raw))

    async def parse_spooled(self, spool: Path) -> InboundMessage:
        """parse_spooled in a worker."""
        return await self._run(wire.SPOOLED, str(spool).encode(), parse_spooled, spool)

    async def _run(self, kind: int, payload: bytes, job: Callable[..., InboundMessage],
                   first: bytes | Path) -> InboundMessage:
        if not self._workers:  # none could be started again: parse here rather than refuse mail
            return await asyncio.to_thread(job, first, *self.roots, self.max_parts)
        worker = min(self._workers, key=lambda w: len(w.pending) if w.alive else 1 << 30)
        try:
            msg = await worker.ask(next(self._ids), kind, payload)
        except wire.WorkerDied:  # killed: a new one takes its place, and this mail is done here
            await self._replace(worker)
            return await asyncio.to_thread(job, first, *self.roots, self.max_parts)
        assert isinstance(msg, InboundMessage)
        return msg

    async def _replace(self, dead: _Worker) -> None:
        if dead not in self._workers:
            return  # another caller of the same worker replaces it
        self._workers.remove(dead)
        log.error("parse worker died; a new one started", pid=dead.process.pid)
        await asyncio.to_thread(dead.process.join, 5)
        try:
            self._workers.append(await self._new_worker())
        except (OSError, wire.WorkerDied) as e:
            log.error("parse worker could not be started", error=str(e))
            if not self._workers and self.smtp is not None and self.serve_here is not None:
                serve_here, self.serve_here = self.serve_here, None
                log.error("no parse worker left: the daemon serves SMTP itself")
                await serve_here(self.smtp.listen)

    def submit(self, raw: bytes) -> Parsing:
        """parse_and_store in a worker, for a thread other than the loop's; waited for by
        Parsing.result()."""
        assert self._loop is not None, "ParsePool.start() first"

        async def parse() -> InboundMessage:
            return await self._run(wire.RAW, raw, parse_and_store, raw)
        return Parsing(raw, asyncio.run_coroutine_threadsafe(parse(), self._loop))

    async def close(self, timeout: float = 30) -> None:
        """Workers serving SMTP stop accepting and finish their sessions (up to `timeout`),
        their mail committed meanwhile; then closing a worker's socket ends it once its
        current mail is done."""
        self._closing = True
        workers, self._workers = self._workers, []
        if self.smtp is not None:
            stops = [w.ask(next(self._ids), wire.STOP, str(timeout).encode()) for w in workers]
            await asyncio.gather(*stops, return_exceptions=True)
        for w in workers:
            w.writer.close()
        for w in workers:
            await asyncio.to_thread(w.process.join, 10)
            if w.process.is_alive():
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
            await asyncio.gather(w.reading, *([w.serving] if w.serving else []), return_exceptions=True)
