"""What crosses between the daemon's process and its parse workers, declared once.

The one request a mail makes is `MailIn`: a worker that served an SMTP session sends it
over its hand-over socket with the mail parsed (its blobs already stored) and the envelope;
the one answer is `MailAnswer`, the reply to DATA, sent after the daemon's commit. Both are
pickled in a frame of this module's format.

The daemon's requests to a worker go the other way, on the worker's request socket, in the
same frames: a mail to parse for the IMAP poller (RAW, SPOOLED; answered with the parsed
mail), and the worker's lifecycle (PING, SERVE, MAILBOXES, STOP). `Channel` is either end
that sends requests and matches the answers to them.

Depends on nothing of maild's transport, so that every module of it may import this one.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

from maild.domain.message import InboundMessage

REQUEST = struct.Struct("!QBQ")  # request id, kind, payload length
ANSWER = struct.Struct("!QQ")  # request id, pickled answer's length
# The kinds of request. To a worker: PING (its pid), RAW (parse these bytes), SPOOLED (parse
# the file at this path), MAILBOXES (the RCPT check's addresses after a reload), SERVE (start
# accepting SMTP), STOP (finish the sessions; payload: seconds). From a worker: MAIL (MailIn).
PING, RAW, SPOOLED, MAILBOXES, SERVE, STOP, MAIL = 0, 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class Envelope:
    """Who sent a mail and to whom, as the transport says (SMTP's MAIL FROM and accepted RCPT
    TO; IMAP's stand-ins), and by which transport: the committer decides the deliveries from it."""

    mail_from: str | None
    recipients: list[str]
    via: str = "smtp"


@dataclass(frozen=True)
class ParsedMail:
    """A mail after its parse, wherever that ran: `mail` is the message (its blobs stored), or
    why it could not be (ParseError: quarantine it; OSError: nothing is kept, the sender
    retries). `raw` is what a quarantine keeps when the message does not carry it: the bytes,
    or the path of the spool file; b"" when the message carries them (its `raw_mail`)."""

    mail: InboundMessage | Exception
    raw: bytes | Path = b""

    def kept(self) -> bytes | Path:
        """The raw mail a quarantine keeps, wherever it is."""
        m = self.mail
        if isinstance(m, InboundMessage):
            return Path(m.raw_mail.path) if m.raw_mail.path else m.raw_mail.data or self.raw
        return self.raw


@dataclass(frozen=True)
class MailIn:
    """The one request that crosses processes with a mail: a worker's parsed mail, to commit."""

    parsed: ParsedMail
    envelope: Envelope


@dataclass(frozen=True)
class MailAnswer:
    """The one answer: the reply to the mail's DATA ("250 2.0.0 OK" only after the commit)."""

    reply: str


class WorkerDied(Exception):
    """The other end of a Channel ended before it answered."""


def pickled(ok: bool, value: object) -> bytes:
    """An answer's body: (True, value) or (False, the exception), pickled; a value that does not
    pickle travels as a RuntimeError naming it."""
    try:
        return pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value}")), pickle.HIGHEST_PROTOCOL)


def request_frame(request_id: int, kind: int, payload: bytes) -> bytes:
    return REQUEST.pack(request_id, kind, len(payload)) + payload


def answer_frame(request_id: int, body: bytes) -> bytes:
    return ANSWER.pack(request_id, len(body)) + body


async def read_request(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next request frame: id, kind, payload (IncompleteReadError when the socket ends)."""
    request_id, kind, length = REQUEST.unpack(await reader.readexactly(REQUEST.size))
    return request_id, kind, await reader.readexactly(length)


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
                request_id, length = ANSWER.unpack(await reader.readexactly(ANSWER.size))
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
        self.writer.write(request_frame(request_id, kind, payload))
        return fut
