"""The one place to read to know what maild does with a mail.

`ingest_message` takes a parsed mail and the session of the caller's transaction and
writes everything the mail causes — message, contact, organization, case, post,
attachments, history, events, outbox rows — without committing. SMTP and IMAP are thin
adapters around it; they commit, and only then answer 250 or move the IMAP message.
`maild inspect` runs it and rolls back.

The steps, in order:
1. idempotency: the same mail (Message-ID, sender and content; or the raw bytes' hash where
   there is no Message-ID) into the same mailbox is stored once; another mail reusing a
   Message-ID is stored as its own;
2. classification for loop protection; bounces go to `bounces.ingest_bounce`, which believes
   only bounces of mail maild sent;
3. an agent's reply to the notice of a held mail releases that mail (`_release_held`);
4. matching to a case (threading.match) and who is speaking (rules.senders); a mail whose From
   is an agent's but that is not authenticated is held (`_hold_agent_mail`): it joins no case;
5. an agent's reply: commands all-or-nothing, then a note or a public post (`_agent_mail`),
   through `casework.change_case`, the one sequence that changes a case (plan, apply, the
   post, detach, rules, SLA, forward, notify) that `maild case update` and the SLA timer run
   too; anything else: a customer's post or a new case (`_customer_mail`);
6. notifications of the transaction's events, one mail per recipient (notify.fanout).
Every trust decision (agent or not, held, bounce believed or not) is in the Outcome with its
reason, which the SMTP/IMAP log line and `maild inspect` show.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import structlog
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from maild.casework import apply_rules, change_case, update_case
from maild.config import AgentConfig
from maild.domain.message import ExtractedReply, InboundMessage
from maild.domain.outcome import Outcome, Quarantined
from maild.domain.stages import REOPENING_STAGES
from maild.ingest.bounces import ingest_bounce
from maild.ingest.delivery import Delivery
from maild.ingest.parse import parse_message
from maild.ingest.sanitize import sanitize_html
from maild.notify.acknowledge import acknowledge_case
from maild.notify.audiences import Recipient
from maild.notify.casemail import CaseMail, queue_case_mail, start_stream
from maild.notify.fanout import queue_notifications
from maild.notify.held import queue_hold_notice
from maild.rules.commands import ParsedReply, parse_reply_commands
from maild.rules.loops import Classification, classify
from maild.rules.senders import Speaker, identify_speaker
from maild.runtime import Runtime
from maild.sla_clocks import apply_contract, follow_sla, start_sla
from maild.store import cases as case_store
from maild.store.contacts import ensure_contact
from maild.store.models import Attachment, Case, Contact, Event, Message, OutboxMail, Post
from maild.store.raw_messages import keep_raw, raw_message
from maild.store.rows import insert_persistent, insert_row, insert_rows, read
from maild.threading.match import Match, find_held_token, match_case
from maild.threading.reply import extract_reply
from maild.threading.subject import CASE_TAG_RE, strip_prefixes
from maild.threading.tokens import ReplyToken, agent_key, split_plus_address

__all__ = ["Delivery", "Outcome", "ingest_message", "update_case"]  # update_case: its old import path

log = structlog.get_logger("maild.pipeline")


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
_SAME_MESSAGE_ID = select(Message.dedup_key, Message.from_address, Message.case_number, Message.classification).where(
    Message.mailbox == bindparam("mailbox"), Message.message_id == bindparam("message_id"))
_KINDS_SENT = select(OutboxMail.kind).where(OutboxMail.message_id.in_(bindparam("ids", expanding=True)))
_LAST_FROM = (select(Message.message_id)
              .where(Message.case_number == bindparam("case"), Message.message_id.is_not(None),
                     Message.classification != "auto_reply",  # an agent's answer replies to the person
                     Message.from_address.in_(bindparam("senders", expanding=True)))
              .order_by(Message.id.desc()).limit(1))


def content_digest(msg: InboundMessage) -> str:
    """What makes one mail the same mail whichever way it came (relays add Received headers)."""
    digest = hashlib.sha256()
    for part in (msg.sender.address if msg.sender else "", msg.header("Date") or "", msg.subject, msg.text,
                 msg.html or "", *(a.sha256 for a in msg.attachments)):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:32]


def dedup_key(msg: InboundMessage) -> str:
    """Message-ID and content: a stranger who sends first with someone's Message-ID does not make
    the real mail a duplicate (SPEC §4). Without a Message-ID, the raw bytes' hash."""
    if msg.message_id:
        return f"{msg.message_id[:900]} {content_digest(msg)}"
    return f"sha256:{msg.sha256}"


