"""The one place to read to know what maild does with a mail.

`ingest_message` takes a parsed mail and the session of the caller's transaction and
writes everything the mail causes — message, contact, organization, case, post,
attachments, history, events, outbox rows — without committing. SMTP and IMAP are thin
adapters around it; they commit, and only then answer 250 or move the IMAP message.
`maild inspect` runs it and rolls back.

The steps, in order:
1. idempotency: the same Message-ID (or content) into the same mailbox is stored once;
2. classification for loop protection; bounces go to `bounces.ingest_bounce`;
3. matching to a case (threading.match) and who is speaking (rules.senders);
4. an agent's reply: commands all-or-nothing, then a note or a public post (`_agent_mail`);
   anything else: a customer's post or a new case (`_customer_mail`);
5. notifications of the transaction's events, one mail per recipient (notify.fanout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from maild.config import AgentConfig
from maild.ingest.bounces import ingest_bounce
from maild.ingest.delivery import Delivery, Outcome
from maild.ingest.parse import InboundMessage
from maild.ingest.sanitize import sanitize_html
from maild.notify.acknowledge import acknowledge_case
from maild.notify.audiences import Recipient
from maild.notify.casemail import CaseMail, mailbox_name, queue_case_mail, start_stream
from maild.notify.fanout import queue_notifications
from maild.rules.commands import (
    Command,
    DetachRequest,
    ForwardRequest,
    ParsedReply,
    parse_reply_commands,
    plan_commands,
)
from maild.rules.loops import Classification, classify
from maild.rules.routing import Facts, plan_rules
from maild.rules.senders import identify_speaker
from maild.runtime import Runtime
from maild.store import cases as case_store
from maild.store.changes import apply_changes, case_snapshot, detach_attachments, live_attachments
from maild.store.contacts import ensure_contact
from maild.store.models import Attachment, Case, Contact, Event, Message, OutboxMail, Post
from maild.store.raw_messages import keep_raw
from maild.store.rows import insert_persistent, insert_row, insert_rows, read
from maild.store.sla_state import apply_contract, follow_sla, start_sla
from maild.threading.match import Match, match_case
from maild.threading.reply import extract_reply
from maild.threading.subject import CASE_TAG_RE, strip_prefixes
from maild.threading.tokens import split_plus_address

__all__ = ["Delivery", "Outcome", "ingest_message"]

log = structlog.get_logger("maild.pipeline")

REOPENING_STAGES = ("pending", "resolved")


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


# Statements of every mail, built once: building one costs more than running it.
_STORED = select(Message.case_number, Message.classification).where(
    Message.mailbox == bindparam("mailbox"), Message.dedup_key == bindparam("key"))
_KINDS_SENT = select(OutboxMail.kind).where(OutboxMail.message_id.in_(bindparam("ids", expanding=True)))
_LAST_FROM = (select(Message.message_id)
              .where(Message.case_number == bindparam("case"), Message.message_id.is_not(None),
                     Message.from_address.in_(bindparam("senders", expanding=True)))
              .order_by(Message.id.desc()).limit(1))


def dedup_key(msg: InboundMessage) -> str:
    return msg.message_id or f"sha256:{msg.sha256}"


def ingest_message(session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> Outcome:
    cfg = rt.config
    mailbox = delivery.mailbox.address.lower()
    key = dedup_key(msg)
    for case_number, classification in read(session, _STORED, {"mailbox": mailbox, "key": key}):
        return Outcome("duplicate", case_number, "duplicate", classification)

    now = rt.clock()
    classification = classify(msg, delivery.envelope_sender, rt.mailbox_addresses, cfg.server.hostname)
    if msg.raw_path is None:  # else a parse worker has put them into the raw store already
        keep_raw(session, rt.raw_store, msg.sha256, msg.raw)
    stored = Message(mailbox=mailbox, message_id=msg.message_id, dedup_key=key, sha256=msg.sha256,
                     size=msg.size, from_address=msg.sender.address if msg.sender else "",
                     subject=msg.subject[:2000], classification=classification.kind, received_at=now)
    # written (store.rows) once its case is known: one INSERT, not an INSERT and an UPDATE

    if classification.kind == "bounce":
        return ingest_bounce(session, msg, stored, classification, rt)

    match = match_case(msg, delivery.recipients, rt.mailbox_addresses, rt.secret,
                       DbLookup(session, rt.agent_addresses))
    sender_address = msg.sender.address if msg.sender else (delivery.envelope_sender or "").lower()
    if not sender_address:
        stored.matched_by = match.rule
        insert_row(session, stored)
        return Outcome("ignored", None, match.rule, classification.kind, acknowledgement="none: no sender address")
    sender = ensure_contact(session, sender_address, msg.sender.name if msg.sender else "", cfg.organizations, now,
                            last_mail_at=now)
    if sender.state == "bouncing":
        sender.state = "active"  # it writes again

    speaker = identify_speaker(msg, match.token, cfg, rt.txt_lookup)
    case = session.get(Case, match.case_number) if match.case_number is not None else None
    if speaker.agent is not None and case is not None:
        outcome = _agent_mail(session, msg, stored, case, speaker.agent, match, classification, rt)
    else:
        outcome = _customer_mail(session, msg, stored, case, sender, match, classification, delivery, rt)
    outcome.is_agent = speaker.is_agent
    outcome.agent_reason = speaker.reason
    return outcome


# --- a customer's mail (or an agent's that opens a case) ----------------------------------

def _customer_mail(session: Session, msg: InboundMessage, stored: Message, case: Case | None, sender: Contact,
                   match: Match, classification: Classification, delivery: Delivery, rt: Runtime) -> Outcome:
    now = rt.clock()
    events: list[Event] = []
    linked: int | None = None
    if case is not None and case.stage == "closed":
        linked, case = case.number, None  # a reply to a closed case opens a new, linked one
    created = case is None
    if case is None:
        case = _open_case(session, msg, delivery, sender, linked, now)
        start_stream(session, case.number, [msg.message_id] if msg.message_id else [])
        events.append(case_store.record_event(session, case, "case_created", sender.email, now))
    elif case.stage in REOPENING_STAGES and sender.email in case_store.customer_addresses(session, case):
        # only the customer side reopens: not a stranger holding a token, nor an unauthenticated
        # mail from an agent's address
        case_store.record_change(session, case, field="stage", old=case.stage, new="open", actor=sender.email,
                                 via="mail", now=now)
        events.append(case_store.record_event(session, case, "stage_changed", sender.email, now,
                                              old=case.stage, new="open"))
        case.stage = "open"
    if not created:
        case.updated_at = now  # a new case has it already: setting it again would cost an UPDATE
    stored.case_number = case.number
    stored.matched_by = "new" if created else match.rule
    insert_row(session, stored)

    if rt.config.contacts.cc_participants:
        _add_cc_participants(session, msg, case, sender.email, rt)
    reply = msg.reply if msg.reply is not None else extract_reply(msg.text, msg.html)
    body = reply.text if reply.text.strip() else msg.text
    post = _add_post(session, msg, stored, case, sender.email, "customer", "public", body, rt)
    _note_omitted_parts(session, msg, stored, case, rt)
    if not created:
        events.append(case_store.record_event(session, case, "post_public", sender.email, now, post=post.id))
        events += _attachment_events(session, case, post, sender.email, now)

    if created:
        events += apply_contract(session, rt.config, case, now)
    routed = apply_rules(session, rt, case, events, post=post, sender=sender.email)
    events += routed.events
    if created:
        start_sla(rt.config, rt.calendars, case)
    follow_sla(session, rt.config, rt.calendars, case, events, post, now)
    template = routed.auto_replies.pop("case_created", None) or "case_created"
    ack = acknowledge_case(session, rt, case, msg, classification, template=template) if created else None
    notified = []
    if classification.kind == "normal":  # robots' mail is stored, but sets off no mail: loops start so
        for auto_template in routed.auto_replies.values():
            acknowledge_case(session, rt, case, msg, classification, template=auto_template)
        notified = queue_notifications(session, rt, case, events, post=post, in_reply_to=msg.message_id,
                                       actor_name=sender.name, extra=routed.notify)
    return Outcome("created" if created else "threaded", case.number, stored.matched_by, classification.kind,
                   visibility="public", acknowledgement=ack, events=[e.kind for e in events], reply_text=body,
                   notified=notified)


def _open_case(session: Session, msg: InboundMessage, delivery: Delivery, requester: Contact,
               linked: int | None, now: datetime) -> Case:
    subject = " ".join(strip_prefixes(CASE_TAG_RE.sub(" ", msg.subject)).split()) or "(no subject)"
    if requester.id is None:
        session.flush()  # a contact still pending (ensure_contact writes its rows at once)
    case = Case(subject=subject, mailbox=delivery.mailbox.address.lower(), queue=delivery.mailbox.team,
                stage="new", type="question", priority="normal", requester_id=requester.id,
                organization_id=requester.organization_id, linked_case=linked, fields={}, created_at=now,
                updated_at=now)
    insert_persistent(session, case, loaded={  # the database hands out the case number
        "requester": requester, "organization": requester.organization,
        "participants": [], "tags": [], "followers": [], "posts": [], "history": []})  # known empty: no lazy loads
    return case


def _add_cc_participants(session: Session, msg: InboundMessage, case: Case, sender: str, rt: Runtime) -> None:
    own = rt.mailbox_addresses | rt.agent_addresses
    for a in msg.to + msg.cc:
        if a.address == sender or split_plus_address(a.address)[0] in own:
            continue
        contact = ensure_contact(session, a.address, a.name, rt.config.organizations, rt.clock())
        case_store.add_participant(session, case, contact)


def _add_post(session: Session, msg: InboundMessage, stored: Message, case: Case, author: str, author_kind: str,
              visibility: str, body: str, rt: Runtime, html: str | None = None) -> Post:
    """Written at once (store.rows): `case.posts`, if already loaded, does not show it."""
    if html is None:
        html = (msg.safe_html or sanitize_html(msg.html)) if msg.html else None
    post = Post(case_number=case.number, message_pk=stored.id, visibility=visibility, author=author,
                author_kind=author_kind, source="email", body=body, html=html or None, created_at=rt.clock())
    insert_row(session, post)
    for a in msg.attachments:
        if a.data is not None:  # None: a large part, decoded into the store as it was read
            rt.attachment_store.put(a.data, a.sha256)
        post.attachments.append(Attachment(filename=_safe_filename(a.filename), content_type=a.content_type,
                                           size=a.size, sha256=a.sha256, content_id=a.content_id, inline=a.inline))
    for attachment in post.attachments:
        attachment.post_id = post.id
    insert_rows(session, post.attachments)
    return post


def _attachment_events(session: Session, case: Case, post: Post, actor: str, now: datetime) -> list[Event]:
    return [case_store.record_event(session, case, "attachment_added", actor, now, filename=a.filename,
                                    sha256=a.sha256, size=a.size) for a in post.attachments]


@dataclass
class Routed:
    """What rules did in one transaction: their events, who else to tell, auto-replies to send."""

    events: list[Event] = field(default_factory=list)
    notify: dict[str, list[str]] = field(default_factory=dict)
    auto_replies: dict[str, str] = field(default_factory=dict)  # event kind -> template


def apply_rules(session: Session, rt: Runtime, case: Case, events: list[Event], *, post: Post | None,
                sender: str) -> Routed:
    """Runs `[[rules]]` for each event of the transaction; their actions are in the history under
    the rule's name. Events that rules raise run no rules again."""
    routed = Routed()
    if not rt.config.rules:
        return routed
    now = rt.clock()
    org = case.organization
    for event in list(events):
        facts = Facts(event=event.kind, mailbox=case.mailbox, sender=sender,
                      organization=(org.name, *(d.domain for d in org.domains)) if org else (),
                      subject=case.subject, body=post.body if post else "", type=case.type,
                      tags=tuple(t.tag for t in case.tags), priority=case.priority)
        for actions in plan_rules(rt.config.rules, facts):
            routed.events += apply_changes(session, case, actions.changes, actor=f"rule:{actions.rule}", via="rule",
                                           now=now, rule=actions.rule)
            if actions.notify:
                routed.notify.setdefault(event.kind, []).extend(actions.notify)
            if actions.auto_reply:
                routed.auto_replies[event.kind] = actions.auto_reply
    return routed


