"""Case reads and writes the pipeline needs: lookups for matching, history, events. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, select, union_all
from sqlalchemy.orm import Session

from maild.store.models import (
    Case,
    CaseParticipant,
    Contact,
    Event,
    HistoryEntry,
    Message,
    OutboxMail,
    Post,
)
from maild.store.rows import insert_rows, read

# Statements of every mail, built once: building one costs more than running it.
_CASES_OF_STORED = select(Message.message_id, Message.case_number).where(
    Message.message_id.in_(bindparam("ids", expanding=True)), Message.case_number.is_not(None))
_CASES_OF_SENT = select(OutboxMail.message_id, OutboxMail.case_number).where(
    OutboxMail.message_id.in_(bindparam("ids", expanding=True)), OutboxMail.case_number.is_not(None))
# A case's stream with what says whether the customer side saw each mail (SPEC §4): a stored
# mail is theirs when its post is public and written by the customer side; a sent one, when it
# went to the requester or a participant and is not a forward to a third party.
FORWARD = "forward"  # the outbox kind of /forward mails
_STREAM_STORED = (
    select(Message.message_id, Message.received_at, Message.id,
           and_(Post.visibility == bindparam("public"), Post.author_kind == bindparam("customer")))
    .outerjoin(Post, and_(Post.message_pk == Message.id, Post.case_number == Message.case_number))
    .where(Message.case_number == bindparam("case"), Message.message_id.is_not(None)))
_CUSTOMER_SIDE = union_all(
    select(Contact.email).join(Case, Case.requester_id == Contact.id).where(Case.number == bindparam("case")),
    select(Contact.email).join(CaseParticipant, CaseParticipant.contact_id == Contact.id)
    .where(CaseParticipant.case_number == bindparam("case")))
_STREAM_SENT = (
    select(OutboxMail.message_id, OutboxMail.created_at, OutboxMail.id,
           and_(OutboxMail.kind != bindparam("forward"), OutboxMail.recipient.in_(_CUSTOMER_SIDE)))
    .where(OutboxMail.case_number == bindparam("case")))


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


@dataclass
class Stream:
    """A case's Message-IDs, oldest first, for References of outbound mail: every one for agents,
    and for the customer side only the mails it sent or was sent (never an internal note, an
    agent's own mail or a notification to an agent: SPEC §4)."""

    agents: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)


def stream_message_ids(session: Session, case_number: int) -> Stream:
    """Both audiences' streams of a case from one query per table (the same two as one stream took)."""
    mails: dict[str, tuple[tuple[datetime, int, int], bool]] = {}
    params = {"case": case_number, "public": "public", "customer": "customer", "forward": FORWARD}
    for table, statement in enumerate((_STREAM_STORED, _STREAM_SENT)):
        for mid, at, pk, seen in read(session, statement, params):
            # at one time, a stored mail comes before maild's answers to it, each table in its order;
            # a mail with two posts comes back twice from the outer join: seen if either is public
            mails[mid] = ((at, table, pk), bool(seen) or (mid in mails and mails[mid][1]))
    stream = Stream()
    for mid, (_, seen) in sorted(mails.items(), key=lambda item: item[1][0]):
        stream.agents.append(mid)
        if seen:
            stream.customers.append(mid)
    return stream


def references(stream: list[str], limit: int = 20) -> list[str]:
    """The root and the most recent of a stream, as RFC 5322 suggests for long threads."""
    return stream[:1] + stream[-(limit - 1):] if len(stream) > limit else list(stream)