def stored_before(session: Session, msg: InboundMessage, mailbox: str, key: str) -> Outcome | None:
    """The Outcome of a mail stored already (ingestion is idempotent), or None. A different mail
    reusing a stored Message-ID is logged and goes on to be stored as its own: nothing is dropped."""
    if not msg.message_id:
        for case_number, classification in read(session, _STORED, {"mailbox": mailbox, "key": key}):
            return Outcome("duplicate", case_number, "duplicate", classification)
        return None
    rows = read(session, _SAME_MESSAGE_ID, {"mailbox": mailbox, "message_id": msg.message_id})
    sender = msg.sender.address if msg.sender else ""
    for stored_key, from_address, case_number, classification in rows:
        # a key of before content keys (the bare Message-ID) counts when the sender is the same
        if stored_key == key or (stored_key == msg.message_id and from_address == sender):
            return Outcome("duplicate", case_number, "duplicate", classification)
    if rows:
        log.warning("Message-ID reused by a different mail, stored as a mail of its own", message_id=msg.message_id,
                    mailbox=mailbox, sender=sender, earlier_senders=sorted({r[1] for r in rows}))
    return None


def reply_of(msg: InboundMessage) -> ExtractedReply:
    """The mail's new text: worked out by the parse; a mail made without it is split here."""
    return msg.reply if msg.reply is not None else extract_reply(msg.text, msg.html, flattened=True)


def ingest_message(session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime, *,
                   released_by: AgentConfig | None = None) -> Outcome:
    """`released_by`: the agent whose reply to a hold notice vouches for this (held) mail.
    The lines logged about the mail carry its case once it is known (`_bind_case`): until the
    call returns, or, when it fails on something other than a decision (Quarantined), for the
    caller's line about the failure too (the writer's "job failed"; the writer ends what a job
    bound with the job)."""
    outer = structlog.contextvars.get_contextvars().get("case")
    try:
        outcome = _ingest_message(session, msg, delivery, rt, released_by)
    except Quarantined:
        _rebind_case(outer)
        raise
    _rebind_case(outer)
    return outcome


def _bind_case(number: int) -> None:
    """From here on the mail's log lines carry its case (issue 22 §8)."""
    structlog.contextvars.bind_contextvars(case=number)


def _rebind_case(number: int | None) -> None:
    if number is None:
        structlog.contextvars.unbind_contextvars("case")
    else:
        structlog.contextvars.bind_contextvars(case=number)


def _ingest_message(session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime,
                    released_by: AgentConfig | None) -> Outcome:
    cfg = rt.config
    mailbox = delivery.mailbox.address.lower()
    key = dedup_key(msg)
    duplicate = stored_before(session, msg, mailbox, key)
    if duplicate is not None:
        return duplicate

    now = rt.clock()
    classification = classify(msg, delivery.envelope_sender, rt.mailbox_addresses, cfg.server.hostname)
    if not msg.raw_mail.stored:  # else a parse worker has put them into the raw store already
        keep_raw(session, rt.raw_store, msg.sha256, msg.raw_mail.data)
    stored = Message(mailbox=mailbox, message_id=msg.message_id, dedup_key=key, sha256=msg.sha256,
                     size=msg.size, from_address=msg.sender.address if msg.sender else "",
                     subject=msg.subject[:1000], classification=classification.kind, received_at=now)
    # written (store.rows) once its case is known: one INSERT, not an INSERT and an UPDATE

    try:
        outcome = _ingest_classified(session, msg, stored, classification, delivery, rt, released_by)
    except Quarantined as e:
        _carry_classification(e.outcome, classification)
        raise
    _carry_classification(outcome, classification)
    return outcome


def _carry_classification(outcome: Outcome, classification: Classification) -> None:
    """Which rule or detector classified the mail goes with the Outcome to the log and `maild
    inspect`; for a bounce kept aside, the addresses its detector read (permanent and temporary)."""
    if outcome.classified_by:  # a released held mail: its own classification came back with it
        return
    outcome.classified_by = classification.reason or classification.no_auto_reason
    if not outcome.reason:
        outcome.reason = outcome.classified_by
    if classification.kind == "bounce" and not outcome.bounced_addresses and not outcome.delayed_addresses:
        outcome.bounced_addresses = list(classification.bounced_addresses)
        outcome.delayed_addresses = list(classification.delayed_addresses)