def _note_omitted_parts(session: Session, msg: InboundMessage, stored: Message, case: Case, rt: Runtime) -> None:
    """Parts past [protection] max_mime_parts were not kept as attachments (SPEC §11): an
    internal note tells the agents, so that none takes the case's files for the whole mail."""
    if not msg.omitted_parts:
        return
    limit = rt.config.protection.max_mime_parts
    where = f"maild message raw <{msg.message_id}>" if msg.message_id else f"its raw message, sha256 {msg.sha256}"
    log.warning("mime parts over the limit, kept only in the raw message", message_id=msg.message_id,
                case=case.number, omitted=msg.omitted_parts, limit=limit)
    insert_row(session, Post(case_number=case.number, message_pk=stored.id, visibility="internal", author="system",
                             author_kind="system", source="system", created_at=rt.clock(),
                             body=f"{msg.omitted_parts} MIME parts beyond the limit of {limit} were not kept as "
                                  f"attachments; they remain in the raw message ({where})."))


def _safe_filename(name: str) -> str:
    """A display name only (bytes are stored by hash): no paths, controls or absurd lengths."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return (name or "attachment")[:255]


# --- an agent's reply ---------------------------------------------------------------------

def _agent_mail(session: Session, msg: InboundMessage, stored: Message, case: Case, agent: AgentConfig,
                match: Match, classification: Classification, rt: Runtime) -> Outcome:
    """Commands all-or-nothing, then a public post to the customer side or an internal note."""
    now = rt.clock()
    actor = agent.email.lower()
    stored.case_number = case.number
    stored.matched_by = match.rule
    insert_row(session, stored)
    reply = msg.reply if msg.reply is not None else extract_reply(msg.text, msg.html)
    if classification.kind == "normal":
        parsed = parse_reply_commands(reply.text)
    else:  # an agent's out-of-office must neither run commands nor answer the customer
        parsed = ParsedReply(visibility="internal", commands=[], errors=[], text=reply.text.strip())
    visibility = parsed.visibility or ("internal" if _answers_a_note(session, msg, match) else "public")
    snapshot = case_snapshot(case)
    plan = plan_commands(parsed.commands, snapshot, agent, rt.config, now)
    errors = parsed.errors + plan.errors
    outcome = Outcome("refused" if errors else "threaded", case.number, match.rule, classification.kind,
                      visibility=visibility, reply_text=parsed.text, commands=[c.source for c in parsed.commands],
                      errors=[f"line {e.line}: {e.source}: {e.reason}" for e in errors])
    if errors:
        queue_case_mail(session, rt, case, CaseMail(
            template="command_errors", recipient=Recipient(actor, agent.name, "agent"), auto_submitted="auto-replied",
            in_reply_to=msg.message_id, context={"errors": errors}))
        outcome.notified = [actor]
        return outcome

    changes = [c for c in plan.changes if not isinstance(c, ForwardRequest | DetachRequest)]
    events = apply_changes(session, case, changes, actor=actor, via="mail", now=now)
    post = None
    if parsed.text.strip() or msg.attachments:
        post = _add_post(session, msg, stored, case, actor, "agent", visibility, parsed.text, rt, html="")
        events.append(case_store.record_event(session, case, f"post_{visibility}", actor, now, post=post.id))
        events += _attachment_events(session, case, post, actor, now)
    _note_omitted_parts(session, msg, stored, case, rt)
    events += detach_attachments(session, case, [c.filename for c in plan.changes if isinstance(c, DetachRequest)],
                                 actor=actor, via="mail", now=now)
    routed = apply_rules(session, rt, case, events, post=post, sender=actor)
    events += routed.events
    follow_sla(session, rt.config, rt.calendars, case, events, post, now)
    case.updated_at = now
    for forward in (c for c in plan.changes if isinstance(c, ForwardRequest)):
        _queue_forward(session, rt, case, forward, agent)
        outcome.notified.append(forward.address)
    in_reply_to = _last_customer_message_id(session, case) if visibility == "public" else msg.message_id
    if classification.kind == "normal":
        outcome.notified += queue_notifications(session, rt, case, events, post=post, in_reply_to=in_reply_to,
                                                actor_name=agent.name, extra=routed.notify)
    outcome.events = [e.kind for e in events]
    return outcome


def _answers_a_note(session: Session, msg: InboundMessage, match: Match) -> bool:
    """A reply to a note notification stays internal: its token says so, or it answers one."""
    if match.token is not None and match.token.internal:
        return True
    ids = [*msg.in_reply_to, *msg.references[-1:]]
    if not ids:
        return False
    return ("post_internal",) in read(session, _KINDS_SENT, {"ids": ids})


def _last_customer_message_id(session: Session, case: Case) -> str | None:
    """What an agent's public answer replies to, so it threads in the customer's mail client."""
    customers = case_store.customer_addresses(session, case)
    rows = read(session, _LAST_FROM, {"case": case.number, "senders": customers})
    return rows[0][0] if rows else None


def _queue_forward(session: Session, rt: Runtime, case: Case, forward: ForwardRequest, agent: AgentConfig) -> None:
    """/forward: summary, history and posts; internal notes only when asked for."""
    posts = [p for p in case.posts if forward.with_notes or p.visibility == "public"]
    queue_case_mail(session, rt, case, CaseMail(
        template="forward", recipient=Recipient(forward.address, "", "customer"), auto_submitted="auto-generated",
        from_name=f"{agent.name or agent.email} via {mailbox_name(rt, case)}",
        context={"posts": posts, "history": list(case.history), "actor_name": agent.name or agent.email}))


# --- the same path for the CLI --------------------------------------------------------------

def update_case(session: Session, rt: Runtime, case: Case, commands: list[Command], actor: AgentConfig, *,
                via: str, remove_attachments: list[str] | None = None) -> tuple[list[str], list[str]]:
    """`maild case update`: the mail commands' planning, history, rules and notifications,
    all-or-nothing. Returns (events, errors); with errors nothing is changed."""
    now = rt.clock()
    plan = plan_commands(commands, case_snapshot(case), actor, rt.config, now)
    known = {a.filename.casefold() for a in live_attachments(case)} | {a.sha256 for a in live_attachments(case)}
    missing = [r for r in remove_attachments or [] if r.casefold() not in known]
    errors = [f"{e.source}: {e.reason}" for e in plan.errors]
    errors += [f"--remove-attachment {m}: no such attachment on case #{case.number}" for m in missing]
    if errors:
        return [], errors
    actor_id = actor.email.lower()
    changes = [c for c in plan.changes if not isinstance(c, ForwardRequest | DetachRequest)]
    events = apply_changes(session, case, changes, actor=actor_id, via=via, now=now)
    detach = [c.filename for c in plan.changes if isinstance(c, DetachRequest)] + list(remove_attachments or [])
    events += detach_attachments(session, case, detach, actor=actor_id, via=via, now=now)
    routed = apply_rules(session, rt, case, events, post=None, sender=actor_id)
    events += routed.events
    follow_sla(session, rt.config, rt.calendars, case, events, None, now)
    for forward in (c for c in plan.changes if isinstance(c, ForwardRequest)):
        _queue_forward(session, rt, case, forward, actor)
    queue_notifications(session, rt, case, events, post=None, in_reply_to=None, actor_name=actor.name,
                        extra=routed.notify)
    return [e.kind for e in events], []
