"""The one place to read to know what maild does with a mail.

`ingest_message` takes a parsed mail and the session of the caller's transaction and
writes everything the mail causes — message, contact, organization, case, post,
attachments, history, events, outbox rows — without committing. SMTP and IMAP are thin
adapters around it; they commit, and only then answer 250 or move the IMAP message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.config import MailboxConfig
from maild.ingest.parse import InboundMessage, message_ids
from maild.notify.acknowledge import acknowledge_case
from maild.rules.loops import Classification, classify
from maild.runtime import Runtime
from maild.store import cases as case_store
from maild.store.contacts import ensure_contact
from maild.store.models import Attachment, Case, Contact, Message, Post
from maild.threading.match import Match, match_case
from maild.threading.reply import extract_reply
from maild.threading.subject import CASE_TAG_RE, strip_prefixes
from maild.threading.tokens import agent_key, split_plus_address

REOPENING_STAGES = ("pending", "resolved")


@dataclass(frozen=True)
class Delivery:
    """How a mail reached one mailbox: its envelope, as the adapter saw it."""

    mailbox: MailboxConfig
    recipients: list[str]
    envelope_sender: str | None  # "" is the empty return path; None: not known (IMAP)
    via: str = "smtp"


@dataclass
class Outcome:
    action: str  # created | threaded | duplicate | bounce | ignored
    case_number: int | None
    matched_by: str
    classification: str
    visibility: str | None = None
    acknowledgement: str | None = None  # who was acknowledged, or why not
    events: list[str] = field(default_factory=list)


class DbLookup:
    """`CaseLookup` over the session, for threading.match."""

    def __init__(self, session: Session, agents: set[str]):
        self.session = session
        self.agents = agents

    def case_exists(self, number: int) -> bool:
        return self.session.get(Case, number) is not None

    def case_by_message_ids(self, ids: list[str]) -> int | None:
        return case_store.case_by_message_ids(self.session, ids)

    def takes_part(self, number: int, address: str) -> bool:
        if address in self.agents:
            return True
        case = self.session.get(Case, number)
        return case is not None and address in case_store.customer_addresses(self.session, case)


def dedup_key(msg: InboundMessage) -> str:
    return msg.message_id or f"sha256:{msg.sha256}"


def ingest_message(session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> Outcome:
    cfg = rt.config
    mailbox = delivery.mailbox.address.lower()
    key = dedup_key(msg)
    existing = session.scalars(select(Message).where(Message.mailbox == mailbox,
                                                     Message.dedup_key == key)).first()
    if existing is not None:
        return Outcome("duplicate", existing.case_number, "duplicate", existing.classification)

    now = rt.clock()
    classification = classify(msg, delivery.envelope_sender, rt.mailbox_addresses, cfg.server.hostname)
    rt.raw_store.put(msg.raw, msg.sha256)
    stored = Message(mailbox=mailbox, message_id=msg.message_id, dedup_key=key, sha256=msg.sha256,
                     size=msg.size, from_address=msg.sender.address if msg.sender else "",
                     subject=msg.subject[:2000], classification=classification.kind, received_at=now)
    session.add(stored)

    if classification.kind == "bounce":
        return _ingest_bounce(session, msg, stored, classification, rt)

    lookup = DbLookup(session, rt.agent_addresses)
    match = match_case(msg, delivery.recipients, rt.mailbox_addresses, rt.secret, lookup)
    sender_address = msg.sender.address if msg.sender else (delivery.envelope_sender or "").lower()
    if not sender_address:
        stored.matched_by = match.rule
        return Outcome("ignored", None, match.rule, classification.kind,
                       acknowledgement="no sender address")
    sender = ensure_contact(session, sender_address, msg.sender.name if msg.sender else "",
                            cfg.organizations, now)
    if sender.state == "bouncing":
        sender.state = "active"  # it writes again
    sender.last_mail_at = now
    is_agent = _is_agent_by_token(match, sender_address, rt)

    case = session.get(Case, match.case_number) if match.case_number is not None else None
    linked: int | None = None
    if case is not None and case.stage == "closed" and not is_agent:
        linked, case = case.number, None  # a reply to a closed case opens a new, linked one
    created = case is None
    if case is None:
        case = _open_case(session, msg, delivery, sender, linked, now)
        case_store.record_event(session, case, "case_created", sender_address, now)
    elif not is_agent and case.stage in REOPENING_STAGES:
        case_store.record_change(session, case, field="stage", old=case.stage, new="open",
                                 actor=sender_address, via="mail", now=now)
        case_store.record_event(session, case, "stage_changed", sender_address, now,
                                old=case.stage, new="open")
        case.stage = "open"
    case.updated_at = now
    stored.case_number = case.number
    stored.matched_by = "new" if created else match.rule

    if not is_agent and cfg.contacts.cc_participants:
        _add_cc_participants(session, msg, case, sender_address, rt)

    # Until agent replies by mail land (issue 4), an agent's mail stays internal: never leak.
    visibility = "internal" if is_agent else "public"
    post = _add_post(session, msg, stored, case, sender_address, "agent" if is_agent else "customer",
                     visibility, rt)
    events = ["case_created"] if created else []
    if not created:
        case_store.record_event(session, case, f"post_{visibility}", sender_address, now, post=post.id)
        events.append(f"post_{visibility}")

    ack = acknowledge_case(session, rt, case, msg, classification) if created else None
    return Outcome("created" if created else "threaded", case.number, stored.matched_by,
                   classification.kind, visibility=visibility, acknowledgement=ack, events=events)


def _is_agent_by_token(match: Match, sender: str, rt: Runtime) -> bool:
    token = match.token
    return (token is not None and token.agent_key is not None and sender in rt.agent_addresses
            and token.agent_key == agent_key(sender))


def _open_case(session: Session, msg: InboundMessage, delivery: Delivery, requester: Contact,
               linked: int | None, now: object) -> Case:
    subject = " ".join(strip_prefixes(CASE_TAG_RE.sub(" ", msg.subject)).split()) or "(no subject)"
    case = Case(subject=subject, mailbox=delivery.mailbox.address.lower(), queue=delivery.mailbox.team,
                stage="new", type="question", priority="normal", requester=requester,
                organization_id=requester.organization_id, linked_case=linked, fields={},
                created_at=now, updated_at=now)
    session.add(case)
    session.flush()  # the database hands out the case number
    return case


def _add_cc_participants(session: Session, msg: InboundMessage, case: Case, sender: str,
                         rt: Runtime) -> None:
    own = rt.mailbox_addresses | rt.agent_addresses
    for a in msg.to + msg.cc:
        if a.address == sender or split_plus_address(a.address)[0] in own:
            continue
        contact = ensure_contact(session, a.address, a.name, rt.config.organizations, rt.clock())
        case_store.add_participant(session, case, contact)


def _add_post(session: Session, msg: InboundMessage, stored: Message, case: Case, author: str,
              author_kind: str, visibility: str, rt: Runtime) -> Post:
    reply = extract_reply(msg.text, msg.html)
    body = reply.text if reply.text.strip() else msg.text
    post = Post(case_number=case.number, message=stored, visibility=visibility, author=author,
                author_kind=author_kind, source="email", body=body, html=msg.html,
                created_at=rt.clock())
    session.add(post)
    for a in msg.attachments:
        sha = rt.attachment_store.put(a.data)
        post.attachments.append(Attachment(filename=_safe_filename(a.filename), content_type=a.content_type,
                                           size=len(a.data), sha256=sha, content_id=a.content_id,
                                           inline=a.inline))
    session.flush()
    return post


def _safe_filename(name: str) -> str:
    """A display name only (bytes are stored by hash): no paths, controls or absurd lengths."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return (name or "attachment")[:255]


