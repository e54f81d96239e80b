"""Parsing in worker processes, so that it runs beside the writer instead of under its GIL.

A worker parses the raw bytes and writes the attachments (and a large mail's raw bytes) to
the blob stores, fsync included, before the mail reaches the writer thread, whose commit
keeps a small mail's raw bytes (store.raw_messages). Only the parsed mail travels back. A
worker that dies takes no mail with it: the caller hears of it and the mail is parsed in a
thread instead, while a new worker starts.

Each worker talks to the event loop over its own socket pair: the loop writes a request
(a length-prefixed frame: the raw bytes, or a spool file's path) and a reader task of the
loop takes the pickled answer. ProcessPoolExecutor did the same through two threads of the
daemon (a feeder and a result manager), each a GIL hand-off per mail beside the writer, and
~8 % of the daemon's CPU under load. A worker ends when its socket does, so with the daemon,
kill -9 included.

Started with `SmtpInWorkers`, the workers also serve the SMTP sessions, on sockets the daemon
bound (ingest.smtp_worker): each parses its own mails and hands them over a second socket
pair, and the daemon's process only commits them and answers with the reply to DATA.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from maild.ingest.parse import InboundMessage, ParseError, parse_stored
from maild.store.blobs import BlobStore, kept_in_database

if TYPE_CHECKING:  # imported by workers that serve SMTP only
    from maild.ingest.smtp import SessionGate

log = structlog.get_logger("maild.parse")

# How much lower than the daemon's the workers' CPU priority is. On a busy machine the cores
# are shared by the workers, the daemon and whatever sends mail; the writer thread is the one
# stage every mail passes through in turn, so when both want a core it should get it first:
# a worker's delay is spread over mails being parsed in parallel, the writer's is added to
# every mail behind it. Measured with `python -m bench smtp`, 14 interleaved pairs: 211
# against 197 msgs/s on average, the writer's queue shorter in 10 of the 11 pairs timed.
WORKER_NICENESS = 5
# And they run as SCHED_BATCH, which tells the scheduler they are throughput work: a worker
# woken by its socket does not preempt the writer on its core but waits for the writer's
# slice to end. 8 interleaved pairs of `bench smtp --rate 100000 --messages 3000`: 349
# against 340 msgs/s on average, 6 won (the writer spends ~22 % of its wall time runnable
# but waiting for a core, /proc/…/schedstat).
WORKER_POLICY = getattr(os, "SCHED_BATCH", None)


def default_processes() -> int:
    """One per core, at most four: beyond that the single writer is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


def parse_and_store(raw: bytes, raw_root: str, attachment_root: str, max_parts: int | None = None) -> InboundMessage:
    """In a worker: parse (ParseError propagates) and keep the attachments, at most `max_parts`
    of them ([protection] max_mime_parts). A small mail's raw
    bytes are the commit's to keep (store.raw_messages) and do not travel back: the caller
    holds them. A larger one's are put into the raw store here, and it comes back with their
    path."""
    msg = parse_stored(raw, BlobStore(Path(attachment_root)), max_parts)
    _store_attachments(msg, attachment_root)
    if kept_in_database(len(raw)):
        return msg
    raw_path = BlobStore(Path(raw_root)).put_file(raw, msg.sha256)
    return dataclasses.replace(msg, raw_path=str(raw_path))


def parse_spooled(spool: Path, raw_root: str, attachment_root: str, max_parts: int | None = None) -> InboundMessage:
    """A mail the receiver spooled to disk: large attachments decoded straight into the store,
    the file itself moved into the raw store. On ParseError the file stays where it is."""
    msg = parse_stored(spool, BlobStore(Path(attachment_root)), max_parts)
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


_REQUEST = struct.Struct("!QBQ")  # request id, kind, payload length
_ANSWER = struct.Struct("!QQ")  # request id, pickled answer's length
_PING, _RAW, _SPOOLED, _MAILBOXES, _SERVE, _STOP, _HANDOVER = 0, 1, 2, 3, 4, 5, 6


class WorkerDied(Exception):
    """The worker parsing a mail ended before it answered."""


@dataclasses.dataclass
class SmtpInWorkers:
    """What the workers need to serve SMTP sessions themselves, so that the daemon's process
    (whose GIL the writer thread needs) only commits: the sockets the daemon bound, and
    what the receiver's sessions are told. The mailboxes follow reloads (`set_mailboxes`)."""

    listen: list[socket.socket]
    hostname: str
    max_bytes: int
    spool_dir: str | None
    mailboxes: frozenset[str]
    serving: bool = False  # False until the daemon is ready (`ParsePool.serve_smtp`)
    gate: SessionGate | None = None  # the session limits, its table shared by the workers (one row each)


@dataclasses.dataclass(frozen=True)
class HandedOver:
    """A mail whose SMTP session a worker serves, parsed there, for the daemon to commit:
    `parsed` is the mail (its raw bytes in the store, at raw_path) or why it could not be
    (ParseError, OSError); `raw` is what a quarantine keeps then: the bytes, or the path of
    the spool file (a str)."""

    mail_from: str
    recipients: list[str]
    parsed: InboundMessage | Exception
    raw: bytes | str = b""


