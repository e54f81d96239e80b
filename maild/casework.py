"""The one sequence that changes a case, whoever asks: an agent's mail, `maild case update`, the SLA timer.

`change_case` runs, in this order and inside the caller's transaction (it commits nothing):
1. plan: the commands against a snapshot of the case (rules.commands.plan_commands), plus the
   caller's errors found earlier (lines of a mail that do not parse) and attachments to take
   off that the case does not have; with any error nothing is changed (all-or-nothing) and
   the errors come back for the caller to report;
2. apply: field, tag and follow changes, each with its history entry and event (store.changes);
3. the caller's own addition, if any (an agent mail's post and its attachments: `write_post`);
4. detach: /detach and --remove-attachment take attachments off the case;
5. rules: `[[rules]]` on every event of the transaction (their actions' events run no rules);
6. SLA: the clocks follow what happened (first response, pause while pending, resolved);
7. forward: /forward mails the case to an address;
8. notify: one mail per recipient for all the events of the transaction (notify.fanout).

The SLA timer (`raise_due_sla_events`) records its warnings and breaches as events that
happened already and hands them, with a priority raise on breach, to the same sequence.
This module sits above store, rules and notify, and below ingest, the CLI and the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from maild.config import AgentConfig
from maild.domain.case import Change, DetachRequest, FieldChange, ForwardRequest
from maild.domain.stages import DONE_STAGES, PRIORITIES
from maild.notify.audiences import Recipient
from maild.notify.casemail import CaseMail, mailbox_name, queue_case_mail
from maild.notify.fanout import queue_notifications
from maild.rules.commands import Command, CommandError, plan_commands
from maild.rules.routing import Facts, plan_rules
from maild.runtime import Runtime
from maild.sla_clocks import due_sla_events, follow_sla
from maild.store import cases as case_store
from maild.store.changes import apply_changes, case_snapshot, detach_attachments, live_attachments
from maild.store.models import Case, Event, Post

__all__ = ["CaseChange", "Routed", "apply_rules", "change_case", "queue_forward", "raise_due_sla_events", "update_case"]

TIMER = "timer"  # the actor and `via` of what the SLA timer does


@dataclass
class CaseChange:
    """What one run of the sequence did; with `errors`, nothing at all."""

    errors: list[CommandError] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    post: Post | None = None
    forwarded: list[str] = field(default_factory=list)  # addresses /forward mailed the case to
    notified: list[str] = field(default_factory=list)  # recipients of the notifications


def change_case(session: Session, rt: Runtime, case: Case, *, actor: AgentConfig | str, via: str,
                commands: Sequence[Command] = (), changes: Sequence[Change] = (),
                refused: Sequence[CommandError] = (), remove_attachments: Sequence[str] = (),
                events: Sequence[Event] = (),
                write_post: Callable[[], tuple[Post | None, list[Event]]] | None = None,
                run_rules: bool = True, notify: bool = True, in_reply_to: str | None = None,
                now: datetime | None = None) -> CaseChange:
    """Plan → apply → (post) → detach → rules → SLA → forward → notify, all-or-nothing.

    `actor`: the agent whose commands these are, or the name of a system actor (the timer),
    which gives no commands. `changes`: changes decided already (the timer's priority raise),
    applied after the planned ones. `refused`: errors the caller found before planning; they
    come first in the result. `remove_attachments`: names or SHA-256s (the CLI's
    --remove-attachment), each of which must be on the case. `events`: raised already in this
    transaction (the timer's warnings and breaches); they come first and are notified too.
    `write_post`: called after the changes, returns the post it wrote and its events.
    `run_rules`: False for the timer, whose events have never run rules (a rule on
    `event = sla_breached` or `priority_changed` would otherwise start acting on timer runs).
    `notify`: False for a robot's mail (an agent's out-of-office), which sets off no mail.
    """
    now = now or rt.clock()
    agent = actor if isinstance(actor, AgentConfig) else None
    if commands and agent is None:
        raise ValueError("commands need an agent to plan them for")
    planned: list[Change] = []
    errors = list(refused)
    if agent is not None:
        plan = plan_commands(list(commands), case_snapshot(case), agent, rt.config, now)
        planned, errors = plan.changes, errors + plan.errors
    if remove_attachments:
        live = live_attachments(case)
        known = {a.filename.casefold() for a in live} | {a.sha256 for a in live}
        errors += [CommandError(0, f"--remove-attachment {r}", f"no such attachment on case #{case.number}")
                   for r in remove_attachments if r.casefold() not in known]
    if errors:
        return CaseChange(errors=errors)

    actor_id = agent.email.lower() if agent is not None else str(actor)
    done = CaseChange(events=list(events))
    applied = [c for c in planned if not isinstance(c, ForwardRequest | DetachRequest)] + list(changes)
    done.events += apply_changes(session, case, applied, actor=actor_id, via=via, now=now)
    if write_post is not None:
        done.post, post_events = write_post()
        done.events += post_events
    detach = [c.filename for c in planned if isinstance(c, DetachRequest)] + list(remove_attachments)
    done.events += detach_attachments(session, case, detach, actor=actor_id, via=via, now=now)
    routed = Routed()
    if run_rules:
        routed = apply_rules(session, rt, case, done.events, post=done.post, sender=actor_id)
        done.events += routed.events
    follow_sla(session, rt.config, rt.calendars, case, done.events, done.post, now)
    for forward in (c for c in planned if isinstance(c, ForwardRequest)):
        assert agent is not None  # only commands forward
        queue_forward(session, rt, case, forward, agent)
        done.forwarded.append(forward.address)
    if notify:
        done.notified = queue_notifications(session, rt, case, done.events, post=done.post, in_reply_to=in_reply_to,
                                            actor_name=agent.name if agent is not None else "",
                                            extra=routed.notify)
    return done


def update_case(session: Session, rt: Runtime, case: Case, commands: list[Command], actor: AgentConfig, *,
                via: str, remove_attachments: list[str] | None = None) -> tuple[list[str], list[str]]:
    """`maild case update`: the mail commands' sequence, all-or-nothing. Returns (event kinds,
    errors as the CLI prints them); with errors nothing is changed."""
    done = change_case(session, rt, case, actor=actor, via=via, commands=commands,
                       remove_attachments=remove_attachments or ())
    if done.errors:
        return [], [f"{e.source}: {e.reason}" for e in done.errors]
    return [e.kind for e in done.events], []


# --- rules ---------------------------------------------------------------------------------

@dataclass
class Routed:
    """What rules did in one transaction: their events, who else to tell, auto-replies to send."""

    events: list[Event] = field(default_factory=list)
    notify: dict[str, list[str]] = field(default_factory=dict)
    auto_replies: dict[str, str] = field(default_factory=dict)  # event kind -> template


def apply_rules(session: Session, rt: Runtime, case: Case, events: list[Event], *, post: Post | None,
                sender: str) -> Routed:
    """Runs `[[rules]]` for each event of the transaction; their actions are in the history under
    the rule's name. Events that rules raise run no rules again. (A customer's mail runs this
    directly: its case is opened or threaded by the pipeline, not changed by commands.)"""
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


def queue_forward(session: Session, rt: Runtime, case: Case, forward: ForwardRequest, agent: AgentConfig) -> None:
    """/forward: summary, history and posts; internal notes only when asked for."""
    posts = [p for p in case.posts if forward.with_notes or p.visibility == "public"]
    queue_case_mail(session, rt, case, CaseMail(
        template=case_store.FORWARD, recipient=Recipient(forward.address, "", "customer"),
        auto_submitted="auto-generated",
        from_name=f"{agent.name or agent.email} via {mailbox_name(rt, case)}",
        context={"posts": posts, "history": list(case.history), "actor_name": agent.name or agent.email}))


# --- the SLA timer ---------------------------------------------------------------------------

def raise_due_sla_events(session: Session, rt: Runtime, limit: int = 200) -> int:
    """One pass over the cases whose SLA clocks need telling; returns how many events were raised.

    Warnings at 80 % and breaches at 100 % of a target, each exactly once: due times are
    columns of the case and what was sent is recorded with it in the same transaction, so a
    restart neither repeats nor forgets an escalation. A breach tells the team's managers
    (per the notification matrix) and may raise the priority (`[sla] raise_priority_on_breach`).
    """
    now = rt.clock()
    candidates = session.scalars(
        select(Case).where(
            Case.stage.not_in(DONE_STAGES), Case.sla_paused_at.is_(None),
            or_(and_(Case.first_response_at.is_(None), Case.first_response_warn_at <= now),
                and_(Case.first_response_at.is_(None), Case.first_response_due_at <= now),
                and_(Case.resolved_at.is_(None), Case.resolution_warn_at <= now),
                and_(Case.resolved_at.is_(None), Case.due_at <= now)))
        .order_by(Case.number).limit(limit)
    ).all()
    raised = 0
    for case in candidates:
        due = due_sla_events(case, now)
        if not due:
            continue
        events = []
        for clock, kind in due:
            events.append(case_store.record_event(session, case, kind, TIMER, now, clock=clock,
                                                  due=(case.first_response_due_at if clock == "first_response"
                                                       else case.due_at).isoformat()))
            case.sla_events_sent = [*(case.sla_events_sent or []), f"{clock}:{kind}"]
        raise_priority: list[Change] = []
        if rt.config.sla.raise_priority_on_breach and any(kind == "sla_breached" for _, kind in due):
            # one step a pass, even when both clocks break at once
            higher = PRIORITIES[min(PRIORITIES.index(case.priority) + 1, len(PRIORITIES) - 1)]
            raise_priority.append(FieldChange("priority", higher))
        change_case(session, rt, case, actor=TIMER, via=TIMER, changes=raise_priority, events=events,
                    run_rules=False, now=now)
        raised += len(due)
    return raised
