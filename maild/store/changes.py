"""Applying planned case changes: the field, its history entry and its event, together.

Mail commands, the CLI and (later) rules all change cases through here, so every change is
recorded the same way (SPEC §5: who, when, how, old and new value).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from maild.domain.case import CaseSnapshot, Change, FieldChange, FollowChange, TagChange
from maild.store.cases import record_change, record_event
from maild.store.models import Attachment, Case, CaseFollower, CaseTag, Event

FIELD_EVENTS = {"stage": "stage_changed", "queue": "queue_changed", "assignee": "assigned",
                "priority": "priority_changed", "due_at": "due_changed"}


def _shown(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def follow(case: Case, address: str, kind: str) -> bool:
    address = address.lower()
    if any(f.address == address for f in case.followers):
        return False
    case.followers.append(CaseFollower(address=address, kind=kind))
    return True


def unfollow(case: Case, address: str) -> bool:
    before = len(case.followers)
    case.followers[:] = [f for f in case.followers if f.address != address.lower()]
    return len(case.followers) != before


def apply_changes(session: Session, case: Case, changes: list[Change], *, actor: str, via: str,
                  now: datetime, rule: str | None = None) -> list[Event]:
    """Applies field, tag and follow changes; returns the events they raise. Forward requests
    are not changes of the case and are left to the caller."""
    events: list[Event] = []
    for change in changes:
        if isinstance(change, FieldChange):
            events += _apply_field(session, case, change, actor=actor, via=via, now=now, rule=rule)
        elif isinstance(change, TagChange):
            current = [t.tag for t in case.tags]
            added = [t for t in change.add if t not in current]
            removed = [t for t in change.remove if t in current]
            if not added and not removed:
                continue
            case.tags[:] = [t for t in case.tags if t.tag not in removed] + [CaseTag(tag=t) for t in added]
            new = sorted((set(current) - set(removed)) | set(added))
            record_change(session, case, field="tags", old=", ".join(sorted(current)), new=", ".join(new),
                          actor=actor, via=via, now=now, rule=rule)
            events.append(record_event(session, case, "tags_changed", actor, now, added=added, removed=removed))
        elif isinstance(change, FollowChange):
            if change.follow:
                follow(case, change.address, "agent")
            else:
                unfollow(case, change.address)
    if any(e.kind == "stage_changed" and e.data.get("new") == "closed" for e in events):
        events.append(record_event(session, case, "closed", actor, now, reason=case.closed_reason))
    if events:
        case.updated_at = now
    return events


def _apply_field(session: Session, case: Case, change: FieldChange, *, actor: str, via: str, now: datetime,
                 rule: str | None) -> list[Event]:
    if change.field.startswith("field:"):
        name = change.field.split(":", 1)[1]
        old = (case.fields or {}).get(name)
        if old == change.value:
            return []
        case.fields = {**(case.fields or {}), name: change.value}
        record_change(session, case, field=f"field:{name}", old=old, new=change.value, actor=actor, via=via,
                      now=now, rule=rule)
        return []
    old = getattr(case, change.field)
    if old == change.value:
        return []
    setattr(case, change.field, change.value)
    record_change(session, case, field=change.field, old=_shown(old), new=_shown(change.value), actor=actor,
                  via=via, now=now, rule=rule)
    events = []
    kind = FIELD_EVENTS.get(change.field)
    if kind:
        events.append(record_event(session, case, kind, actor, now, old=_shown(old), new=_shown(change.value)))
    if change.field == "assignee" and change.value:
        follow(case, str(change.value), "agent")  # the assignee follows the case
    return events


def case_snapshot(case: Case) -> CaseSnapshot:
    """What command planning needs to know of a case."""
    return CaseSnapshot(stage=case.stage, queue=case.queue, assignee=case.assignee,
                        tags=tuple(t.tag for t in case.tags), due_at=case.due_at,
                        followers=tuple(f.address for f in case.followers),
                        attachments=tuple(a.filename for a in live_attachments(case)))


def live_attachments(case: Case) -> list[Attachment]:
    return [a for p in case.posts for a in p.attachments if a.removed_at is None]


def detach_attachments(session: Session, case: Case, names_or_hashes: list[str], *, actor: str, via: str,
                       now: datetime) -> list[Event]:
    """Takes attachments off the case (by file name or SHA-256); the bytes stay in the store,
    named by hash, as the raw mail that brought them does."""
    events = []
    wanted = {n.casefold() for n in names_or_hashes}
    for a in live_attachments(case):
        if a.filename.casefold() in wanted or a.sha256 in wanted:
            a.removed_at = now
            record_change(session, case, field="attachments", old=a.filename, new=None, actor=actor, via=via, now=now)
            events.append(record_event(session, case, "attachment_removed", actor, now, filename=a.filename,
                                       sha256=a.sha256))
    return events


