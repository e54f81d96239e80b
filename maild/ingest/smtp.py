"""The SMTP receiver: an aiosmtpd handler that answers 250 only after the commit (SPEC §11)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from maild.ingest.receive import Receiver
from maild.ingest.smtp_data import read_data
from maild.threading.tokens import split_plus_address

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


class MaildHandler:
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        base, _ = split_plus_address(address)
        if self.receiver.runtime.config.mailbox(base) is None:
            log.info("recipient refused", rcpt=address, peer=str(session.peer))
            return NOT_OURS.format(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes | Path = getattr(envelope, "spooled", None) or envelope.original_content or b""
        mail_from = envelope.mail_from
        result = await self.receiver.receive(raw, mail_from=mail_from if mail_from != "<>" else "",
                                             recipients=list(envelope.rcpt_tos), via="smtp")
        if result.stored:
            return f"250 2.0.0 OK {result.summary}"
        return TRY_LATER


def clear_spool(spool_dir: Path) -> None:
    """At start: a spool file left by a crash is a mail that never got its 250; the sender
    sends it again, so it is removed rather than ingested twice."""
    left = list(spool_dir.glob("smtp-*.eml")) if spool_dir.is_dir() else []
    for path in left:
        path.unlink(missing_ok=True)
    if left:
        log.info("unacknowledged spool files removed", count=len(left), folder=str(spool_dir))


async def start_smtp_servers(receiver: Receiver, listen: list[str], hostname: str,
                             max_bytes: int, spool_dir: Path | None = None) -> list[asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()
    handler = MaildHandler(receiver)

    def factory() -> Any:
        return MaildSMTP(handler, hostname=hostname, ident="maild", data_size_limit=max_bytes,
                         enable_SMTPUTF8=True, decode_data=False, spool_dir=spool_dir)

    servers = []
    for spec in listen:
        host, _, port = spec.rpartition(":")
        servers.append(await loop.create_server(factory, host=host.strip("[]"), port=int(port)))
    return servers
