"""The old names of the commit step, kept while callers move to ingest.committer.

`Receiver` is `committer.Committer`,
`ReceiveResult` its `Receipt`, `PendingReceive` its `Pending`. New code imports
maild.ingest.committer.
"""

from __future__ import annotations

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
from maild.ingest.pipeline import ingest_message
from maild.runtime import Runtime

__all__ = ["AlsoWrite", "DeliveryPlan", "DiskFull", "PendingReceive", "ReceiveResult", "Receiver", "deliveries_for"]

ReceiveResult = Receipt
PendingReceive = Pending


class Receiver(Committer):
    """Committer under its old name; its pipeline is this module's `ingest_message`."""

    def _ingest(self, session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> Outcome:
        return ingest_message(session, msg, delivery, rt)
