"""Stages, priorities and case types: the values the database stores, defined once.

The enums are `StrEnum`s, so a member equals its stored string ("open" == Stage.OPEN). The
tuples hold the plain string values (not members), because they go into SQL (`stage IN (...)`)
and into messages a person reads, in this order.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class CaseType(StrEnum):
    QUESTION = "question"
    INCIDENT = "incident"
    PROBLEM = "problem"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
# The work still to do: the open-case counts, views and contract limits count these.
OPEN_STAGES: tuple[str, ...] = (Stage.NEW.value, Stage.OPEN.value, Stage.PENDING.value)
# Done: where the resolution clock stops and reports count a case as closed.
DONE_STAGES: tuple[str, ...] = (Stage.RESOLVED.value, Stage.CLOSED.value)
# A customer's mail to a case in one of these puts it back to open (a closed case starts a new one).
REOPENING_STAGES: tuple[str, ...] = (Stage.PENDING.value, Stage.RESOLVED.value)

PRIORITIES: tuple[str, ...] = tuple(p.value for p in Priority)  # in rising order: escalation takes the next
TYPES: tuple[str, ...] = tuple(t.value for t in CaseType)
