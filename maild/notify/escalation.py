"""The old import path of the SLA timer, which now runs the one sequence of maild.casework.

Kept only until maild/daemon.py and tests/e2e/test_report.py import
`maild.casework.raise_due_sla_events`; then this module goes (notify must not depend on
casework, which sits above it). The import is in the function so that importing notify
never loads casework.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from maild.runtime import Runtime


def raise_due_sla_events(session: Session, rt: Runtime, limit: int = 200) -> int:
    """See maild.casework.raise_due_sla_events."""
    from maild.casework import raise_due_sla_events as timer

    return timer(session, rt, limit)
