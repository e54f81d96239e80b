"""The parse worker's entry: it parses mail, and serves SMTP sessions when asked to.

A worker is a process the daemon's ParsePool starts (`worker_main`). It parses raw bytes and
writes the attachments (and a large mail's raw bytes) to the blob stores, fsync included,
before the mail reaches the daemon's committer, whose commit keeps a small mail's raw bytes
(store.raw_messages): `parse_received` is that parse, the same one the daemon runs in a
thread when it serves SMTP itself.

Started with `SmtpInWorkers`, the worker also serves the SMTP sessions on the sockets the
daemon bound, with the daemon's own adapter (ingest.smtp): the handler parses a complete
mail here and sends it as `wire.MailIn` over the hand-over socket, then waits for the
`wire.MailAnswer` (the reply to DATA, sent after the commit). On the daemon's process that
leaves a frame in and a line out per mail, instead of the protocol, the DATA and the raw
bytes' trip to a worker, all of which held the GIL the committer's thread needs.

On its request socket the worker answers the daemon's requests (wire's kinds): a parse (for
the IMAP poller), start accepting (the daemon is ready), the mailboxes after a reload, and a
stop (a new session hears 421; a DATA arriving may end and is answered, smtp.Drain; the mail
in flight finished; then the connections not yet accepted hear 421 and it stops accepting).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import pickle
import signal
import socket
from pathlib import Path

import structlog

from maild.domain.errors import ParseError
from maild.domain.message import InboundMessage
from maild.ingest import wire
from maild.ingest.parse import parse_stored
from maild.ingest.smtp import TRY_LATER, MaildHandler, SessionGate, start_smtp_servers
from maild.logs import configure_logging
from maild.store.blobs import BlobStore, kept_in_database
from maild.threading.tokens import split_plus_address

log = structlog.get_logger("maild.smtp")

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


# --- the parse ----------------------------------------------------------------------------
def parse_and_store(raw: bytes, raw_root: str, attachment_root: str, max_parts: int | None = None) -> InboundMessage:
    """Parse (ParseError propagates) and keep the attachments, at most `max_parts` of them
    ([protection] max_mime_parts). A small mail's raw bytes are the commit's to keep
    (store.raw_messages) and do not travel back: the caller holds them. A larger one's are
    put into the raw store here, and it comes back with their path."""
    msg = parse_stored(raw, BlobStore(Path(attachment_root)), max_parts)
    _store_attachments(msg, attachment_root)
    if kept_in_database(len(raw)):
        return msg
    raw_path = BlobStore(Path(raw_root)).put_file(raw, msg.sha256)
    return dataclasses.replace(msg, raw_mail=dataclasses.replace(msg.raw_mail, path=str(raw_path)))


def parse_spooled(spool: Path, raw_root: str, attachment_root: str, max_parts: int | None = None) -> InboundMessage:
    """A mail the receiver spooled to disk: large attachments decoded straight into the store,
    the file itself moved into the raw store. On ParseError the file stays where it is."""
    msg = parse_stored(spool, BlobStore(Path(attachment_root)), max_parts)
    _store_attachments(msg, attachment_root)
    with open(spool, "rb+") as f:
        os.fsync(f.fileno())
    path = BlobStore(Path(raw_root)).adopt(spool, msg.sha256)
    return dataclasses.replace(msg, raw_mail=dataclasses.replace(msg.raw_mail, path=str(path)))


def _store_attachments(msg: InboundMessage, attachment_root: str) -> None:
    attachments = BlobStore(Path(attachment_root))
    for a in msg.attachments:
        if a.data is not None:
            attachments.put(a.data, a.sha256)


def parse_received(raw: bytes | Path | OSError, raw_root: str, attachment_root: str,
                   max_parts: int | None = None) -> wire.ParsedMail:
    """A mail whose DATA is complete, parsed and its blobs stored, for the committer: never
    raises for the mail's sake. `raw` is the bytes, the spool file, or the OSError that kept
    the DATA from being spooled (the committer answers for it: a full disk is 452)."""
    if isinstance(raw, OSError):
        return wire.ParsedMail(raw)
    try:
        if isinstance(raw, Path):
            msg = parse_spooled(raw, raw_root, attachment_root, max_parts)
        else:
            msg = parse_and_store(raw, raw_root, attachment_root, max_parts)
            if not msg.raw_mail.stored:  # the committer has not got the bytes: they go with the mail
                msg = dataclasses.replace(msg, raw_mail=dataclasses.replace(msg.raw_mail, data=raw))
    except ParseError as e:
        return wire.ParsedMail(e, raw)
    except OSError as e:
        return wire.ParsedMail(e, b"" if isinstance(raw, bytes) else raw)
    return wire.ParsedMail(msg)


def answer_request(kind: int, payload: bytes, raw_root: str, attachment_root: str,
                   max_parts: int | None = None) -> bytes:
    """A parse request's answer, pickled: (True, the mail) or (False, the exception)."""
    try:
        if kind == wire.RAW:
            return wire.pickled(True, parse_and_store(payload, raw_root, attachment_root, max_parts))
        if kind == wire.SPOOLED:
            return wire.pickled(True, parse_spooled(Path(payload.decode()), raw_root, attachment_root, max_parts))
        return wire.pickled(True, os.getpid())
    except Exception as e:  # the caller's to handle (ParseError, OSError): sent as it is
        return wire.pickled(False, e)


