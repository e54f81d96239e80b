"""A case's contract and SLA clocks, kept on the case as it changes (SPEC §8). Never commits.

Above both the SLA arithmetic (rules.sla) and storage (store.*), so that storage imports no
rules (issue 22 §2); it was store/sla_state.py.

Clocks count business time of the contract's calendar, pause while the case is pending and
stop when the first public agent answer goes out (first response) or the case is resolved
or closed (resolution).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from maild.config import Config
from maild.domain.case import Change, FieldChange, TagChange
from maild.domain.stages import DONE_STAGES as DONE_STAGES
from maild.domain.stages import Stage
from maild.rules.sla import WARN_AT, start_clocks, targets_for
from maild.store.cases import record_change
from maild.store.changes import apply_changes
from maild.store.contracts import contract_for
from maild.store.models import Case, Event, Post


def apply_contract(session: Session, cfg: Config, case: Case, now: datetime) -> list[Event]:
    """A new case takes its requester's (or organization's) best contract: its team, agent and
    tag, in the history under the contract's name."""
    if not cfg.contracts:
        return []
    contract = contract_for(session, cfg, case.requester)
    if contract is None:
        return []
    case.contract = contract.name
    rule = f"contract {contract.name}"
    record_change(session, case, field="contract", old=None, new=contract.name, actor=rule, via="rule", now=now,
                  rule=rule)
    changes: list[Change] = []
    if contract.team:
        changes.append(FieldChange("queue", contract.team))
    if contract.agent:
        changes.append(FieldChange("assignee", contract.agent.lower()))
    if contract.tag:
        changes.append(TagChange((contract.tag.lower(),), ()))
    return apply_changes(session, case, changes, actor=rule, via="rule", now=now, rule=rule)


def start_sla(cfg: Config, calendars: dict, case: Case) -> None:  # type: ignore[type-arg]
    targets = targets_for(cfg, cfg.contract(case.contract) if case.contract else None, case.priority, case.type)
    if targets is None:
        return
    clocks = start_clocks(targets, case.created_at, calendars)
    case.first_response_due_at = clocks.first_response_due_at
    case.due_at = clocks.due_at
    case.first_response_warn_at = clocks.first_response_warn_at
    case.resolution_warn_at = clocks.resolution_warn_at


def _calendar(cfg: Config, calendars: dict, case: Case):  # type: ignore[no-untyped-def, type-arg]
    contract = cfg.contract(case.contract) if case.contract else None
    return calendars.get(contract.calendar if contract else cfg.sla.calendar) or calendars["24x7"]


def _targets(cfg: Config, case: Case) -> dict[str, timedelta | None]:
    t = targets_for(cfg, cfg.contract(case.contract) if case.contract else None, case.priority, case.type)
    return {"first_response": t.first_response if t else None, "resolution": t.resolution if t else None}


def _due_field(clock: str) -> tuple[str, str]:
    return ("first_response_due_at", "first_response_warn_at") if clock == "first_response" else \
        ("due_at", "resolution_warn_at")


def _running_clocks(case: Case) -> list[str]:
    clocks = []
    if case.first_response_due_at is not None and case.first_response_at is None:
        clocks.append("first_response")
    if case.due_at is not None and case.resolved_at is None:
        clocks.append("resolution")
    return clocks


def follow_sla(session: Session, cfg: Config, calendars: dict, case: Case, events: list[Event],  # type: ignore[type-arg]
               post: Post | None, now: datetime) -> None:
    """Moves the clocks for what this transaction did."""
    if post is not None and post.author_kind == "agent" and post.visibility == "public" \
            and case.first_response_at is None:
        case.first_response_at = now
    for event in events:
        if event.kind != "stage_changed":
            continue
        old, new = event.data.get("old"), event.data.get("new")
        if new in DONE_STAGES:
            case.resolved_at = case.resolved_at or now
            case.sla_paused_at = None
        elif old in DONE_STAGES:
            case.resolved_at = None  # reopened: the resolution clock runs on from where it stood
        if new == Stage.PENDING and case.sla_paused_at is None:
            _pause(cfg, calendars, case, now)
        elif old == Stage.PENDING and new != Stage.PENDING and case.sla_paused_at is not None:
            _resume(cfg, calendars, case, now)


def _pause(cfg: Config, calendars: dict, case: Case, now: datetime) -> None:  # type: ignore[type-arg]
    cal = _calendar(cfg, calendars, case)
    remaining = {}
    for clock in _running_clocks(case):
        due = getattr(case, _due_field(clock)[0])
        remaining[clock] = cal.elapsed(now, due).total_seconds() if due > now else 0.0
    case.sla_paused_at = now
    case.sla_remaining = remaining


def _resume(cfg: Config, calendars: dict, case: Case, now: datetime) -> None:  # type: ignore[type-arg]
    cal = _calendar(cfg, calendars, case)
    targets = _targets(cfg, case)
    for clock, seconds in (case.sla_remaining or {}).items():
        left = timedelta(seconds=float(seconds))
        due_field, warn_field = _due_field(clock)
        setattr(case, due_field, cal.add(now, left))
        target = targets.get(clock)
        if target is not None:
            until_warning = max(left - target * (1 - WARN_AT), timedelta(0))
            setattr(case, warn_field, cal.add(now, until_warning))
    case.sla_paused_at = None
    case.sla_remaining = {}


def due_sla_events(case: Case, now: datetime) -> list[tuple[str, str]]:
    """(clock, event kind) pairs that are due and not yet sent: each is sent exactly once."""
    if case.sla_paused_at is not None or case.stage in DONE_STAGES:
        return []
    sent = set(case.sla_events_sent or [])
    out = []
    for clock in _running_clocks(case):
        due_field, warn_field = _due_field(clock)
        due, warn = getattr(case, due_field), getattr(case, warn_field)
        if due is not None and due <= now and f"{clock}:sla_breached" not in sent:
            out.append((clock, "sla_breached"))
        elif warn is not None and warn <= now and f"{clock}:sla_warning" not in sent \
                and f"{clock}:sla_breached" not in sent:
            out.append((clock, "sla_warning"))
    return out
