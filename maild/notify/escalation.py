"""The SLA timer: warnings at 80 % and breaches at 100 % of a target, each exactly once.

Due times are columns of the case and what was sent is recorded with it in the same
transaction, so a restart neither repeats nor forgets an escalation. A breach tells the
team's managers (per the notification matrix) and may raise the priority (`[sla]
raise_priority_on_breach`).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from maild.notify.fanout import queue_notifications
from maild.rules.commands import PRIORITIES, FieldChange
from maild.runtime import Runtime
from maild.store.cases import record_event
from maild.store.changes import apply_changes
from maild.store.models import Case
from maild.store.sla_state import DONE_STAGES, due_sla_events

TIMER = "timer"


def raise_due_sla_events(session: Session, rt: Runtime, limit: int = 200) -> int:
    """One pass over the cases whose SLA clocks need telling; returns how many events were raised."""
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
        raised_priority = False
        for clock, kind in due:
            events.append(record_event(session, case, kind, TIMER, now, clock=clock,
                                       due=(case.first_response_due_at if clock == "first_response"
                                            else case.due_at).isoformat()))
            case.sla_events_sent = [*(case.sla_events_sent or []), f"{clock}:{kind}"]
            if kind == "sla_breached" and rt.config.sla.raise_priority_on_breach and not raised_priority:
                raised_priority = True  # one step a pass, even when both clocks break at once
                higher = PRIORITIES[min(PRIORITIES.index(case.priority) + 1, len(PRIORITIES) - 1)]
                events += apply_changes(session, case, [FieldChange("priority", higher)], actor=TIMER, via="timer",
                                        now=now)
        queue_notifications(session, rt, case, events, post=None, in_reply_to=None)
        raised += len(due)
    return raised
