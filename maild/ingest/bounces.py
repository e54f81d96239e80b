"""Bounces (DSNs): they never open a case; a believed one notes the failure on the case and
marks the address as bouncing, so no automatic mail goes there until it writes again (SPEC §11).
A temporary failure (a delay, a 4.x.x status: the mail server keeps trying) is only noted on
the case and marks no one.

A bounce is believed only when it refers to mail maild sent: its envelope recipient is a VERP
return path maild issued (`bounces+<signed token>@…`), or it returns the Message-ID of an
outbound mail. Then the address that bounced is that mail's recipient, whatever the DSN says:
anyone can write a DSN naming someone else's address, so one from anywhere else changes nothing
and is quarantined with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from maild.domain.message import InboundMessage
from maild.domain.outcome import Outcome, Quarantined
from maild.ingest.delivery import Delivery
from maild.notify.fanout import queue_notifications
from maild.rules.loops import Classification
from maild.runtime import Runtime
from maild.store import cases as case_store
from maild.store.models import Case, Contact, Message, OutboxMail, Post
from maild.store.rows import insert_row, read
from maild.threading.tokens import verify_bounce_address

log = structlog.get_logger("maild.bounces")

NOT_OURS = "bounce of mail not sent by maild"

_SENT_BY_ID = select(OutboxMail.message_id, OutboxMail.case_number, OutboxMail.recipient).where(
    OutboxMail.message_id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class BouncedMail:
    """One of maild's own mails that a bounce refers to."""

    message_id: str
    case_number: int | None
    recipient: str


def original_message_ids(msg: InboundMessage) -> list[str]:
    """Message-IDs of the mail that bounced, from the DSN's returned headers or message."""
    return list(msg.in_reply_to) + list(msg.references) + list(msg.returned_message_ids)


def bounced_mails(session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> tuple[list[BouncedMail],
                                                                                                     str]:
    """maild's mails the bounce refers to, and how that was found ("verp" or "message-id")."""
    hostname = rt.config.server.hostname
    verp = [local for r in delivery.recipients if (local := verify_bounce_address(rt.secret, r)) is not None]
    if verp:
        ids = [f"{local}@{hostname}" for local in verp]
        found = [BouncedMail(*row) for row in read(session, _SENT_BY_ID, {"ids": ids})]
        if not found:  # issued under another hostname: the token's hex is the Message-ID's left part
            like = [session.execute(select(OutboxMail.message_id, OutboxMail.case_number, OutboxMail.recipient)
                                    .where(OutboxMail.message_id.like(f"{local}@%"))).first() for local in verp]
            found = [BouncedMail(*row) for row in like if row is not None]
        if found:
            return found, "verp"
    ids = [i for i in original_message_ids(msg) if i]
    found = [BouncedMail(*row) for row in read(session, _SENT_BY_ID, {"ids": ids})] if ids else []
    return found, "message-id"


def _split(mails: list[BouncedMail], classification: Classification) -> tuple[list[str], list[str]]:
    """maild's recipients that failed for good, and those only delayed. The bounce's own list says
    which is which; a recipient it does not name (an alias the DSN rewrote) fails for good unless the
    bounce reports delays only."""
    permanent, temporary = set(classification.bounced_addresses), set(classification.delayed_addresses)
    only_delays = bool(temporary) and not permanent
    failed: list[str] = []
    delayed: list[str] = []
    for address in dict.fromkeys(m.recipient for m in mails):
        if address not in permanent and (address in temporary or only_delays):
            delayed.append(address)
        else:
            failed.append(address)
    return failed, delayed


def _delay_reason(msg: InboundMessage, address: str) -> str:
    named = msg.bounce_diagnostics.get(address) or next(iter(msg.bounce_diagnostics.values()), "")
    return " ".join(named.split())[:300] or "the mail server keeps trying"


def ingest_bounce(session: Session, msg: InboundMessage, stored: Message, classification: Classification,
                  delivery: Delivery, rt: Runtime) -> Outcome:
    """A believed DSN notes the failure on the case (and marks the address when it failed for
    good); any other is quarantined."""
    now = rt.clock()
    mails, how = bounced_mails(session, msg, delivery, rt)
    if not mails:
        log.warning("bounce not believed", message_id=msg.message_id, reason=NOT_OURS,
                    named=classification.bounced_addresses, delayed=classification.delayed_addresses)
        raise Quarantined(NOT_OURS, Outcome("quarantined", None, "none", "bounce", acknowledgement="none: bounce",
                                            bounced_addresses=list(classification.bounced_addresses),
                                            delayed_addresses=list(classification.delayed_addresses),
                                            reason=NOT_OURS))
    failed, delayed = _split(mails, classification)
    for address in failed:
        contact = session.scalars(select(Contact).where(Contact.email == address)).first()
        if contact is not None:
            contact.state = "bouncing"
    number = next((m.case_number for m in mails if m.case_number is not None), None)
    log.info("bounce believed", message_id=msg.message_id, by=how, bounced=failed, delayed=delayed, case=number,
             detector=classification.reason)
    stored.case_number = number
    stored.matched_by = how if number else "none"
    insert_row(session, stored)
    if number is not None:
        case = session.get(Case, number)
        assert case is not None
        lines = []
        if failed:
            lines.append(f"Delivery failed to {', '.join(failed)}. No automatic mail goes there until it writes again.")
        lines += [f"Delivery to {address} is delayed: {_delay_reason(msg, address)}" for address in delayed]
        post = Post(case_number=number, message_pk=stored.id, visibility="internal", author="system",
                    author_kind="system", source="system", body="\n".join(lines), created_at=now)
        insert_row(session, post)
        event = case_store.record_event(session, case, "post_internal", "system", now, post=post.id)
        queue_notifications(session, rt, case, [event], post=post, in_reply_to=msg.message_id)
    return Outcome("bounce", number, stored.matched_by, "bounce",
                   visibility="internal" if number else None, acknowledgement="none: bounce",
                   bounced_addresses=failed, delayed_addresses=delayed,
                   reason=f"bounce believed: it names mail maild sent ({how}); read by {classification.reason}")