def _ingest_classified(session: Session, msg: InboundMessage, stored: Message, classification: Classification,
                       delivery: Delivery, rt: Runtime, released_by: AgentConfig | None) -> Outcome:
    cfg = rt.config
    if classification.kind == "bounce":
        return ingest_bounce(session, msg, stored, classification, delivery, rt)

    recipients = [*delivery.recipients, *(a.address for a in msg.to + msg.cc)]
    held_token = find_held_token(recipients, rt.mailbox_addresses, rt.secret)
    if held_token is not None and released_by is None:
        released = _release_held(session, msg, stored, held_token, delivery, classification, rt)
        if released is not None:
            return released

    match = match_case(msg, delivery.recipients, rt.mailbox_addresses, rt.secret,
                       DbLookup(session, rt.agent_addresses))
    sender_address = msg.sender.address if msg.sender else (delivery.envelope_sender or "").lower()
    if not sender_address:
        stored.matched_by = match.rule
        insert_row(session, stored)
        return Outcome("ignored", None, match.rule, classification.kind, acknowledgement="none: no sender address")
    if released_by is not None:
        speaker = Speaker(released_by, "released: the agent replied to the notice of this held mail")
    else:
        speaker = identify_speaker(msg, match.token, cfg, rt.txt_lookup)
        claimed = cfg.agent(sender_address)
        if claimed is not None and speaker.agent is None:
            return _hold_agent_mail(session, msg, stored, claimed, speaker, match, classification, delivery, rt)
    if classification.kind == "auto_reply":
        outcome = _auto_reply(session, msg, stored, match, classification, rt)
        outcome.is_agent = speaker.is_agent
        outcome.agent_reason = speaker.reason
        return outcome
    now = rt.clock()
    sender = ensure_contact(session, sender_address, msg.sender.name if msg.sender else "", cfg.organizations, now,
                            last_mail_at=now)
    if sender.state == "bouncing":
        sender.state = "active"  # it writes again

    case = session.get(Case, match.case_number) if match.case_number is not None else None
    if speaker.agent is not None and case is not None:
        outcome = _agent_mail(session, msg, stored, case, speaker.agent, match, classification, rt)
    else:
        outcome = _customer_mail(session, msg, stored, case, sender, match, classification, delivery, rt)
    outcome.is_agent = speaker.is_agent
    outcome.agent_reason = speaker.reason
    return outcome


# --- an automatic reply: out-of-office, vacation, "we received your mail" (issue 21 §3) ------

AUTO_NOTE_CHARS = 1500  # an out-of-office says its piece in a few lines; the rest is boilerplate
AUTO_NOTE_LINES = 25


def _auto_reply(session: Session, msg: InboundMessage, stored: Message, match: Match,
                classification: Classification, rt: Runtime) -> Outcome:
    """An internal system note on the case it answers, and nothing else: no stage change (a
    solved case stays solved, a pending one keeps waiting: an out-of-office is not the
    customer's answer, so the SLA clocks do not move), no acknowledgement, no public post, no
    mail to anyone. Agents are not notified either: they see it on the case, and a notification
    about a robot's mail is how loops between two out-of-office replies start. One that answers
    no case opens none: it is stored, and the adapter's log line says why."""
    now = rt.clock()
    reply = reply_of(msg)
    text = reply.text if reply.text.strip() else msg.text
    case = session.get(Case, match.case_number) if match.case_number is not None else None
    if case is None:
        stored.matched_by = "none"
        insert_row(session, stored)
        return Outcome("ignored", None, "none", classification.kind, acknowledgement="none: automatic reply",
                       reply_text=text, reason=f"automatic reply to no case ({classification.reason})")
    stored.case_number = case.number
    _bind_case(case.number)
    stored.matched_by = match.rule
    insert_row(session, stored)
    sender = stored.from_address or "an unknown sender"
    if msg.sender is not None and msg.sender.name:
        sender = f"{msg.sender.name} <{sender}>"
    body = f"Automatic reply from {sender} ({classification.reason}); the case is unchanged.\n\n{shorten(text)}"
    post = Post(case_number=case.number, message_pk=stored.id, visibility="internal", author="system",
                author_kind="system", source="system", body=body.rstrip(), created_at=now)
    insert_row(session, post)
    event = case_store.record_event(session, case, "post_internal", "system", now, post=post.id,
                                    automatic_reply=stored.from_address)
    return Outcome("noted", case.number, match.rule, classification.kind, visibility="internal",
                   acknowledgement="none: automatic reply", events=[event.kind], reply_text=text)


