"""The transactional outbox: rows written with the change, delivered after commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from maild.store.models import OutboxMail
from maild.store.rows import insert_later, read

# A claimed row is the claimer's until its lease runs out; the outbox worker renews the lease of
# the rows it still holds after every send (notify.outbox), so a lease need only outlast one send.
DEFAULT_CLAIM_LEASE = timedelta(seconds=35)


def enqueue_mail(session: Session, *, case_number: int | None, message_id: str, kind: str,
                 mail_from: str, recipient: str, automatic: bool, now: datetime, raw: bytes | None = None,
                 context: str | None = None, headers: dict[str, Any] | None = None) -> None:
    """A Core INSERT of every column, no model object, gathered with the transaction's other
    outbox rows into one executemany (store.rows.insert_later): nothing in the transaction
    reads it but queries through store.rows.read, and the outbox worker reads it after commit.
    Either `raw` (the finished mail) or `context` and `headers` (what the worker renders the
    template `kind` with; notify.outgoing)."""
    assert (raw is None) != (context is None and headers is None), "raw bytes, or a context and headers"
    insert_later(session, OutboxMail.__table__, {
        "case_number": case_number, "message_id": message_id, "kind": kind, "automatic": automatic,
        "mail_from": mail_from, "recipient": recipient.lower(), "raw": raw, "context": context, "headers": headers,
        "status": "pending", "render_failed": False, "attempts": 0, "next_attempt_at": now, "last_error": None,
        "created_at": now, "sent_at": None})


# Both rate limits of an acknowledgement in one indexed query (ix_outbox_recipient_created).
_SENT_TO = (
    select(func.count(OutboxMail.id).filter(OutboxMail.kind == bindparam("kind"),
                                            OutboxMail.created_at >= bindparam("kind_since")),
           func.count(OutboxMail.id).filter(OutboxMail.automatic.is_(True)))
    .where(OutboxMail.recipient == bindparam("recipient"), OutboxMail.created_at >= bindparam("since"))
)


def count_sent_to(session: Session, recipient: str, *, kind: str, kind_since: datetime,
                  automatic_since: datetime) -> tuple[int, int]:
    """Mails queued to one address (all statuses: a queued mail will go out): of `kind` since
    `kind_since`, and automatic ones since `automatic_since`, which must be the earlier time."""
    assert automatic_since <= kind_since
    (row,) = read(session, _SENT_TO, {"kind": kind, "kind_since": kind_since, "recipient": recipient.lower(),
                                      "since": automatic_since})
    return row[0] or 0, row[1] or 0


@dataclass(frozen=True)
class Claimed:
    """A due mail taken by one outbox pass (plain columns: the pass builds, sends and records
    it, it reads nothing else of the row)."""

    id: int
    mail_from: str
    recipient: str
    raw: bytes | None  # None: built from kind (the template), context and headers
    attempts: int
    message_id: str
    kind: str = ""
    context: str | None = None
    headers: dict[str, Any] | None = None
    case_number: int | None = None
    created_at: datetime | None = None


def claim_due(session: Session, now: datetime, limit: int = 20,
              lease: timedelta = DEFAULT_CLAIM_LEASE) -> list[Claimed]:
    """Due rows, leased to this worker until `now + lease`: `FOR UPDATE SKIP LOCKED` lets several
    processes share the outbox on PostgreSQL; a worker that dies lets its lease run out and the
    row is retried."""
    t = OutboxMail.__table__
    conn = session.connection()
    rows = [Claimed(*r) for r in conn.execute(
        select(t.c.id, t.c.mail_from, t.c.recipient, t.c.raw, t.c.attempts, t.c.message_id, t.c.kind,
               t.c.context, t.c.headers, t.c.case_number, t.c.created_at)
        .where(t.c.status == "pending", t.c.next_attempt_at <= now)
        .order_by(t.c.id).limit(limit).with_for_update(skip_locked=True))]
    if rows:
        conn.execute(update(t).where(t.c.id.in_([r.id for r in rows])).values(next_attempt_at=now + lease))
    return rows


def hold_until(session: Session, row_ids: list[int], until: datetime) -> None:
    """Moves the lease of rows this worker claimed: later to renew it, to now to give the rows
    back (a clean stop, a pass cut short) so that they go out at once, by any worker."""
    if row_ids:
        t = OutboxMail.__table__
        session.connection().execute(update(t).where(t.c.id.in_(row_ids), t.c.status == "pending")
                                     .values(next_attempt_at=until))


def next_due_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(OutboxMail.next_attempt_at))
                          .where(OutboxMail.status == "pending"))


def mark_sent(session: Session, row_ids: list[int], now: datetime) -> None:
    """One UPDATE for sent mails."""
    if row_ids:
        t = OutboxMail.__table__
        session.connection().execute(update(t).where(t.c.id.in_(row_ids)).values(
            status="sent", sent_at=now, attempts=t.c.attempts + 1, last_error=None))


def mark_failed(session: Session, row_id: int, error: str, *, permanent: bool, retry_at: datetime) -> None:
    values: dict[str, object] = {"attempts": OutboxMail.attempts + 1, "last_error": error[:2000]}
    if permanent:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = retry_at
    session.execute(update(OutboxMail).where(OutboxMail.id == row_id).values(**values))


def mark_sent_if_pending(session: Session, sends: list[tuple[int, str, str, datetime]]) -> int:
    """Sends a killed process made and did not record: (row id, Message-ID, recipient, when).
    Matched on all three (a row id alone may be a different mail by now) and only while pending
    (recorded meanwhile: nothing to do). Returns how many rows it marked."""
    t = OutboxMail.__table__
    marked = 0
    for row_id, message_id, recipient, at in sends:
        marked += session.connection().execute(update(t).where(
            t.c.id == row_id, t.c.message_id == message_id, t.c.recipient == recipient, t.c.status == "pending",
        ).values(status="sent", sent_at=at, attempts=t.c.attempts + 1, last_error=None)).rowcount
    return marked


def mark_unbuilt(session: Session, row_id: int, error: str) -> None:
    """A mail that could not be built (its template failed, an attachment is gone): failed, with
    the error for `maild outbox list`, until retry_unbuilt. No delivery was tried: attempts stay."""
    session.execute(update(OutboxMail).where(OutboxMail.id == row_id).values(
        status="failed", render_failed=True, last_error=error[:2000]))


def retry_unbuilt(session: Session, now: datetime) -> int:
    """The mails that could not be built go out again (the templates were read again: a start,
    a reload); returns how many."""
    t = OutboxMail.__table__
    return session.connection().execute(update(t).where(t.c.render_failed.is_(True), t.c.status == "failed").values(
        status="pending", render_failed=False, next_attempt_at=now)).rowcount


def retry_failed(session: Session, now: datetime, row_ids: list[int] | None = None) -> int:
    """`maild outbox retry ID|--failed` (SPEC §12): failed rows (all, or these) pending again with
    their attempts counted afresh; returns how many."""
    t = OutboxMail.__table__
    where = [t.c.status == "failed"] + ([t.c.id.in_(row_ids)] if row_ids is not None else [])
    return session.connection().execute(update(t).where(*where).values(
        status="pending", render_failed=False, attempts=0, next_attempt_at=now)).rowcount
