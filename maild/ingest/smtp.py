"""The SMTP adapter: aiosmtpd's protocol, maild's handler hooks and its named replies; 250
only after the commit (SPEC §11).

The path of one mail, from the connection to the 250:

1. The daemon binds the listening sockets (`bind_smtp_sockets`) and starts its parse workers
   (ingest.parse_pool.ParsePool); each worker (ingest.smtp_worker.worker_main) accepts on
   those sockets and serves every session with this module's `MaildSMTP` protocol and
   `MaildHandler`. `SessionGate` counts the sessions of all workers against the limits.
2. EHLO, MAIL, RCPT: the handler's hooks answer; RCPT takes only the daemon's mailboxes
   (`is_ours`), and the reply is one of the named constants below (NOT_OURS, RECIPIENT_OK …).
3. DATA: `MaildSMTP.smtp_DATA` reads it in blocks up to the end marker (ingest.smtp_data),
   to memory or, past 4 MB, to a spool file; a mail over the size limit is read to its end,
   kept nowhere, and answered TOO_BIG.
4. `MaildHandler.handle_DATA` makes two calls: `parse` (the worker's own process:
   smtp_worker.parse_received parses and writes the attachments and a large mail's bytes to
   the blob stores), then `commit`. In a worker, `commit` sends the parsed mail and its
   envelope as the one request of ingest.wire (`MailIn`) over the worker's hand-over socket.
5. In the daemon, parse_pool's `_serve_mail` reads that request and calls the daemon's
   `commit`: `replying(committer.commit)`. ingest.committer.Committer.commit decides the
   deliveries from the envelope and queues the pipeline (ingest.pipeline.ingest_message, the
   domain half) for the writer thread (ingest.writer), which commits it with the mails queued
   beside it; a mail that cannot be parsed or processed is quarantined instead.
6. The Receipt becomes the reply (`smtp_reply`: 250, or 451/452 when nothing was kept), sent
   back as the one answer of ingest.wire (`MailAnswer`); the worker's handler returns it and
   the protocol writes it to the client.

Without worker processes (smtp.parse_processes = 0, or none could be started) the daemon
serves the sockets itself with the same protocol and handler: `parse` runs parse_received in
a thread, and `commit` is the same `replying(committer.commit)`, called directly. The IMAP
poller ends in the same Committer. At a stop (SIGTERM), `Drain` lets the DATA arriving end,
commits and answers it, and answers 421 to everything else (SmtpServer, refuse_waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import socket
import zlib
from collections.abc import Awaitable, Callable, MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from maild.ingest.smtp_data import read_data
from maild.ingest.wire import Envelope, ParsedMail
from maild.threading.tokens import split_plus_address

log = structlog.get_logger("maild.smtp")

# Every 2xx, 4xx and 5xx reply carries an RFC 3463 enhanced status code (RFC 2034), those
# written here and those aiosmtpd writes (MaildSMTP.push adds theirs).
NOT_OURS = "550 5.1.1 <{}>: no such mailbox here; this server does not relay"
TRY_LATER = "451 4.3.0 Temporary storage failure, please try again later"
NO_SPACE = "452 4.3.1 Insufficient system storage"
TOO_BIG = "552 5.3.4 Message too big for this server"
SENDER_OK = "250 2.1.0 OK"
RECIPIENT_OK = "250 2.1.5 OK"
# A 421 names the server (RFC 5321 §4.2.3: "421 <domain> Service not available"): {host}.
SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down, try again later"
TOO_MANY = "421 4.7.0 {host} Too many connections"
TOO_MANY_FROM_YOU = "421 4.7.0 {host} Too many connections from your address"
IDLE = "421 4.4.2 {host} Idle too long, closing connection"

# The enhanced code of a reply aiosmtpd writes without one: by its exact text where the text
# says more than its reply code does, else by the reply code. Replies that take none (RFC 2034
# §3): the greeting (220), the answers to HELO and EHLO, and 3xx (354, AUTH's 334).
_ENHANCED_BY_TEXT = {
    "250 HELP": "250 HELP",  # the last line of EHLO's answer
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME",
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 Error: SMTPUTF8 takes no arguments",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message size exceeds fixed maximum "
                                                                  "message size",
}
_ENHANCED_BY_CODE = {
    "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "252": "2.0.0",
    "421": "4.3.2", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0",
    "500": "5.5.2",  # syntax error, command unrecognized, line too long
    "501": "5.5.2",  # syntax error in the arguments ("Syntax: MAIL FROM: <address>")
    "502": "5.5.1", "503": "5.5.1",  # command not implemented / out of sequence
    "504": "5.5.4", "530": "5.7.0", "535": "5.7.8", "550": "5.0.0", "552": "5.3.4", "553": "5.1.3",
    "554": "5.0.0", "555": "5.5.4",  # MAIL/RCPT parameters not recognized
}
# A command line (EHLO, MAIL, RCPT …) is buffered up to this much; aiosmtpd answers 500 past
# RFC 5321's 512 octets anyway. A longer one is read and dropped piece by piece, never held.
COMMAND_LINE_LIMIT = 4096
# DATA is read in blocks of up to this much (ingest.smtp_data), whatever its lines' length.
DATA_BLOCK_LIMIT = 1024 * 1024
# At a stop, a DATA still arriving gets this long to end (then its mail is committed and
# answered); one still arriving after it is cut with 421, and nothing of it is kept.
DRAIN_DATA_SECONDS = 10.0
# After that, a session that has its reply gets this long to say QUIT before it hears 421.
DRAIN_QUIT_SECONDS = 1.0


@dataclass(frozen=True)
class SessionLimits:
    """SPEC §11's SMTP limits ([protection]): sessions at once, from one client address, and
    how long a session may say nothing."""

    max_sessions: int = 200
    max_per_client: int = 20
    idle_timeout: float = 60.0


class SessionGate:
    """Counts SMTP sessions against SessionLimits, across every process serving the same
    listening sockets: each process (a parse worker's `slot`) counts its own sessions in its
    own row of a table in shared memory, and a new session is let in only if the sum over all
    rows stays within the caps. A worker that dies leaves its row to the worker that takes its
    slot, which clears it, so a killed worker's sessions do not count for ever. Per client, a
    row holds counters of BUCKETS buckets by a hash of the address: two clients that share a
    bucket share its cap (one chance in BUCKETS per pair), which errs on the strict side.

    A session is counted before the sum is read, and turned away if the sum is over: two
    sessions let in at the same instant by two workers can both be turned away at the cap,
    never both let in past it.
    """

    BUCKETS = 16384
    ROW = BUCKETS + 1  # [sessions, per-client bucket counters …]

    def __init__(self, limits: SessionLimits, table: MutableSequence[int] | None = None, slots: int = 1,
                 slot: int = 0):
        self.limits = limits
        self.slots = slots
        self.slot = slot
        self.table: MutableSequence[int] = table if table is not None else [0] * (slots * self.ROW)

    @classmethod
    def shared(cls, limits: SessionLimits, slots: int) -> SessionGate:
        """A gate whose table the worker processes share (passed to them when they start)."""
        return cls(limits, multiprocessing.RawArray("i", slots * cls.ROW), slots)

    def for_slot(self, slot: int) -> SessionGate:
        """This gate as one worker's: its row cleared of what a dead predecessor left there."""
        gate = SessionGate(self.limits, self.table, self.slots, slot)
        start = slot * self.ROW
        self.table[start:start + self.ROW] = [0] * self.ROW
        return gate

    def _bucket(self, client: str) -> int:
        return 1 + zlib.crc32(client.encode("utf-8", "surrogateescape")) % self.BUCKETS

    def admit(self, client: str) -> str | None:
        """Counts a new session from `client`; or, over a cap, the 421 to answer (not counted)."""
        mine, bucket = self.slot * self.ROW, self._bucket(client)
        t = self.table
        t[mine] += 1
        t[mine + bucket] += 1
        rows = range(0, self.slots * self.ROW, self.ROW)
        refusal = None
        if sum(t[r] for r in rows) > self.limits.max_sessions:
            refusal = TOO_MANY
        elif sum(t[r + bucket] for r in rows) > self.limits.max_per_client:
            refusal = TOO_MANY_FROM_YOU
        if refusal is not None:
            t[mine] -= 1
            t[mine + bucket] -= 1
        return refusal

    def leave(self, client: str) -> None:
        mine = self.slot * self.ROW
        self.table[mine] -= 1
        self.table[mine + self._bucket(client)] -= 1


class Drain:
    """The SMTP sessions of one process, for a stop that never commits a mail without
    answering it: sessions between commands hear 421 at once; a DATA that is arriving may end
    (DRAIN_DATA_SECONDS), and its mail is committed and answered as any other; one that does
    not end in time is cut with 421 before anything of it is committed."""

    def __init__(self) -> None:
        self.sessions: set[MaildSMTP] = set()
        self.stopping = False
        self.finished = False

    def begin(self) -> None:
        """No new mail from now on."""
        if self.stopping:
            return
        self.stopping = True
        for session in list(self.sessions):
            if not session.in_data:
                session.shut()

    async def finish(self, timeout: float = DRAIN_DATA_SECONDS + 60.0) -> None:
        """Waits for the DATA arriving (up to DRAIN_DATA_SECONDS, within `timeout`) and the
        mail being committed (up to `timeout`: the commit's own wait is bounded), then closes
        the sessions left. Once finished, it returns at once."""
        self.begin()
        if self.finished:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        data_until = start + min(DRAIN_DATA_SECONDS, timeout)
        while any(s.reading_data for s in self.sessions) and loop.time() < data_until:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.reading_data:
                log.warning("smtp DATA still arriving at stop: cut with 421, nothing kept",
                            peer=str(session.session.peer if session.session else None))
                session.shut()
        while any(s.in_data for s in self.sessions) and loop.time() < start + timeout:
            await asyncio.sleep(0.05)
        quit_until = loop.time() + DRAIN_QUIT_SECONDS
        while self.sessions and loop.time() < quit_until:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.shut()
        self.finished = True


def refuse_waiting(sock: socket.socket, hostname: str) -> int:
    """Answers 421 4.3.2 to every connection waiting in the listen queue of `sock`, a listening
    socket about to close: closing it would reset them, and a sender told nothing of why.
    Returns how many there were."""
    reply = (SHUTTING_DOWN.format(host=hostname) + "\r\n").encode()
    count = 0
    while True:
        try:
            sock.setblocking(False)  # it is already, for asyncio; accept() must never wait here
            conn, _ = sock.accept()
        except OSError:  # none left (BlockingIOError), or the socket is closed or never listened
            break
        with conn:
            conn.setblocking(False)
            with contextlib.suppress(OSError):  # the client went away: nothing to tell it
                conn.send(reply)
        count += 1
    if count:
        log.info("smtp connections waiting at stop answered 421", count=count)
    return count


class SmtpServer(asyncio.AbstractServer):
    """An asyncio server whose close() stops taking mail on the sessions open, and whose
    wait_closed() waits for their mail to be answered (Drain), as Python 3.12's waits for
    its connections to end.

    It listens until the mail is answered: a connection made meanwhile hears 421 4.3.2 at once
    (MaildSMTP.connection_made), rather than waiting in the listen queue for a greeting that
    never comes and being reset when the socket closes. Then what is still queued hears 421
    (refuse_waiting), and the listening socket closes."""

    def __init__(self, server: asyncio.Server, drain: Drain, listening: socket.socket, hostname: str):
        self.server = server
        self.drain = drain
        self.listening = listening
        self.hostname = hostname

    def close(self) -> None:
        self.drain.begin()

    async def wait_closed(self) -> None:
        await self.drain.finish()
        if self.server.is_serving():
            refuse_waiting(self.listening, self.hostname)
        self.server.close()
        await self.server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.server.get_loop()

    def is_serving(self) -> bool:
        return self.server.is_serving()

    async def start_serving(self) -> None:
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        await self.server.serve_forever()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.server.sockets)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH_RE = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class MaildSMTP(SMTP):
    """aiosmtpd with DATA read in blocks (ingest.smtp_data) instead of line by line, and the
    session limits of SPEC §11.

    Lines of any length are taken inside DATA: real mail has lines past RFC 5321's 1,000
    octets (Outlook HTML, unfolded base64), Postfix takes them, and so must a help desk that may
    not lose a customer's mail; the message size limit bounds them. A command line is buffered
    up to COMMAND_LINE_LIMIT only: 1 MB EHLO lines on hundreds of sessions grew a worker by
    70 MB that it never gave back. The stream's limit is raised for DATA and put back after.

    `gate` counts the session in (SessionGate) or turns it away with 421 before the greeting.
    The idle timeout (aiosmtpd's `timeout`, reset by each command) does not cut a DATA that is
    still arriving, nor a mail being committed.

    `drain` holds the process's sessions for a stop (Drain): a mail is committed only if its
    session is still open when its DATA ends, and answered before the session is closed.

    Every 2xx, 4xx and 5xx reply carries an enhanced status code (push), whether the client
    said EHLO or HELO: RFC 2034 ties them to EHLO, but Postfix sends them to either, and no
    client is known to mind. PIPELINING (RFC 2920) is safe here: commands are read a line at a
    time from the stream, so those sent together wait in its buffer, each answered in turn;
    DATA is read up to its end marker only (smtp_data), leaving what follows it there too.
    """

    line_length_limit = COMMAND_LINE_LIMIT

    def __init__(self, handler: Any, *, spool_dir: Path | None = None, gate: SessionGate | None = None,
                 drain: Drain | None = None, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.spool_dir = spool_dir  # where a large mail's DATA goes instead of memory
        self.gate = gate
        self.drain = drain or Drain()
        self._client: str | None = None  # counted by the gate while the session lasts
        self._refused = False
        self._in_data = False  # DATA is being read or its mail delivered
        self.reading_data = False  # DATA is being read (a stop may still cut it)
        self._shut = False  # closed by a stop: nothing more of this session is delivered
        self._last_input = 0.0

    @property
    def in_data(self) -> bool:
        return self._in_data

    def shut(self) -> None:
        """421 and close, for a stop (RFC 5321 §3.8): never while its mail is being committed."""
        if self._shut:
            return
        self._shut = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(SHUTTING_DOWN.format(host=self.hostname).encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()

    def _refuse(self, transport: asyncio.BaseTransport, reply: str) -> None:
        """421 before the greeting, and close: never a session."""
        self._refused = True
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(reply.format(host=self.hostname).encode() + b"\r\n")
        transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.drain.stopping:  # made while the mail in flight is answered at a stop (SmtpServer)
            self._refuse(transport, SHUTTING_DOWN)
            return
        if self.gate is not None and self._original_transport is None:  # not STARTTLS's second call
            peer = transport.get_extra_info("peername")
            client = str(peer[0] if isinstance(peer, tuple) else peer)
            refusal = self.gate.admit(client)
            if refusal is not None:
                log.warning("smtp session refused", client=client, reason=refusal.partition("} ")[2],
                            max_sessions=self.gate.limits.max_sessions,
                            max_per_client=self.gate.limits.max_per_client)
                self._refuse(transport, refusal)
                return
            self._client = client
        self.drain.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.drain.sessions.discard(self)
        if self._client is not None and self.gate is not None:
            self.gate.leave(self._client)
            self._client = None
        if self._refused:  # never a session: none of aiosmtpd's state to clean up
            asyncio.StreamReaderProtocol.connection_lost(self, error)
            return
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._last_input = self.loop.time()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        idle = self.loop.time() - self._last_input
        if self._in_data and idle < self._timeout_duration:  # still arriving, or being committed
            self._reset_timeout(self._timeout_duration - idle if idle > 0 else None)
            return
        log.info("smtp session idle, closed", peer=str(self.session.peer if self.session else None),
                 idle_timeout=self._timeout_duration)
        if self.transport is not None and not self.transport.is_closing():  # RFC 5321 §4.5.3.2: 421, then close
            self.transport.write(IDLE.format(host=self.hostname).encode() + b"\r\n")  # type: ignore[attr-defined]
        super()._timeout_cb()

    async def push(self, status: Any) -> None:
        """Every reply goes out here: one that lacks an enhanced status code gets its own."""
        if isinstance(status, str) and status[5:6] != ".":  # "250 2.0.0 OK" has one
            if status == "500 Command line too long":
                log.warning("smtp command line too long, refused",
                            peer=str(self.session.peer if self.session else None), limit=self.command_size_limit)
            status = self._enhanced(status)
        await super().push(status)

    def _enhanced(self, status: str) -> str:
        """`status` with the enhanced code its text or reply code calls for (_ENHANCED_BY_*);
        as it is if it takes none: the greeting, the answers to HELO and EHLO, 3xx."""
        coded = _ENHANCED_BY_TEXT.get(status)
        if coded is not None:
            return coded
        if status[3:4] != " " or status == f"250 {self.hostname}":  # EHLO's lines, HELO's answer
            return status
        # "500 Error: (KeyError) …" is aiosmtpd's answer to an exception: not the client's fault
        detail = "5.3.0" if status.startswith("500 Error: (") else _ENHANCED_BY_CODE.get(status[:3])
        return status if detail is None else f"{status[:3]} {detail} {status[4:]}"

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """`<local@domain> …` of MAIL and RCPT, for plain addresses without the header parser
        (aiosmtpd's path builds a class per call); anything else goes the full way."""
        m = _PLAIN_PATH_RE.match(arg)
        rest = arg[m.end():].lstrip(" \t") if m else ""
        if m is None or rest.startswith("(") or (
                self.local_part_limit and len(m.group(1).rpartition("@")[0]) > self.local_part_limit):
            return super()._getaddr(arg)
        return m.group(1), rest

    @syntax(SMTP.smtp_MAIL.__smtp_syntax__, SMTP.smtp_MAIL.__smtp_syntax_extended__)  # type: ignore[attr-defined]
    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.drain.stopping:  # a session that had its reply during a stop: no new mail
            self.shut()
            return
        await super().smtp_MAIL(arg)

    @syntax("DATA")  # as aiosmtpd's, so that HELP lists it
    async def smtp_DATA(self, arg: str) -> None:
        if self.drain.stopping:
            self.shut()
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = self.reading_data = True
        self._reader._limit = DATA_BLOCK_LIMIT  # type: ignore[attr-defined]  # asyncio has no setter
        try:
            try:
                data = await read_data(self._reader, self.data_size_limit, self.spool_dir)
            except asyncio.CancelledError:
                log.info("connection lost during DATA", peer=str(self.session.peer if self.session else None))
                self._writer.close()
                raise
            finally:
                self._reader._limit = COMMAND_LINE_LIMIT  # type: ignore[attr-defined]
                self.reading_data = False
            if self._shut:  # cut by a stop as the DATA ended: not answered, so not kept
                if data.spooled is not None:
                    data.spooled.unlink(missing_ok=True)
                return
            if data.too_big:
                self._set_post_data_state()
                await self.push(TOO_BIG)
                return
            self.envelope.content = self.envelope.original_content = data.content
            self.envelope.spooled = data.spooled  # type: ignore[attr-defined]  # the handler takes the file
            self.envelope.spool_error = data.error  # type: ignore[attr-defined]  # the handler answers for it
            self._last_input = float("inf")  # being delivered: not idle, however long the commit takes
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 2.0.0 OK" if status is MISSING else status)
        finally:
            self._in_data = self.reading_data = False
            self._last_input = self.loop.time()


# The handler's two steps for a mail whose DATA is complete: parse it (the raw bytes, the
# spool file, or the OSError that kept it from being spooled), then commit it and say the
# reply to DATA. Where each runs is the caller's choice (module docstring).
ParseMail = Callable[[bytes | Path | OSError], Awaitable[ParsedMail]]
CommitMail = Callable[[ParsedMail, Envelope], Awaitable[str]]


class MaildHandler:
    """EHLO, MAIL, RCPT and DATA, wherever the session runs: in a parse worker (`parse` here,
    `commit` over the wire to the daemon) or in the daemon (`parse` in a thread, `commit`
    the committer's)."""

    def __init__(self, is_ours: Callable[[str], bool], parse: ParseMail, commit: CommitMail):
        self.is_ours = is_ours
        self.parse = parse
        self.commit = commit

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        base, _ = split_plus_address(address)
        if not self.is_ours(base):
            log.info("recipient refused", rcpt=address, peer=str(session.peer))
            return NOT_OURS.format(address)
        envelope.rcpt_tos.append(address)
        return RECIPIENT_OK

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str,
                          mail_options: list[str]) -> str:
        """As aiosmtpd does without this hook, with the enhanced code for a sender (2.1.0)."""
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return SENDER_OK

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """aiosmtpd's extensions (SIZE, 8BITMIME, SMTPUTF8), and what MaildSMTP adds: PIPELINING
        and ENHANCEDSTATUSCODES. The hook must set the session's host name itself."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw: bytes | Path | OSError = (getattr(envelope, "spool_error", None) or getattr(envelope, "spooled", None)
                                       or envelope.original_content or b"")
        mail_from = envelope.mail_from
        parsed = await self.parse(raw)
        return await self.commit(parsed, Envelope(mail_from if mail_from != "<>" else "", list(envelope.rcpt_tos)))


class Stored(Protocol):
    """What the reply to DATA depends on (committer.Receipt)."""

    @property
    def stored(self) -> bool: ...
    @property
    def disk_full(self) -> bool: ...


def smtp_reply(result: Stored) -> str:
    """The reply to DATA: 250 only for a mail that is stored (committed or quarantined). It
    says nothing of what became of the mail: anyone may send, and a case number (or that the
    mail was quarantined) is not theirs to learn from the SMTP reply. Not stored: 452 when
    the disk is full, 451 otherwise; the sender retries either way."""
    if result.stored:
        return "250 2.0.0 OK"
    return NO_SPACE if result.disk_full else TRY_LATER


def replying(commit: Callable[[ParsedMail, Envelope], Awaitable[Stored]]) -> CommitMail:
    """The committer's commit as the handler's commit step: its receipt said as the reply to
    DATA. The daemon gives the same one to its own handler and to the workers' mail."""
    async def commit_and_reply(parsed: ParsedMail, envelope: Envelope) -> str:
        return smtp_reply(await commit(parsed, envelope))
    return commit_and_reply


def clear_spool(spool_dir: Path) -> None:
    """At start: a spool file left by a crash is a mail that never got its 250; the sender
    sends it again, so it is removed rather than ingested twice."""
    left = list(spool_dir.glob("smtp-*.eml")) if spool_dir.is_dir() else []
    for path in left:
        path.unlink(missing_ok=True)
    if left:
        log.info("unacknowledged spool files removed", count=len(left), folder=str(spool_dir))


def bind_smtp_sockets(listen: list[str]) -> list[socket.socket]:
    """The listening sockets, bound once by the daemon (every address a host name resolves to,
    as asyncio's create_server binds): its parse workers accept on them, and a worker that
    dies leaves them open for the next."""
    socks: list[socket.socket] = []
    try:
        for spec in listen:
            host, _, port = spec.rpartition(":")
            infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)  # listening starts with the first server on it, when maild is ready
                sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def start_smtp_servers(handler: MaildHandler, socks: list[socket.socket], hostname: str,
                             max_bytes: int, spool_dir: Path | None = None,
                             start_serving: bool = True, gate: SessionGate | None = None) -> list[SmtpServer]:
    """`gate`: the session limits, counted with other processes' sessions if it is shared;
    None: the default limits, counted in this process. The servers share one Drain: closing
    them (and waiting for them) answers the mail of every session they opened."""
    loop = asyncio.get_running_loop()
    gate = gate or SessionGate(SessionLimits())
    drain = Drain()

    def factory() -> MaildSMTP:
        return MaildSMTP(handler, hostname=hostname, ident="maild", data_size_limit=max_bytes,
                         enable_SMTPUTF8=True, decode_data=False, spool_dir=spool_dir, gate=gate, drain=drain,
                         timeout=gate.limits.idle_timeout)
    return [SmtpServer(await loop.create_server(factory, sock=sock, start_serving=start_serving), drain, sock,
                       hostname) for sock in socks]
