"""The transactional outbox: rows written with the change, delivered after commit."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from maild.store.models import OutboxMail

CLAIM_LEASE = timedelta(minutes=5)


def enqueue_mail(session: Session, *, case_number: int | None, message_id: str, kind: str,
                 mail_from: str, recipient: str, raw: bytes, automatic: bool, now: datetime) -> OutboxMail:
    row = OutboxMail(case_number=case_number, message_id=message_id, kind=kind, automatic=automatic,
                     mail_from=mail_from, recipient=recipient.lower(), raw=raw, status="pending",
                     attempts=0, next_attempt_at=now, created_at=now)
    session.add(row)
    return row


def count_sent_to(session: Session, recipient: str, since: datetime, *, kind: str | None = None,
                  automatic: bool | None = None) -> int:
    """Mails queued to one address since a time (all statuses: a queued mail will go out)."""
    q = select(func.count(OutboxMail.id)).where(OutboxMail.recipient == recipient.lower(),
                                                 OutboxMail.created_at >= since)
    if kind is not None:
        q = q.where(OutboxMail.kind == kind)
    if automatic is not None:
        q = q.where(OutboxMail.automatic == automatic)
    return session.scalar(q) or 0


def claim_due(session: Session, now: datetime, limit: int = 20) -> list[OutboxMail]:
    """Due rows, leased to this worker: `FOR UPDATE SKIP LOCKED` lets several processes share
    the outbox on PostgreSQL; a worker that dies lets its lease run out and the row is retried."""
    rows = list(session.scalars(
        select(OutboxMail)
        .where(OutboxMail.status == "pending", OutboxMail.next_attempt_at <= now)
        .order_by(OutboxMail.id).limit(limit).with_for_update(skip_locked=True)
    ))
    for row in rows:
        row.next_attempt_at = now + CLAIM_LEASE
    return rows


def next_due_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(OutboxMail.next_attempt_at))
                          .where(OutboxMail.status == "pending"))


def mark_sent(session: Session, row_id: int, now: datetime) -> None:
    session.execute(update(OutboxMail).where(OutboxMail.id == row_id).values(
        status="sent", sent_at=now, attempts=OutboxMail.attempts + 1, last_error=None))


def mark_failed(session: Session, row_id: int, error: str, *, permanent: bool, retry_at: datetime) -> None:
    values: dict[str, object] = {"attempts": OutboxMail.attempts + 1, "last_error": error[:2000]}
    if permanent:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = retry_at
    session.execute(update(OutboxMail).where(OutboxMail.id == row_id).values(**values))