def shorten(text: str, max_chars: int = AUTO_NOTE_CHARS, max_lines: int = AUTO_NOTE_LINES) -> str:
    """At most `max_lines` lines and `max_chars` characters, cut at a line (or word) boundary,
    runs of blank lines made one: enough to read who is away until when, and whom to ask."""
    lines: list[str] = []
    for line in text.strip().splitlines():
        line = line.rstrip()
        if not line and (not lines or not lines[-1]):
            continue
        lines.append(line)
    out = "\n".join(lines[:max_lines])
    cut = len(lines) > max_lines
    if len(out) > max_chars:
        out = out[:max_chars]
        boundary = max(out.rfind("\n"), out.rfind(" "))
        out = out[:boundary] if boundary > max_chars // 2 else out
        cut = True
    return out.rstrip() + (" […]" if cut else "")


# --- mail from an agent's address that is not authenticated (SPEC §6) ----------------------

def _hold_agent_mail(session: Session, msg: InboundMessage, stored: Message, agent: AgentConfig, speaker: Speaker,
                     match: Match, classification: Classification, delivery: Delivery, rt: Runtime) -> Outcome:
    """Stored, but joins no case, adds no participant and reaches no customer: a From header costs
    nothing to forge. The real agent gets one notice with the text; their reply releases it."""
    reason = f"held: unauthenticated agent address ({speaker.reason})"
    stored.matched_by = "held"
    insert_row(session, stored)
    notified = []
    if classification.kind == "normal":  # a robot's mail from that address gets no notice: no loops
        case = session.get(Case, match.case_number) if match.case_number is not None else None
        queue_hold_notice(session, rt, held_pk=stored.id, message_id=msg.message_id, subject=msg.subject,
                          text=msg.text, attachments=[a.filename for a in msg.attachments], agent=agent,
                          mailbox=delivery.mailbox.address, mailbox_name=delivery.mailbox.name or "Support", case=case,
                          reason=speaker.reason)
        notified.append(agent.email.lower())
    log.warning("agent-address mail held", message_id=msg.message_id, agent=agent.email, reason=reason,
                aimed_at_case=match.case_number, notice=bool(notified))
    return Outcome("held", None, "held", classification.kind, acknowledgement="none: held", agent_reason=reason,
                   notified=notified, reply_text=(msg.reply.text if msg.reply is not None else msg.text))


def _release_held(session: Session, msg: InboundMessage, stored: Message, token: ReplyToken, delivery: Delivery,
                  classification: Classification, rt: Runtime) -> Outcome | None:
    """The agent's reply to a hold notice: the held mail goes through the pipeline as theirs. None
    when this mail cannot release it (another sender, a robot): it goes on as any other mail."""
    sender = msg.sender.address if msg.sender else ""
    agent = rt.config.agent(sender) if sender else None
    if agent is None or token.agent_key != agent_key(agent.email) or classification.kind != "normal":
        log.warning("hold notice token not honoured", message_id=msg.message_id, sender=sender,
                    reason="not the agent it was issued to" if classification.kind == "normal" else classification.kind)
        return None
    held = session.get(Message, token.case_number)
    stored.matched_by = "release"
    if held is None or held.matched_by != "held":
        insert_row(session, stored)
        return Outcome("ignored", held.case_number if held else None, "release", classification.kind, is_agent=True,
                       agent_reason="token: this held mail was released already")
    held_msg = parse_message(raw_message(session, rt.raw_store, held.sha256),
                             max_parts=rt.config.protection.max_mime_parts)
    mailbox = rt.config.mailbox(held.mailbox) or delivery.mailbox
    session.execute(delete(Message).where(Message.id == held.id))  # stored again, now as the agent's
    session.expunge(held)
    outcome = ingest_message(session, held_msg, Delivery(mailbox=mailbox, recipients=[], envelope_sender=None,
                                                         via="release"), rt, released_by=agent)
    stored.case_number = outcome.case_number
    if outcome.case_number is not None:
        _bind_case(outcome.case_number)
    insert_row(session, stored)
    log.info("held mail released", message_id=held_msg.message_id, agent=agent.email, case=outcome.case_number)
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
    takes_part = created or sender.email in case_store.customer_addresses(session, case)
    if case is None:
        case = _open_case(session, msg, delivery, sender, linked, now)
        start_stream(session, case.number, [msg.message_id] if msg.message_id else [])
        events.append(case_store.record_event(session, case, "case_created", sender.email, now))
    elif case.stage in REOPENING_STAGES and takes_part:
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
    _bind_case(case.number)
    stored.matched_by = "new" if created else match.rule
    insert_row(session, stored)

    if not takes_part and match.rule == "references":
        case_store.add_participant(session, case, sender)  # they were in the conversation (SPEC §4) ...
    elif takes_part and rt.config.contacts.cc_participants:
        _add_cc_participants(session, msg, case, sender.email, rt)  # ... but only participants bring others
    reply = reply_of(msg)
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
    """At most `[protection] max_participants_per_mail` new ones: one mail with a long Cc list
    must not turn the desk into an amplifier (SPEC §11)."""
    own = rt.accepted_addresses | rt.agent_addresses
    limit = rt.config.protection.max_participants_per_mail
    added: list[str] = []
    left_out: list[str] = []
    for a in msg.to + msg.cc:
        if a.address == sender or split_plus_address(a.address)[0] in own:
            continue
        if len(added) >= limit:
            left_out.append(a.address)
            continue
        contact = ensure_contact(session, a.address, a.name, rt.config.organizations, rt.clock())
        if case_store.add_participant(session, case, contact):
            added.append(a.address)
    if left_out:
        log.warning("participants per mail over the limit", case=case.number, limit=limit, added=len(added),
                    left_out=len(left_out), message_id=msg.message_id)


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


