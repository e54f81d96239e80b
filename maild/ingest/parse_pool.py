"""Parsing in worker processes, so that it runs beside the writer instead of under its GIL.

A worker parses the raw bytes and writes the raw message and its attachments to the blob
stores (fsync included) before the mail reaches the writer thread; the pipeline's own
`put` then finds the files there. Only the parsed mail travels back, without the raw bytes,
which the caller still holds. A worker that dies takes no mail with it: the caller hears of
it and the mail is parsed in a thread instead, while a new worker starts.

Each worker talks to the event loop over its own socket pair: the loop writes a request
(a length-prefixed frame: the raw bytes, or a spool file's path) and a reader task of the
loop takes the pickled answer. ProcessPoolExecutor did the same through two threads of the
daemon (a feeder and a result manager), each a GIL hand-off per mail beside the writer, and
~8 % of the daemon's CPU under load. A worker ends when its socket does, so with the daemon,
kill -9 included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog

from maild.ingest.parse import InboundMessage, parse_stored
from maild.store.blobs import BlobStore

log = structlog.get_logger("maild.parse")

# How much lower than the daemon's the workers' CPU priority is. On a busy machine the cores
# are shared by the workers, the daemon and whatever sends mail; the writer thread is the one
# stage every mail passes through in turn, so when both want a core it should get it first:
# a worker's delay is spread over mails being parsed in parallel, the writer's is added to
# every mail behind it. Measured with `python -m bench smtp`, 14 interleaved pairs: 211
# against 197 msgs/s on average, the writer's queue shorter in 10 of the 11 pairs timed.
WORKER_NICENESS = 5


def default_processes() -> int:
    """One per core, at most four: beyond that the single writer is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


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


_REQUEST = struct.Struct("!QBQ")  # request id, kind, payload length
_ANSWER = struct.Struct("!QQ")  # request id, pickled answer's length
_PING, _RAW, _SPOOLED = 0, 1, 2


class WorkerDied(Exception):
    """The worker parsing a mail ended before it answered."""


def _serve(sock: socket.socket, raw_root: str, attachment_root: str) -> None:
    """A worker: answers requests one at a time until its socket closes (the daemon is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the daemon, which stops us
    os.nice(WORKER_NICENESS)
    stream = sock.makefile("rb")
    while True:
        head = stream.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            os._exit(0)
        request_id, kind, length = _REQUEST.unpack(head)
        payload = stream.read(length)
        if len(payload) < length:
            os._exit(0)
        answer: tuple[bool, object]
        try:
            if kind == _RAW:
                answer = (True, parse_and_store(payload, raw_root, attachment_root))
            elif kind == _SPOOLED:
                answer = (True, parse_spooled(Path(payload.decode()), raw_root, attachment_root))
            else:
                answer = (True, os.getpid())
            body = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # the caller's to handle (ParseError, OSError): sent as it is
            try:
                body = pickle.dumps((False, e), pickle.HIGHEST_PROTOCOL)
            except Exception:
                body = pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}")), pickle.HIGHEST_PROTOCOL)
        try:
            sock.sendall(_ANSWER.pack(request_id, len(body)) + body)
        except OSError:
            os._exit(0)


class _Worker:
    """One worker process and the loop's end of its socket."""

    def __init__(self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.process = process
        self.writer = writer
        self.pending: dict[int, asyncio.Future[object]] = {}
        self.reading = asyncio.create_task(self._read_answers(reader), name=f"parse-worker-{process.pid}")

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
                    fut.set_exception(WorkerDied(f"parse worker {self.process.pid} ended"))
            self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.reading.done()

    def ask(self, request_id: int, kind: int, payload: bytes) -> asyncio.Future[object]:
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if not self.alive:
            fut.set_exception(WorkerDied(f"parse worker {self.process.pid} ended"))
            return fut
        self.pending[request_id] = fut
        self.writer.write(_REQUEST.pack(request_id, kind, len(payload)))
        self.writer.write(payload)
        return fut


class Parsing:
    """A mail being parsed in the pool, for a caller that is a thread (the IMAP poller)."""

    def __init__(self, raw: bytes, future: Future[InboundMessage]):
        self._raw, self._future = raw, future

    def result(self) -> InboundMessage:
        """The parsed mail with its blobs stored; raises ParseError as parse_message does."""
        return dataclasses.replace(self._future.result(), raw=self._raw)


class ParsePool:
    """Worker processes serving the event loop it was started on (`start`)."""

    def __init__(self, processes: int, raw_root: Path, attachment_root: Path):
        self.processes = processes
        self.roots = (str(raw_root), str(attachment_root))
        self._workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])  # workers fork with mail-parser imported

    async def start(self) -> None:
        """Starts the workers and waits until each answers, so that the first mail need not."""
        self._loop = asyncio.get_running_loop()
        self._workers = [await self._new_worker() for _ in range(self.processes)]

    async def _new_worker(self) -> _Worker:
        ours, theirs = socket.socketpair()
        process = self._context.Process(target=_serve, args=(theirs, *self.roots), daemon=True,
                                        name="maild-parse")
        try:
            await asyncio.to_thread(process.start)  # the forkserver starts first: not on the loop
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = _Worker(process, reader, writer)
        await worker.ask(next(self._ids), _PING, b"")
        return worker

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
            return await asyncio.to_thread(job, first, *self.roots)
        worker = min(self._workers, key=lambda w: len(w.pending) if w.alive else 1 << 30)
        try:
            msg = await worker.ask(next(self._ids), kind, payload)
        except WorkerDied:  # killed: a new one takes its place, and this mail is done here
            await self._replace(worker)
            return await asyncio.to_thread(job, first, *self.roots)
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

    def submit(self, raw: bytes) -> Parsing:
        """parse_and_store in a worker, for a thread other than the loop's; waited for by
        Parsing.result()."""
        assert self._loop is not None, "ParsePool.start() first"

        async def parse() -> InboundMessage:
            return await self._run(_RAW, raw, parse_and_store, raw)
        return Parsing(raw, asyncio.run_coroutine_threadsafe(parse(), self._loop))

    async def close(self) -> None:
        """Closing a worker's socket ends it once its current mail is done."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.writer.close()
        for w in workers:
            await asyncio.to_thread(w.process.join, 10)
            if w.process.is_alive():
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
            await asyncio.gather(w.reading, return_exceptions=True)
