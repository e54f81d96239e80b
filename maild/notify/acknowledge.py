"""The acknowledgement of a new case (SPEC §10) to its customer side, with the loop
protections of SPEC §11.

Written to the outbox in the case's own transaction. The refusal functions say why none
goes out, so the log can tell a person.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from maild.domain.message import InboundMessage
from maild.notify.audiences import Recipient
from maild.notify.casemail import CaseMail, queue_case_mail
from maild.rules.authresults import sender_authentication
from maild.rules.loops import Classification
from maild.runtime import Runtime
from maild.store.contacts import unmailed_contacts
from maild.store.models import Case, Contact
from maild.store.outbox import count_sent_to


def message_refusal(rt: Runtime, msg: InboundMessage, classification: Classification) -> str | None:
    """Why this mail gets no automatic answer at all, or None."""
    if not rt.config.notify.acknowledge:
        return "acknowledgements are off ([notify] acknowledge)"
    if not classification.automatic_reply_allowed:
        return classification.reason or classification.no_auto_reason or classification.kind
    failed = sender_authentication(msg, rt.config.auth.trusted_authserv_ids).failed
    if failed:
        method, result = failed[0]
        return f"sender failed {method.upper()} ({result})"
    return None


def recipient_refusal(session: Session, rt: Runtime, contact: Contact) -> str | None:
    """Why this address gets no automatic mail now, or None."""
    cfg = rt.config
    if contact.state == "bouncing":
        return f"{contact.email} is bouncing"
    if contact.email in rt.mailbox_addresses or contact.email in rt.agent_addresses:
        return f"{contact.email} is one of our own addresses"
    now = rt.clock()
    if contact.email in unmailed_contacts(session):
        return None  # first seen in this transaction, and nothing queued to it yet
    acks, automatic = count_sent_to(session, contact.email, kind="case_created", kind_since=now - timedelta(hours=1),
                                    automatic_since=now - timedelta(days=1))
    if acks >= cfg.protection.ack_per_hour:
        return f"rate limit: {cfg.protection.ack_per_hour} acknowledgements an hour to {contact.email}"
    if automatic >= cfg.protection.auto_mail_per_day:
        return f"daily cap: {cfg.protection.auto_mail_per_day} automatic mails a day to {contact.email}"
    return None


def acknowledge_case(session: Session, rt: Runtime, case: Case, msg: InboundMessage,
                     classification: Classification, template: str = "case_created") -> str:
    """Queues one acknowledgement per customer-side address (a rule's `auto_reply` may name
    another template); returns what happened, for the log."""
    refusal = message_refusal(rt, msg, classification)
    if refusal:
        return f"none: {refusal}"
    notes = []
    limit = rt.config.protection.max_acks_per_mail  # one mail must not set off a flood (SPEC §11)
    queued = 0
    for contact in [case.requester, *(p.contact for p in case.participants)]:
        refusal = (f"limit: {limit} acknowledgements a mail" if queued >= limit else
                   recipient_refusal(session, rt, contact))
        if refusal:
            notes.append(f"{contact.email}: none ({refusal})")
            continue
        queue_acknowledgement(session, rt, case, msg, contact, template)
        queued += 1
        notes.append(f"{contact.email}: queued")
    return "; ".join(notes)


def queue_acknowledgement(session: Session, rt: Runtime, case: Case, msg: InboundMessage,
                          recipient: Contact, template: str = "case_created") -> str:
    """Queues the acknowledgement in the outbox; returns its Message-ID."""
    return queue_case_mail(session, rt, case, CaseMail(
        template=template, recipient=Recipient(recipient.email, recipient.name, "customer"),
        auto_submitted="auto-replied", in_reply_to=msg.message_id,
    ))