def _note_omitted_parts(session: Session, msg: InboundMessage, stored: Message, case: Case, rt: Runtime) -> None:
    """Parts past [protection] max_mime_parts were not kept as attachments (SPEC §11): an
    internal note tells the agents, so that none takes the case's files for the whole mail."""
    if not msg.omitted_parts:
        return
    limit = rt.config.protection.max_mime_parts
    where = f"maild message raw <{msg.message_id}>" if msg.message_id else f"its raw message, sha256 {msg.sha256}"
    log.warning("mime parts over the limit, kept only in the raw message", message_id=msg.message_id,
                omitted=msg.omitted_parts, limit=limit)  # and its case, bound (`_bind_case`)
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
    _bind_case(case.number)
    stored.matched_by = match.rule
    insert_row(session, stored)
    reply = reply_of(msg)
    if classification.kind == "normal":
        parsed = parse_reply_commands(reply.text)
    else:  # an agent's out-of-office must neither run commands nor answer the customer
        parsed = ParsedReply(visibility="internal", commands=[], errors=[], text=reply.text.strip())
    visibility = parsed.visibility or ("internal" if _answers_a_note(session, msg, match) else "public")
    in_reply_to = _last_customer_message_id(session, case) if visibility == "public" else msg.message_id

    def write_post() -> tuple[Post | None, list[Event]]:
        """The reply's text and files, between the commands' changes and /detach."""
        events: list[Event] = []
        post = None
        if parsed.text.strip() or msg.attachments:
            post = _add_post(session, msg, stored, case, actor, "agent", visibility, parsed.text, rt, html="")
            events.append(case_store.record_event(session, case, f"post_{visibility}", actor, now, post=post.id))
            events += _attachment_events(session, case, post, actor, now)
        _note_omitted_parts(session, msg, stored, case, rt)
        return post, events

    done = change_case(session, rt, case, actor=agent, via="mail", commands=parsed.commands, refused=parsed.errors,
                       write_post=write_post, notify=classification.kind == "normal", in_reply_to=in_reply_to,
                       now=now)
    outcome = Outcome("refused" if done.errors else "threaded", case.number, match.rule, classification.kind,
                      visibility=visibility, reply_text=parsed.text, commands=[c.source for c in parsed.commands],
                      errors=[f"line {e.line}: {e.source}: {e.reason}" for e in done.errors])
    if done.errors:
        queue_case_mail(session, rt, case, CaseMail(
            template="command_errors", recipient=Recipient(actor, agent.name, "agent"), auto_submitted="auto-replied",
            in_reply_to=msg.message_id, context={"errors": done.errors}))
        outcome.notified = [actor]
        return outcome
    case.updated_at = now
    outcome.notified = done.forwarded + done.notified
    outcome.events = [e.kind for e in done.events]
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