def parse_for_handover(raw: bytes | Path | OSError, mail_from: str, recipients: list[str], raw_root: str,
                       attachment_root: str, max_parts: int | None = None) -> HandedOver:
    """In a worker serving SMTP: parse and store as the daemon would ask it to. `raw` is an
    OSError when the DATA could not be spooled: the daemon answers for it (a full disk: 452)."""
    if isinstance(raw, OSError):
        return HandedOver(mail_from, recipients, raw)
    try:
        if isinstance(raw, Path):
            msg = parse_spooled(raw, raw_root, attachment_root, max_parts)
        else:
            msg = parse_and_store(raw, raw_root, attachment_root, max_parts)
            if msg.raw_path is None:  # the daemon has not got the bytes: they go with the mail
                msg = dataclasses.replace(msg, raw=raw)
    except ParseError as e:
        return HandedOver(mail_from, recipients, e, raw if isinstance(raw, bytes) else str(raw))
    except OSError as e:
        return HandedOver(mail_from, recipients, e, b"" if isinstance(raw, bytes) else str(raw))
    return HandedOver(mail_from, recipients, msg)


def _pickled(ok: bool, value: object) -> bytes:
    try:
        return pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value}")), pickle.HIGHEST_PROTOCOL)


def answer_request(kind: int, payload: bytes, raw_root: str, attachment_root: str,
                   max_parts: int | None = None) -> bytes:
    """A parse request's answer, pickled: (True, the mail) or (False, the exception)."""
    try:
        if kind == _RAW:
            return _pickled(True, parse_and_store(payload, raw_root, attachment_root, max_parts))
        if kind == _SPOOLED:
            return _pickled(True, parse_spooled(Path(payload.decode()), raw_root, attachment_root, max_parts))
        return _pickled(True, os.getpid())
    except Exception as e:  # the caller's to handle (ParseError, OSError): sent as it is
        return _pickled(False, e)


def _serve(sock: socket.socket, raw_root: str, attachment_root: str, smtp: SmtpInWorkers | None = None,
           handover: socket.socket | None = None, *, max_parts: int | None = None, slot: int = 0) -> None:
    """A worker: answers requests one at a time until its socket closes (the daemon is gone);
    with `smtp`, serves SMTP sessions as well (ingest.smtp_worker), counting them in row
    `slot` of the shared session table."""
    # Ctrl-C and SIGTERM to the process group (systemd's stop) stop the daemon, which stops us
    # once our sessions' mail is committed; a worker that will not stop is killed by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)
    if WORKER_POLICY is not None:
        with contextlib.suppress(OSError):  # a sandbox that forbids it: the niceness still applies
            os.sched_setscheduler(0, WORKER_POLICY, os.sched_param(0))
    if smtp is not None and handover is not None:
        from maild.ingest.smtp_worker import serve_in_worker

        serve_in_worker(sock, handover, raw_root, attachment_root, smtp, max_parts, slot)
        os._exit(0)
    stream = sock.makefile("rb")
    while True:
        head = stream.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            os._exit(0)
        request_id, kind, length = _REQUEST.unpack(head)
        payload = stream.read(length)
        if len(payload) < length:
            os._exit(0)
        body = answer_request(kind, payload, raw_root, attachment_root, max_parts)
        try:
            sock.sendall(_ANSWER.pack(request_id, len(body)) + body)
        except OSError:
            os._exit(0)


async def read_request(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next request frame: id, kind, payload (IncompleteReadError when the socket ends)."""
    request_id, kind, length = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
    return request_id, kind, await reader.readexactly(length)


def answer_frame(request_id: int, body: bytes) -> bytes:
    return _ANSWER.pack(request_id, len(body)) + body


class Channel:
    """One end of a socket pair that sends requests and matches the answers to them by id;
    `name` says whose end, for WorkerDied."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str):
        self.name = name
        self.writer = writer
        self.pending: dict[int, asyncio.Future[object]] = {}
        self.reading = asyncio.create_task(self._read_answers(reader), name=name)

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, length = _ANSWER.unpack(await reader.readexactly(_ANSWER.size))
                ok, value = pickle.loads(await reader.readexactly(length))
                fut = self.pending.pop(request_id, None)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writer.close()
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(WorkerDied(f"{self.name} ended"))
            self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.reading.done()

    def ask(self, request_id: int, kind: int, payload: bytes) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(WorkerDied(f"{self.name} ended"))
            return fut
        self.pending[request_id] = fut
        # one write, one send(): two cost a system call more a mail, ~2 % of a worker's time
        self.writer.write(_REQUEST.pack(request_id, kind, len(payload)) + payload)
        return fut


# What the daemon does with a mail a worker handed over: the reply to its DATA.
HandOver = Callable[[HandedOver], Awaitable[str]]


class _Worker(Channel):
    """One worker process and the loop's end of its socket (and of its hand-over socket, when
    it serves SMTP: `serving`, the task answering what it hands over)."""

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 slot: int = 0):
        super().__init__(reader, writer, f"parse worker {process.pid}")
        self.process = process
        self.slot = slot  # its row in the shared SMTP session table, taken over by its successor
        self.serving: asyncio.Task[None] | None = None


