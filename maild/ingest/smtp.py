"""The SMTP receiver: an aiosmtpd handler that answers 250 only after the commit (SPEC §11)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from maild.ingest.smtp_data import read_data
from maild.threading.tokens import split_plus_address

if TYPE_CHECKING:  # a parse worker serving SMTP imports this module, and needs none of the pipeline
    from maild.ingest.receive import Receiver, ReceiveResult

log = structlog.get_logger("maild.smtp")

NOT_OURS = "550 5.1.1 <{}>: no such mailbox here; this server does not relay"
TRY_LATER = "451 4.3.0 Temporary storage failure, please try again later"


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH_RE = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class MaildSMTP(SMTP):
    """aiosmtpd with DATA read in blocks (ingest.smtp_data) instead of line by line.

    Lines of any length are taken inside DATA: real mail has lines past RFC 5321's 1,000
    octets (Outlook HTML, unfolded base64), Postfix takes them, and so must a help desk that may
    not lose a customer's mail; the message size limit bounds them. Command lines may be 1 MiB.
    """

    line_length_limit = 1024 * 1024

    def __init__(self, handler: Any, *, spool_dir: Path | None = None, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.spool_dir = spool_dir  # where a large mail's DATA goes instead of memory

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """`<local@domain> …` of MAIL and RCPT, for plain addresses without the header parser
        (aiosmtpd's path builds a class per call); anything else goes the full way."""
        m = _PLAIN_PATH_RE.match(arg)
        rest = arg[m.end():].lstrip(" \t") if m else ""
        if m is None or rest.startswith("(") or (
                self.local_part_limit and len(m.group(1).rpartition("@")[0]) > self.local_part_limit):
            return super()._getaddr(arg)
        return m.group(1), rest

    async def smtp_DATA(self, arg: str) -> None:
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
        try:
            data = await read_data(self._reader, self.data_size_limit, self.spool_dir)
        except asyncio.CancelledError:
            log.info("connection lost during DATA", peer=str(self.session.peer if self.session else None))
            self._writer.close()
            raise
        if data.too_big:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        self.envelope.content = self.envelope.original_content = data.content
        self.envelope.spooled = data.spooled  # type: ignore[attr-defined]  # the handler takes the file
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


# What becomes of a mail whose DATA is complete: its raw bytes (or spool file), MAIL FROM and
# the accepted recipients in; the final reply out.
Deliver = Callable[[bytes | Path, str, list[str]], Awaitable[str]]


class MaildHandler:
    """RCPT and DATA, wherever the session runs: in the daemon (`deliver` is the Receiver's)
    or in a parse worker (`deliver` parses there and hands the mail to the daemon)."""

    def __init__(self, is_ours: Callable[[str], bool], deliver: Deliver):
        self.is_ours = is_ours
        self.deliver = deliver

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        base, _ = split_plus_address(address)
        if not self.is_ours(base):
            log.info("recipient refused", rcpt=address, peer=str(session.peer))
            return NOT_OURS.format(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes | Path = getattr(envelope, "spooled", None) or envelope.original_content or b""
        mail_from = envelope.mail_from
        return await self.deliver(raw, mail_from if mail_from != "<>" else "", list(envelope.rcpt_tos))


def smtp_reply(result: ReceiveResult) -> str:
    """The reply to DATA: 250 only for a mail that is stored (committed or quarantined)."""
    return f"250 2.0.0 OK {result.summary}" if result.stored else TRY_LATER


def receiver_handler(receiver: Receiver) -> MaildHandler:
    """Sessions served by the daemon itself: the mail is parsed and committed from here."""
    async def deliver(raw: bytes | Path, mail_from: str, recipients: list[str]) -> str:
        return smtp_reply(await receiver.receive(raw, mail_from=mail_from, recipients=recipients, via="smtp"))
    # the same rule as a worker's RCPT check (smtp_worker), on the runtime a reload swaps in
    return MaildHandler(lambda base: base.lower() in receiver.runtime.mailbox_addresses, deliver)


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
                             start_serving: bool = True) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()

    def factory() -> MaildSMTP:
        return MaildSMTP(handler, hostname=hostname, ident="maild", data_size_limit=max_bytes,
                         enable_SMTPUTF8=True, decode_data=False, spool_dir=spool_dir)
    return [await loop.create_server(factory, sock=sock, start_serving=start_serving)
            for sock in socks]
