"""Bounces (DSNs): they never open a case; they note the failure on the case and mark the
address as bouncing, so no automatic mail goes there until it writes again (SPEC §11)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.ingest.delivery import Outcome
from maild.ingest.parse import InboundMessage
from maild.notify.fanout import queue_notifications
from maild.rules.loops import Classification
from maild.runtime import Runtime
from maild.store import cases as case_store
from maild.store.models import Case, Contact, Message, Post
from maild.store.rows import insert_row


def original_message_ids(msg: InboundMessage) -> list[str]:
    """Message-IDs of the mail that bounced, from the DSN's returned headers or message."""
    return list(msg.in_reply_to) + list(msg.references) + list(msg.returned_message_ids)


def ingest_bounce(session: Session, msg: InboundMessage, stored: Message,
                   classification: Classification, rt: Runtime) -> Outcome:
    """A DSN never opens a case: it notes the failure on the case and marks the address."""
    now = rt.clock()
    number = case_store.case_by_message_ids(session, original_message_ids(msg))
    for address in classification.bounced_addresses:
        contact = session.scalars(select(Contact).where(Contact.email == address)).first()
        if contact is not None:
            contact.state = "bouncing"
    stored.case_number = number
    stored.matched_by = "references" if number else "none"
    insert_row(session, stored)
    if number is not None:
        case = session.get(Case, number)
        assert case is not None
        failed = ", ".join(classification.bounced_addresses) or "an unknown address"
        post = Post(case_number=number, message_pk=stored.id, visibility="internal", author="system",
                    author_kind="system", source="system",
                    body=f"Delivery failed to {failed}. No automatic mail goes there until it writes again.",
                    created_at=now)
        insert_row(session, post)
        event = case_store.record_event(session, case, "post_internal", "system", now, post=post.id)
        queue_notifications(session, rt, case, [event], post=post, in_reply_to=msg.message_id)
    return Outcome("bounce", number, stored.matched_by, "bounce",
                   visibility="internal" if number else None, acknowledgement="none: bounce",
                   bounced_addresses=list(classification.bounced_addresses))
