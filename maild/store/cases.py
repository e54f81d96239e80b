"""Case reads and writes the pipeline needs: lookups for matching, history, events. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from maild.store.models import (
    Case,
    CaseParticipant,
    Contact,
    Event,
    HistoryEntry,
    Message,
    OutboxMail,
)
from maild.store.rows import insert_rows, read

# Statements of every mail, built once: building one costs more than running it.
_CASES_OF_STORED = select(Message.message_id, Message.case_number).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.case_number.is_not(None))
_CASES_OF_SENT = select(OutboxMail.message_id, OutboxMail.case_number).where(
    OutboxMail.message_id.in_(bindparam("ids", expanding=True)), OutboxMail.case_number.is_not(None))
_STREAM_STORED = select(Message.message_id, Message.received_at).where(
    Message.case_number == bindparam("case"), Message.message_id.is_not(None))
_STREAM_SENT = select(OutboxMail.message_id, OutboxMail.created_at).where(OutboxMail.case_number == bindparam("case"))


def case_by_message_ids(session: Session, ids: Iterable[str]) -> int | None:
    """The case of the newest of `ids` that maild stored or sent (In-Reply-To/References)."""
    ids = [i for i in ids if i]
    if not ids:
        return None
    found: dict[str, int] = {}
    for statement in (_CASES_OF_STORED, _CASES_OF_SENT):
        for mid, number in read(session, statement, {"ids": ids}):
            found.setdefault(mid, number)
    for mid in reversed(ids):  # References lists oldest first; the last named wins
        if mid in found:
            return found[mid]
    return None


def customer_addresses(session: Session, case: Case) -> list[str]:
    """Requester first, then participants: the customer side of a case."""
    out = [case.requester.email]
    for p in case.participants:
        if p.contact.email not in out:
            out.append(p.contact.email)
    return out


def add_participant(session: Session, case: Case, contact: Contact) -> bool:
    if contact.id == case.requester_id or any(p.contact_id == contact.id for p in case.participants):
        return False
    case.participants.append(CaseParticipant(contact=contact))
    return True


def _written(session: Session, case: Case) -> int:
    """The case's number, flushing a case that is still pending: history and events are Core
    INSERTs that refer to its row."""
    if case.number is None:
        session.flush()
    return case.number


def record_change(session: Session, case: Case, *, field: str, old: Any, new: Any, actor: str,
                  via: str, now: datetime, rule: str | None = None) -> None:
    """Written at once (store.rows): `case.history`, if already loaded, does not show it."""
    insert_rows(session, [HistoryEntry(case_number=_written(session, case), actor=actor, via=via, rule=rule,
                                       field=field, old_value=None if old is None else str(old),
                                       new_value=None if new is None else str(new), created_at=now)])


def record_event(session: Session, case: Case, kind: str, actor: str, now: datetime,
                 **data: Any) -> Event:
    """Written at once (store.rows); the returned event is for this transaction's fan-out."""
    event = Event(case_number=_written(session, case), kind=kind, actor=actor, data=data, created_at=now)
    insert_rows(session, [event])
    return event


def stream_message_ids(session: Session, case_number: int, limit: int = 20) -> list[str]:
    """Message-IDs of a case's stream, oldest first, for References of outbound mail."""
    rows: list[tuple[datetime, str]] = []
    for statement in (_STREAM_STORED, _STREAM_SENT):
        rows += [(t, m) for m, t in read(session, statement, {"case": case_number})]
    ids = [m for _, m in sorted(rows)]
    if len(ids) > limit:  # keep the root and the most recent, as RFC 5322 suggests
        ids = ids[:1] + ids[-(limit - 1):]
    return ids