def _ingest_bounce(session: Session, msg: InboundMessage, stored: Message,
                   classification: Classification, rt: Runtime) -> Outcome:
    """A DSN never opens a case: it notes the failure on the case and marks the address."""
    now = rt.clock()
    original_ids = list(msg.in_reply_to) + list(msg.references)
    for part in msg.parts:
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822"):
            payload = part.get_payload()
            headers = payload[0] if isinstance(payload, list) and payload else None
            value = headers.get("Message-ID") if headers is not None else None
            if value is None and isinstance(payload, str):
                for line in payload.splitlines():
                    if line.lower().startswith("message-id:"):
                        value = line.split(":", 1)[1]
            original_ids += message_ids(str(value) if value else None)
    number = case_store.case_by_message_ids(session, original_ids)
    for address in classification.bounced_addresses:
        contact = session.scalars(select(Contact).where(Contact.email == address)).first()
        if contact is not None:
            contact.state = "bouncing"
    stored.case_number = number
    stored.matched_by = "references" if number else "none"
    if number is not None:
        case = session.get(Case, number)
        assert case is not None
        failed = ", ".join(classification.bounced_addresses) or "an unknown address"
        post = Post(case_number=number, message=stored, visibility="internal", author="system",
                    author_kind="system", source="system",
                    body=f"Delivery failed to {failed}. No automatic mail goes there until it writes again.",
                    created_at=now)
        session.add(post)
        session.flush()
        case_store.record_event(session, case, "post_internal", "system", now, post=post.id)
    return Outcome("bounce", number, stored.matched_by, "bounce",
                   visibility="internal" if number else None, acknowledgement="bounce")
