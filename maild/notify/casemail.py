"""One mail about a case to one recipient, rendered and written to the outbox in the caller's
transaction: the headers every case mail carries (SPEC §4, §11) in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from maild.notify.audiences import Recipient
from maild.notify.compose import compose_mail, new_message_id
from maild.notify.render import SharedRenders
from maild.runtime import Runtime
from maild.store.cases import stream_message_ids
from maild.store.contacts import unmailed_contacts
from maild.store.models import Attachment, Case
from maild.store.outbox import enqueue_mail
from maild.threading.tokens import make_token, reply_address


@dataclass
class CaseMail:
    template: str
    recipient: Recipient
    context: dict[str, Any] = field(default_factory=dict)
    auto_submitted: str | None = "auto-generated"  # None: a person's reply (an agent's public post)
    internal_token: bool = False  # replies to this mail stay internal (note notifications)
    from_name: str | None = None
    in_reply_to: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def mailbox_name(rt: Runtime, case: Case) -> str:
    mailbox = rt.config.mailbox(case.mailbox)
    return (mailbox.name if mailbox and mailbox.name else None) or "Support"


def _stream(session: Session, case_number: int) -> list[str]:
    """The case's Message-IDs for References, read once a transaction (a new case's mails
    would otherwise query it once each)."""
    cache: dict[int, list[str]] = session.info.setdefault("maild.stream_ids", {})
    if case_number not in cache:
        cache[case_number] = stream_message_ids(session, case_number)
    return cache[case_number]


def start_stream(session: Session, case_number: int, message_ids: list[str]) -> None:
    """A case opened in this transaction: its stream is what we just stored, no query needed."""
    session.info.setdefault("maild.stream_ids", {})[case_number] = list(message_ids)


def queue_case_mail(session: Session, rt: Runtime, case: Case, mail: CaseMail,
                    renders: SharedRenders | None = None) -> str:
    """Renders `mail` into the outbox; returns its Message-ID. The Reply-To token is the
    customer side's for customers and the recipient's own for agents. `renders`: mails of
    one fan-out, rendered once where they read alike."""
    name = mailbox_name(rt, case)
    rcpt = mail.recipient
    agent = rcpt.email if rcpt.kind == "agent" else None
    token = make_token(rt.secret, case.number, agent, internal=mail.internal_token)
    context = {"case": case, "recipient": rcpt, "requester": case.requester, "mailbox": case.mailbox,
               "mailbox_name": name, **mail.context}
    rendered = (renders or rt.renderer).render(mail.template, context)
    now = rt.clock()
    message_id = new_message_id(rt.config.server.hostname)
    references = list(_stream(session, case.number))
    if mail.in_reply_to and mail.in_reply_to not in references:
        references.append(mail.in_reply_to)
    files = [(a.filename, a.content_type, rt.attachment_store.get(a.sha256)) for a in mail.attachments]
    raw = compose_mail(
        mail_from=case.mailbox, from_name=mail.from_name or name, to=rcpt.email, to_name=rcpt.name,
        reply_to=reply_address(case.mailbox, token), subject=rendered.subject, text=rendered.text,
        html=rendered.html, message_id=message_id, in_reply_to=mail.in_reply_to, references=references, now=now,
        auto_submitted=mail.auto_submitted, attachments=files,
    )
    _stream(session, case.number).append(message_id)
    unmailed_contacts(session).discard(rcpt.email)
    enqueue_mail(session, case_number=case.number, message_id=message_id, kind=mail.template,
                 mail_from=case.mailbox, recipient=rcpt.email, raw=raw, automatic=mail.auto_submitted is not None,
                 now=now)
    return message_id
