"""Events of one transaction -> one mail per recipient (SPEC §6, §10).

Who hears of what is notify.audiences' matrix; this module gathers, per recipient, every
event of the transaction and writes one mail that names the main one and lists the rest.
Nobody hears of their own action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from maild.notify.audiences import Recipient, agent_recipient, recipients_of
from maild.notify.casemail import CaseMail, mailbox_name, queue_case_mail
from maild.runtime import Runtime
from maild.store.models import Case, Event, Post

# The event that names a mail (and its template), most telling first; the rest are listed.
MAIN_EVENTS = ("post_public", "post_internal", "case_created")
CHANGE_EVENTS = ("sla_breached", "sla_warning", "closed", "stage_changed", "assigned", "queue_changed",
                 "priority_changed", "due_changed", "tags_changed", "attachment_added", "attachment_removed")


@dataclass
class Share:
    recipient: Recipient
    events: list[Event] = field(default_factory=list)


def audiences(rt: Runtime, case: Case, events: list[Event], post: Post | None,
              extra: dict[str, list[str]] | None = None) -> list[Share]:
    """Who hears of which of `events` (`extra`: addresses rules added per event kind); the
    actor of an event never hears of it."""
    shares: dict[str, Share] = {}
    for event in events:
        recipients = recipients_of(rt, case, event, post)
        for address in (extra or {}).get(event.kind, []):
            recipients.append(agent_recipient(rt.config, address) or Recipient(address.lower(), "", "agent"))
        for r in recipients:
            if r.email == event.actor.lower():
                continue
            share = shares.setdefault(r.email, Share(r))
            if event not in share.events:
                share.events.append(event)
    # A customer's mail lists only what customers may see: public posts and stage changes; a
    # mail that goes to them anyway also tells of the stage change made with it.
    stage_changes = [e for e in events if e.kind == "stage_changed"]
    for share in shares.values():
        if share.recipient.kind == "customer":
            if any(e.kind == "post_public" for e in share.events):
                share.events += [e for e in stage_changes if e not in share.events]
            share.events = [e for e in share.events if e.kind in ("post_public", "stage_changed")]
    return [s for s in shares.values() if s.events]


def change_lines(events: list[Event]) -> list[dict[str, Any]]:
    """The changes a mail lists, as plain data for templates (the closing is told by its stage)."""
    lines = []
    for e in events:
        if e.kind in MAIN_EVENTS or (e.kind == "closed" and any(x.kind == "stage_changed" for x in events)):
            continue
        lines.append({"kind": e.kind, "actor": e.actor, **e.data})
    return lines


def queue_notifications(session: Session, rt: Runtime, case: Case, events: list[Event], *, post: Post | None,
                        in_reply_to: str | None, actor_name: str = "",
                        extra: dict[str, list[str]] | None = None) -> list[str]:
    """Writes one mail per recipient to the outbox; returns their addresses (for the log)."""
    sent = []
    for share in audiences(rt, case, events, post, extra):
        kinds = [e.kind for e in share.events]
        main = next((k for k in (*MAIN_EVENTS, *CHANGE_EVENTS) if k in kinds), "case_updated")
        by_agent_publicly = main == "post_public" and post is not None and post.author_kind == "agent"
        to_customer = share.recipient.kind == "customer"
        mail = CaseMail(
            template=main,
            recipient=share.recipient,
            context={"post": post if main in ("post_public", "post_internal", "case_created") else None,
                     "changes": change_lines(share.events), "actor_name": actor_name},
            # an agent's answer to a customer is a person's mail, not an automatic one
            auto_submitted=None if (to_customer and by_agent_publicly) else "auto-generated",
            internal_token=main == "post_internal",
            from_name=_from_name(rt, case, post, to_customer, actor_name),
            in_reply_to=in_reply_to,
            attachments=list(post.attachments) if (post is not None and to_customer and by_agent_publicly) else [],
        )
        queue_case_mail(session, rt, case, mail)
        sent.append(share.recipient.email)
    return sent


def _from_name(rt: Runtime, case: Case, post: Post | None, to_customer: bool, actor_name: str) -> str | None:
    """"Alice Agent (Example Support)" for a person's post: the name, never the agent's address."""
    if post is None:
        return None
    name = actor_name or (case.requester.name if post.author_kind == "customer" else "")
    if not name:
        return None
    return f"{name} ({mailbox_name(rt, case)})" if to_customer else f"{name} via {mailbox_name(rt, case)}"
