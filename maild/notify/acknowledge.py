"""The acknowledgement of a new case (SPEC §10), with the loop protections of SPEC §11.

Written to the outbox in the case's own transaction; `acknowledgement_refusal` says why
none goes out, so the log can tell a person.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from maild.ingest.parse import InboundMessage
from maild.notify.compose import compose_mail, new_message_id
from maild.rules.loops import Classification, authentication_results
from maild.runtime import Runtime
from maild.store.cases import stream_message_ids
from maild.store.models import Case
from maild.store.outbox import count_sent_to, enqueue_mail
from maild.threading.tokens import make_token, reply_address


def acknowledgement_refusal(session: Session, rt: Runtime, case: Case, msg: InboundMessage,
                            classification: Classification) -> str | None:
    cfg = rt.config
    if not cfg.notify.acknowledge:
        return "acknowledgements are off ([notify] acknowledge)"
    if not classification.automatic_reply_allowed:
        return classification.reason or classification.no_auto_reason or classification.kind
    requester = case.requester
    if requester.state == "bouncing":
        return f"{requester.email} is bouncing"
    if requester.email in rt.mailbox_addresses or requester.email in rt.agent_addresses:
        return f"{requester.email} is one of our own addresses"
    auth = authentication_results(msg, cfg.auth.trusted_authserv_ids)
    for method in ("dmarc", "spf"):
        if auth.get(method) in ("fail", "permerror"):
            return f"sender failed {method.upper()} ({auth[method]})"
    now = rt.clock()
    if count_sent_to(session, requester.email, now - timedelta(hours=1),
                     kind="case_created") >= cfg.protection.ack_per_hour:
        return f"rate limit: {cfg.protection.ack_per_hour} acknowledgements an hour to {requester.email}"
    if count_sent_to(session, requester.email, now - timedelta(days=1),
                     automatic=True) >= cfg.protection.auto_mail_per_day:
        return f"daily cap: {cfg.protection.auto_mail_per_day} automatic mails a day to {requester.email}"
    return None


def queue_acknowledgement(session: Session, rt: Runtime, case: Case, msg: InboundMessage) -> str:
    """Renders the acknowledgement into the outbox; returns its Message-ID."""
    mailbox = rt.config.mailbox(case.mailbox)
    mailbox_name = (mailbox.name if mailbox and mailbox.name else None) or "Support"
    requester = case.requester
    rendered = rt.renderer.render("case_created", {
        "case": case, "requester": requester, "mailbox": case.mailbox, "mailbox_name": mailbox_name,
    })
    now = rt.clock()
    message_id = new_message_id(rt.config.server.hostname)
    references = stream_message_ids(session, case.number)
    if msg.message_id and msg.message_id not in references:
        references.append(msg.message_id)
    raw = compose_mail(
        mail_from=case.mailbox, from_name=mailbox_name, to=requester.email, to_name=requester.name,
        reply_to=reply_address(case.mailbox, make_token(rt.secret, case.number)),
        subject=rendered.subject, text=rendered.text, html=rendered.html, message_id=message_id,
        in_reply_to=msg.message_id, references=references, now=now, auto_submitted="auto-replied",
    )
    enqueue_mail(session, case_number=case.number, message_id=message_id, kind="case_created",
                 mail_from=case.mailbox, recipient=requester.email, raw=raw, automatic=True, now=now)
    return message_id
