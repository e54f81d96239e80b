"""Raw bytes and an envelope in; stored (or quarantined) and committed out.

Shared by the SMTP receiver and the IMAP poller: parse off the event loop, hand the
pipeline to the writer thread, log one line per mail, quarantine what cannot be processed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session

from maild.ingest.parse import InboundMessage, ParseError, parse_message
from maild.ingest.pipeline import Delivery, Outcome, ingest_message
from maild.ingest.quarantine import quarantine
from maild.ingest.writer import IngestWriter, StorageError
from maild.runtime import Runtime
from maild.threading.tokens import split_plus_address

log = structlog.get_logger("maild.ingest")


@dataclass(frozen=True)
class ReceiveResult:
    stored: bool  # False: nothing was kept, the sender must retry
    outcomes: list[Outcome]
    quarantined: str | None = None

    @property
    def summary(self) -> str:
        if self.quarantined:
            return "kept for review"
        cases = sorted({o.case_number for o in self.outcomes if o.case_number is not None})
        return ", ".join(f"case #{n}" for n in cases) or "stored"


def deliveries_for(rt: Runtime, recipients: list[str], mail_from: str | None,
                   via: str) -> list[Delivery]:
    """One delivery per configured mailbox among the recipients, in recipient order."""
    by_mailbox: dict[str, list[str]] = {}
    for rcpt in recipients:
        base, _ = split_plus_address(rcpt)
        if rt.config.mailbox(base) is not None:
            by_mailbox.setdefault(base, []).append(rcpt.lower())
    return [Delivery(mailbox=rt.config.mailbox(base), recipients=rcpts,  # type: ignore[arg-type]
                     envelope_sender=mail_from, via=via) for base, rcpts in by_mailbox.items()]


class Receiver:
    def __init__(self, runtime: Runtime, writer: IngestWriter):
        self.runtime = runtime
        self.writer = writer

    def swap_runtime(self, runtime: Runtime) -> None:
        """Used by reload: the next mail sees the new config; mails in flight keep theirs."""
        self.runtime = runtime

    async def receive(self, raw: bytes, *, mail_from: str | None, recipients: list[str],
                      via: str) -> ReceiveResult:
        rt = self.runtime
        loop = asyncio.get_running_loop()
        try:
            msg = await loop.run_in_executor(None, parse_message, raw)
        except ParseError as e:
            return await self._quarantine(raw, f"unparseable: {e}", mail_from, recipients)
        deliveries = deliveries_for(rt, recipients, mail_from, via)
        try:
            outcomes = await self.writer.run(_job(msg, deliveries, rt))
        except StorageError as e:
            log.error("message not stored, sender must retry", message_id=msg.message_id, error=str(e),
                      via=via)
            return ReceiveResult(stored=False, outcomes=[])
        except Exception as e:
            return await self._quarantine(raw, f"processing failed: {type(e).__name__}: {e}",
                                          mail_from, recipients)
        for d, o in zip(deliveries, outcomes, strict=True):
            log.info("message ingested", message_id=msg.message_id, mailbox=d.mailbox.address,
                     case=o.case_number, outcome=o.action, matched_by=o.matched_by,
                     classification=o.classification, visibility=o.visibility,
                     acknowledgement=o.acknowledgement, via=via, size=len(raw))
        return ReceiveResult(stored=True, outcomes=outcomes)

    async def _quarantine(self, raw: bytes, reason: str, mail_from: str | None,
                          recipients: list[str]) -> ReceiveResult:
        rt = self.runtime
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(None, lambda: quarantine(
                rt.config.data_dir, raw, reason, mail_from=mail_from, recipients=recipients,
                now=rt.clock()))
        except OSError as e:
            log.error("quarantine failed, sender must retry", reason=reason, error=str(e))
            return ReceiveResult(stored=False, outcomes=[])
        return ReceiveResult(stored=True, outcomes=[], quarantined=str(path))


def _job(msg: InboundMessage, deliveries: list[Delivery], rt: Runtime) -> Callable[[Session], list[Outcome]]:
    def run(session: Session) -> list[Outcome]:
        return [ingest_message(session, msg, d, rt) for d in deliveries]
    return run
