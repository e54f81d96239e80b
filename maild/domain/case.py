"""What a decision sees of a case (`CaseSnapshot`) and the changes it plans for one.

Mail commands, routing rules, the SLA timer and `maild case update` all plan with these types,
and storage applies them (store.changes): plain frozen data, so a plan can be checked, logged
and tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CaseSnapshot:
    """What planning needs to know about the case, to refuse nothing it need not and drop no-ops."""

    stage: str
    queue: str | None
    assignee: str | None  # agent email or None
    tags: tuple[str, ...]
    due_at: datetime | None  # aware UTC
    followers: tuple[str, ...]
    attachments: tuple[str, ...] = ()  # filenames of the case's attachments (for /detach)


@dataclass(frozen=True)
class FieldChange:
    """One field of the case: stage, queue, assignee, type, priority, due_at, closed_reason,
    root_cause, or "field:<name>" for a custom field."""

    field: str
    value: object  # str | datetime | None


@dataclass(frozen=True)
class TagChange:
    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class FollowChange:
    address: str
    follow: bool


@dataclass(frozen=True)
class ForwardRequest:
    """Not a change of the case: the caller mails the case to `address`. Internal notes go along
    only when the agent asked ("/forward x@y.test notes"), as the recipient is often a customer."""

    address: str
    with_notes: bool


@dataclass(frozen=True)
class DetachRequest:
    """Remove the case's attachments of this file name (the stored bytes stay, by hash)."""

    filename: str


Change = FieldChange | TagChange | FollowChange | ForwardRequest | DetachRequest
