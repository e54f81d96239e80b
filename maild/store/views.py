"""Cases as plain data for `--json` output (SPEC §13)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from maild.config import Config
from maild.domain.stages import OPEN_STAGES
from maild.store.models import Case, Contact, Organization, OutboxMail

PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def contact_data(c: Contact) -> dict[str, Any]:
    return {"email": c.email, "name": c.name}


def organization_data(o: Organization | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {"id": o.id, "name": o.name, "domains": [d.domain for d in o.domains]}


def case_summary(c: Case) -> dict[str, Any]:
    return {
        "number": c.number,
        "subject": c.subject,
        "mailbox": c.mailbox,
        "stage": c.stage,
        "queue": c.queue,
        "assignee": c.assignee,
        "priority": c.priority,
        "type": c.type,
        "tags": [t.tag for t in c.tags],
        "organization": organization_data(c.organization),
        "requester": contact_data(c.requester),
        "participants": [contact_data(p.contact) for p in c.participants],
        "followers": [f.address for f in c.followers],
        "linked_case": c.linked_case,
        "contract": c.contract,
        "first_response_at": _time(c.first_response_at),
        "resolved_at": _time(c.resolved_at),
        "root_cause": c.root_cause,
        "closed_reason": c.closed_reason,
        "fields": c.fields or {},
        "due_at": _time(c.due_at),
        "first_response_due_at": _time(c.first_response_due_at),
        "snoozed_until": _time(c.snoozed_until),
        "created_at": _time(c.created_at),
        "updated_at": _time(c.updated_at),
    }


def case_detail(c: Case) -> dict[str, Any]:
    data = case_summary(c)
    data["posts"] = [{
        "id": p.id,
        "visibility": p.visibility,
        "author": p.author,
        "author_kind": p.author_kind,
        "source": p.source,
        "body": p.body,
        "attachments": [{"filename": a.filename, "size": a.size, "sha256": a.sha256,
                         "content_type": a.content_type, "inline": a.inline}
                        for a in p.attachments if a.removed_at is None],
        "message_id": p.message.message_id if p.message else None,
        "created_at": _time(p.created_at),
    } for p in c.posts]
    data["history"] = [{
        "field": h.field, "old": h.old_value, "new": h.new_value, "actor": h.actor, "via": h.via,
        "rule": h.rule, "at": _time(h.created_at),
    } for h in c.history]
    return data


def outbox_data(m: OutboxMail) -> dict[str, Any]:
    return {"id": m.id, "case": m.case_number, "kind": m.kind, "recipient": m.recipient,
            "message_id": m.message_id, "status": m.status, "attempts": m.attempts,
            "last_error": m.last_error, "created_at": _time(m.created_at), "sent_at": _time(m.sent_at),
            "next_attempt_at": _time(m.next_attempt_at) if m.status == "pending" else None}


def queue_order(cases: list[Case], cfg: Config) -> list[Case]:
    """Open cases first: higher contract rating, then higher priority, then the earlier due
    date (SPEC §8); then the rest by number."""
    def key(c: Case) -> tuple[object, ...]:
        if c.stage not in OPEN_STAGES:
            return (1, 0, 0, FAR_FUTURE, c.number)
        contract = cfg.contract(c.contract) if c.contract else None
        due = min([d for d in (c.due_at, c.first_response_due_at if c.first_response_at is None else None) if d],
                  default=FAR_FUTURE)
        return (0, -(contract.rating if contract else 0), PRIORITY_RANK.get(c.priority, 9), due, c.number)
    return sorted(cases, key=key)
