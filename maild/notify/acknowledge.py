"""The acknowledgement of a new case (SPEC §10) to its customer side, with the loop
protections of SPEC §11.

Written to the outbox in the case's own transaction. The refusal functions say why none
goes out, so the log can tell a person.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from maild.ingest.parse import InboundMessage
from maild.notify.compose import compose_mail, new_message_id
from maild.rules.loops import Classification, authentication_results
from maild.runtime import Runtime
from maild.store.cases import stream_message_ids
from maild.store.models import Case, Contact
from maild.store.outbox import count_sent_to, enqueue_mail
from maild.threading.tokens import make_token, reply_address


def message_refusal(rt: Runtime, msg: InboundMessage, classification: Classification) -> str | None:
    """Why this mail gets no automatic answer at all, or None."""
    if not rt.config.notify.acknowledge:
        return "acknowledgements are off ([notify] acknowledge)"
    if not classification.automatic_reply_allowed:
        return classification.reason or classification.no_auto_reason or classification.kind
    auth = authentication_results(msg, rt.config.auth.trusted_authserv_ids)
    for method in ("dmarc", "spf"):
        if auth.get(method) in ("fail", "permerror"):
            return f"sender failed {method.upper()} ({auth[method]})"
    return None


def recipient_refusal(session: Session, rt: Runtime, contact: Contact) -> str | None:
    """Why this address gets no automatic mail now, or None."""
    cfg = rt.config
    if contact.state == "bouncing":
        return f"{contact.email} is bouncing"
    if contact.email in rt.mailbox_addresses or contact.email in rt.agent_addresses:
        return f"{contact.email} is one of our own addresses"
    now = rt.clock()
    if count_sent_to(session, contact.email, now - timedelta(hours=1),
                     kind="case_created") >= cfg.protection.ack_per_hour:
        return f"rate limit: {cfg.protection.ack_per_hour} acknowledgements an hour to {contact.email}"
    if count_sent_to(session, contact.email, now - timedelta(days=1),
                     automatic=True) >= cfg.protection.auto_mail_per_day:
        return f"daily cap: {cfg.protection.auto_mail_per_day} automatic mails a day to {contact.email}"
    return None


def acknowledge_case(session: Session, rt: Runtime, case: Case, msg: InboundMessage,
                     classification: Classification) -> str:
    """Queues one acknowledgement per customer-side address; returns what happened, for the log."""
    refusal = message_refusal(rt, msg, classification)
    if refusal:
        return f"none: {refusal}"
    notes = []
    for contact in [case.requester, *(p.contact for p in case.participants)]:
        refusal = recipient_refusal(session, rt, contact)
        if refusal:
            notes.append(f"{contact.email}: none ({refusal})")
            continue
        queue_acknowledgement(session, rt, case, msg, contact)
        notes.append(f"{contact.email}: queued")
    return "; ".join(notes)


def queue_acknowledgement(session: Session, rt: Runtime, case: Case, msg: InboundMessage,
                          recipient: Contact) -> str:
    """Renders the acknowledgement into the outbox; returns its Message-ID."""
    mailbox = rt.config.mailbox(case.mailbox)
    mailbox_name = (mailbox.name if mailbox and mailbox.name else None) or "Support"
    rendered = rt.renderer.render("case_created", {
        "case": case, "requester": case.requester, "recipient": recipient, "mailbox": case.mailbox,
        "mailbox_name": mailbox_name,
    })
    now = rt.clock()
    message_id = new_message_id(rt.config.server.hostname)
    references = stream_message_ids(session, case.number)
    if msg.message_id and msg.message_id not in references:
        references.append(msg.message_id)
    raw = compose_mail(
        mail_from=case.mailbox, from_name=mailbox_name, to=recipient.email, to_name=recipient.name,
        reply_to=reply_address(case.mailbox, make_token(rt.secret, case.number)),
        subject=rendered.subject, text=rendered.text, html=rendered.html, message_id=message_id,
        in_reply_to=msg.message_id, references=references, now=now, auto_submitted="auto-replied",
    )
    enqueue_mail(session, case_number=case.number, message_id=message_id, kind="case_created",
                 mail_from=case.mailbox, recipient=recipient.email, raw=raw, automatic=True, now=now)
    return message_id
