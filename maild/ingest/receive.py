"""The old names of the commit step, kept while callers move to ingest.committer.

`Receiver` is `committer.Committer` (with `receive_handed_over` for the old hand-over),
`ReceiveResult` its `Receipt`, `PendingReceive` its `Pending`. New code imports
maild.ingest.committer.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from maild.domain.message import InboundMessage
from maild.domain.outcome import Outcome
from maild.ingest.committer import (
    AlsoWrite,
    Committer,
    DeliveryPlan,
    DiskFull,
    Pending,
    Receipt,
    deliveries_for,
)
from maild.ingest.delivery import Delivery
from maild.ingest.parse_pool import HandedOver
from maild.ingest.pipeline import ingest_message
from maild.ingest.wire import Envelope, ParsedMail
from maild.runtime import Runtime

__all__ = ["AlsoWrite", "DeliveryPlan", "DiskFull", "PendingReceive", "ReceiveResult", "Receiver", "deliveries_for"]

ReceiveResult = Receipt
PendingReceive = Pending


class Receiver(Committer):
    """Committer under its old name; its pipeline is this module's `ingest_message`."""

    async def receive_handed_over(self, handed: HandedOver) -> Receipt:
        """A mail in the old hand-over's shape, committed as smtp's handler commits it."""
        raw: bytes | Path = Path(handed.raw) if isinstance(handed.raw, str) else handed.raw
        return await self.commit(ParsedMail(handed.parsed, raw), Envelope(handed.mail_from, handed.recipients))

    def _ingest(self, session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> Outcome:
        return ingest_message(session, msg, delivery, rt)