async def _serve_handovers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           handover: HandOver) -> None:
    """The daemon's end of a worker's hand-over socket: each mail committed as it comes, the
    reply to its DATA sent back."""
    answering: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, handed: HandedOver) -> None:
        try:
            body = _pickled(True, await handover(handed))
        except Exception as e:  # the worker answers 451: the sender retries, nothing is lost
            log.error("handed-over mail failed", error=f"{type(e).__name__}: {e}")
            body = _pickled(False, e)
        if not writer.is_closing():
            writer.write(answer_frame(request_id, body))

    try:
        while True:
            request_id, _, payload = await read_request(reader)
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
        return dataclasses.replace(self._future.result(), raw=self._raw)


class ParsePool:
    """Worker processes serving the event loop it was started on (`start`). With `smtp` they
    serve the SMTP sessions too, and hand each parsed mail to `handover`; if none can be
    started, `serve_here` is called once with the sockets, for the daemon to serve them.
    `max_parts`: attachments kept per mail ([protection] max_mime_parts), fixed at start."""

    def __init__(self, processes: int, raw_root: Path, attachment_root: Path, *,
                 smtp: SmtpInWorkers | None = None, handover: HandOver | None = None,
                 serve_here: Callable[[list[socket.socket]], Awaitable[None]] | None = None,
                 max_parts: int | None = None):
        self.processes = processes
        self.roots = (str(raw_root), str(attachment_root))
        self.max_parts = max_parts
        self.smtp = smtp
        self.handover = handover
        self.serve_here = serve_here
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._replacing: set[asyncio.Task[None]] = set()
        self._context = multiprocessing.get_context("forkserver")
        # workers fork with mail-parser (and, serving SMTP, aiosmtpd) imported
        self._context.set_forkserver_preload([__name__] + (["maild.ingest.smtp_worker"] if smtp else []))

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
        process = self._context.Process(target=_serve, args=args, kwargs={"max_parts": self.max_parts, "slot": slot},
                                        daemon=True, name="maild-parse")
        try:
            await asyncio.to_thread(process.start)  # the forkserver starts first: not on the loop
        finally:
            theirs.close()
            if handover:
                handover[1].close()
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = _Worker(process, reader, writer, slot)
        if handover:
            assert self.handover is not None
            reader, writer = await asyncio.open_connection(sock=handover[0])
            worker.serving = asyncio.create_task(_serve_handovers(reader, writer, self.handover),
                                                 name=f"handovers-{process.pid}")
        await worker.ask(next(self._ids), _PING, b"")
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
        await asyncio.gather(*(w.ask(next(self._ids), _SERVE, b"") for w in self._workers), return_exceptions=True)

    def set_mailboxes(self, addresses: frozenset[str]) -> None:
        """A reload's mailboxes, for the RCPT checks of workers serving SMTP (and later ones)."""
        if self.smtp is None:
            return
        self.smtp = dataclasses.replace(self.smtp, mailboxes=addresses)
        payload = "\n".join(sorted(addresses)).encode()
        for w in self._workers:
            w.ask(next(self._ids), _MAILBOXES, payload).add_done_callback(lambda f: f.exception())

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def parse(self, raw: bytes) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        msg = await self._run(_RAW, raw, parse_and_store, raw)
        return dataclasses.replace(msg, raw=raw)

    async def parse_spooled(self, spool: Path) -> InboundMessage:
        """parse_spooled in a worker."""
        return await self._run(_SPOOLED, str(spool).encode(), parse_spooled, spool)

    async def _run(self, kind: int, payload: bytes, job: Callable[..., InboundMessage],
                   first: bytes | Path) -> InboundMessage:
        if not self._workers:  # none could be started again: parse here rather than refuse mail
            return await asyncio.to_thread(job, first, *self.roots, self.max_parts)
        worker = min(self._workers, key=lambda w: len(w.pending) if w.alive else 1 << 30)
        try:
            msg = await worker.ask(next(self._ids), kind, payload)
        except WorkerDied:  # killed: a new one takes its place, and this mail is done here
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
        except (OSError, WorkerDied) as e:
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
            return await self._run(_RAW, raw, parse_and_store, raw)
        return Parsing(raw, asyncio.run_coroutine_threadsafe(parse(), self._loop))

    async def close(self, timeout: float = 30) -> None:
        """Workers serving SMTP stop accepting and finish their sessions (up to `timeout`),
        their mail committed meanwhile; then closing a worker's socket ends it once its
        current mail is done."""
        self._closing = True
        workers, self._workers = self._workers, []
        if self.smtp is not None:
            stops = [w.ask(next(self._ids), _STOP, str(timeout).encode()) for w in workers]
            await asyncio.gather(*stops, return_exceptions=True)
        for w in workers:
            w.writer.close()
        for w in workers:
            await asyncio.to_thread(w.process.join, 10)
            if w.process.is_alive():
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
            await asyncio.gather(w.reading, *([w.serving] if w.serving else []), return_exceptions=True)
