"""One mail about a case to one recipient, written to the outbox in the caller's transaction as
data (the outbox worker renders it: notify.outgoing): the headers every case mail carries
(SPEC §4, §11) in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.orm import Session

from maild.headers import is_mail_address
from maild.notify.audiences import Recipient
from maild.notify.compose import new_message_id
from maild.notify.mailcontext import dump_context
from maild.notify.outgoing import Headers
from maild.notify.render import SharedRenders
from maild.runtime import Runtime
from maild.store.cases import FORWARD, Stream, references, stream_message_ids
from maild.store.contacts import unmailed_contacts
from maild.store.models import Attachment, Case
from maild.store.outbox import enqueue_mail
from maild.store.transaction import tx_state
from maild.threading.tokens import bounce_address, make_token, reply_address

log = structlog.get_logger("maild.notify")


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


def _streams(session: Session, case_number: int) -> Stream:
    """The case's Message-IDs for References, per audience, read once a transaction (a new
    case's mails would otherwise query them once each)."""
    cache: dict[int, Stream] = tx_state(session).streams
    if case_number not in cache:
        cache[case_number] = stream_message_ids(session, case_number)
    return cache[case_number]


def start_stream(session: Session, case_number: int, message_ids: list[str]) -> None:
    """A case opened in this transaction: its stream is what we just stored, no query needed
    (the mail that opens a case is the customer side's own, so both audiences know it)."""
    tx_state(session).streams[case_number] = Stream(list(message_ids), list(message_ids))


def to_customer_side(mail: CaseMail) -> bool:
    """Whether `mail` goes to the case's customer side (requester, participants): then it names
    only what they saw. A forward goes to a third party, who is no part of the conversation."""
    return mail.recipient.kind == "customer" and mail.template != FORWARD


def _threading(session: Session, case: Case, mail: CaseMail) -> tuple[str | None, list[str]]:
    """In-Reply-To and References of `mail`. The customer side's are built only from the mails it
    sent or was sent (SPEC §4): an In-Reply-To naming anything else (an agent's internal note,
    the agent's own mail) becomes the newest mail the customer side saw."""
    streams = _streams(session, case.number)
    if to_customer_side(mail):
        seen = streams.customers
        in_reply_to = mail.in_reply_to if mail.in_reply_to in seen else (seen[-1] if seen else None)
        return in_reply_to, references(seen)
    refs = references(streams.agents)
    if mail.in_reply_to and mail.in_reply_to not in refs:
        refs.append(mail.in_reply_to)
    return mail.in_reply_to, refs


def queue_case_mail(session: Session, rt: Runtime, case: Case, mail: CaseMail,
                    renders: SharedRenders | None = None) -> str | None:
    """Writes `mail` to the outbox as data; returns its Message-ID. The Reply-To token is the
    customer side's for customers and the recipient's own for agents. None, and logged, for an
    address no header can carry (neither plain nor internationalized as RFC 6531 has it: a
    contact of older data): the mail that caused it is not lost over one mail out. `renders`:
    no longer used (the outbox worker shares renders of one fan-out), kept for callers."""
    name = mailbox_name(rt, case)
    rcpt = mail.recipient
    if not is_mail_address(rcpt.email):
        log.warning("no mail to an address that is not a mail address", recipient=rcpt.email, case=case.number,
                    kind=mail.template)
        return None
    agent = rcpt.email if rcpt.kind == "agent" else None
    token = make_token(rt.secret, case.number, agent, internal=mail.internal_token)
    context = {"case": case, "requester": case.requester, "mailbox": case.mailbox, "mailbox_name": name,
               **mail.context}
    now = rt.clock()
    message_id = new_message_id(rt.config.server.hostname)
    in_reply_to, refs = _threading(session, case, mail)
    headers = Headers(
        to=rcpt.email, to_name=rcpt.name, to_kind=rcpt.kind, mail_from=case.mailbox,
        from_name=mail.from_name or name, reply_to=reply_address(case.mailbox, token), in_reply_to=in_reply_to,
        references=refs, auto_submitted=mail.auto_submitted,
        attachments=[(a.filename, a.content_type, a.sha256) for a in mail.attachments])
    streams = _streams(session, case.number)
    streams.agents.append(message_id)
    if to_customer_side(mail):
        streams.customers.append(message_id)
    unmailed_contacts(session).discard(rcpt.email)
    enqueue_mail(session, case_number=case.number, message_id=message_id, kind=mail.template,
                 mail_from=bounce_address(case.mailbox, rt.secret, message_id), recipient=rcpt.email,
                 context=dump_context(context), headers=headers.as_json(),
                 automatic=mail.auto_submitted is not None, now=now)
    return message_id