# --- the process ----------------------------------------------------------------------------
def worker_main(sock: socket.socket, raw_root: str, attachment_root: str, smtp: SmtpInWorkers | None = None,
                handover: socket.socket | None = None, *, max_parts: int | None = None, slot: int = 0) -> None:
    """A worker: answers requests one at a time until its socket closes (the daemon is gone);
    with `smtp`, serves SMTP sessions as well, counting them in row `slot` of the shared
    session table (smtp.SessionGate), so that the caps hold over all workers together."""
    # Ctrl-C and SIGTERM to the process group (systemd's stop) stop the daemon, which stops us
    # once our sessions' mail is committed; a worker that will not stop is killed by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(WORKER_NICENESS)
    if WORKER_POLICY is not None:
        with contextlib.suppress(OSError):  # a sandbox that forbids it: the niceness still applies
            os.sched_setscheduler(0, WORKER_POLICY, os.sched_param(0))
    if smtp is not None and handover is not None:
        configure_logging()
        asyncio.run(_serve_smtp(sock, handover, raw_root, attachment_root, smtp, max_parts, slot))
        os._exit(0)
    stream = sock.makefile("rb")
    while True:
        head = stream.read(wire.REQUEST.size)
        if len(head) < wire.REQUEST.size:
            os._exit(0)
        request_id, kind, length = wire.REQUEST.unpack(head)
        payload = stream.read(length)
        if len(payload) < length:
            os._exit(0)
        body = answer_request(kind, payload, raw_root, attachment_root, max_parts)
        try:
            sock.sendall(wire.answer_frame(request_id, body))
        except OSError:
            os._exit(0)


class _HandOver:
    """The worker's commit step for its SMTP handler: the parsed mail to the daemon (MailIn),
    its reply back (MailAnswer); and the count of mails waiting for one, for a stop."""

    def __init__(self, daemon: wire.Channel):
        self.daemon = daemon
        self.in_flight = 0
        self._idle = asyncio.Event()  # no mail waiting for its reply
        self._idle.set()
        self._ids = itertools.count(1)

    async def commit(self, parsed: wire.ParsedMail, envelope: wire.Envelope) -> str:
        self.in_flight += 1
        self._idle.clear()
        try:
            request = pickle.dumps(wire.MailIn(parsed, envelope), pickle.HIGHEST_PROTOCOL)
            try:
                answer = await self.daemon.ask(next(self._ids), wire.MAIL, request)
            except Exception as e:  # the daemon is gone or failed on it: nothing was promised
                mail = parsed.mail
                bases = sorted({split_plus_address(r)[0].lower() for r in envelope.recipients})
                with structlog.contextvars.bound_contextvars(
                        message_id=mail.message_id if isinstance(mail, InboundMessage) else None,
                        mailbox=bases[0] if len(bases) == 1 else bases):
                    log.error("message not stored, sender must retry", error=f"{type(e).__name__}: {e}",
                              via=envelope.via)
                return TRY_LATER
            assert isinstance(answer, wire.MailAnswer)
            return answer.reply
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def finish(self, timeout: float) -> None:
        """Waits (up to `timeout`) for the mail being handed over to get its reply."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


async def _serve_smtp(requests: socket.socket, handover: socket.socket, raw_root: str, attachment_root: str,
                      smtp: SmtpInWorkers, max_parts: int | None, slot: int) -> None:
    reader, writer = await asyncio.open_connection(sock=requests)
    handing = _HandOver(wire.Channel(*await asyncio.open_connection(sock=handover), name="the daemon"))
    mailboxes = smtp.mailboxes

    def is_ours(base: str) -> bool:
        return base.lower() in mailboxes

    async def parse_here(raw: bytes | Path | OSError) -> wire.ParsedMail:
        # on this worker's loop: its sessions wait while it parses, as the daemon's would for a thread
        return parse_received(raw, raw_root, attachment_root, max_parts)

    servers = await start_smtp_servers(MaildHandler(is_ours, parse_here, handing.commit), smtp.listen,
                                       smtp.hostname, smtp.max_bytes,
                                       Path(smtp.spool_dir) if smtp.spool_dir else None, smtp.serving,
                                       smtp.gate.for_slot(slot) if smtp.gate is not None else None)
    try:
        while True:
            request_id, kind, payload = await wire.read_request(reader)
            if kind == wire.MAILBOXES:
                mailboxes = frozenset(payload.decode().split("\n")) - {""}
                body = wire.pickled(True, None)
            elif kind == wire.SERVE:
                for s in servers:
                    await s.start_serving()
                body = wire.pickled(True, None)
            elif kind == wire.STOP:  # no new session or mail; what arrives in time is answered (smtp.Drain)
                timeout = float(payload.decode())
                for s in servers:
                    s.close()  # a connection made from now on hears 421 4.3.2
                if servers:
                    await servers[0].drain.finish(timeout)
                await handing.finish(timeout)
                for s in servers:  # those still waiting to be accepted hear 421 too; then no more
                    await s.wait_closed()
                body = wire.pickled(True, None)
            else:
                body = answer_request(kind, payload, raw_root, attachment_root, max_parts)
            writer.write(wire.answer_frame(request_id, body))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the daemon closed our socket: it is stopping, or gone
