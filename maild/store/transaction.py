"""What one database transaction keeps for itself: one `TxState`, tied to the session's
transaction by SQLAlchemy's session events, so it begins and ends with that transaction and
nobody has to remember to clear it.

The state is caches and deferred work that are true only inside the transaction: the
connection store.rows writes on, the rows it writes later in one executemany, the contacts
created in it that no mail was queued to yet, the cases' Message-ID streams. Every user names
its field; there are no string keys to know.

Its life, for every session however made (the ingest writer's, the outbox worker's, the
CLI's, a test's):
- `tx_state(session)` gives the state of the session's current transaction, made at its first
  use (a session asked before its transaction begins gets it for the one that begins next);
- the end of the outermost transaction (commit, rollback, close) drops it: the next
  transaction starts with a new one;
- a rolled-back SAVEPOINT drops it too: the rows and contacts it tells of may be gone with
  the SAVEPOINT (the writer runs each mail of a batch in one), and the jobs before it have
  written their deferred rows already.

Why events rather than a scope the writer opens: the same store functions run in sessions the
writer never sees (the CLI's `case update`, the outbox worker, `maild inspect`, tests), and a
scope would have to be opened in each. Passing the state explicitly as an argument would mean
a `tx` parameter on every function from ingest.pipeline down to store.rows (the pipeline,
casework, notify, sla_clocks and store modules, ~60 signatures) for the sake of four fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, event
from sqlalchemy.orm import Session, SessionTransaction

_KEY = "maild.transaction"  # the one entry of Session.info this module owns


@dataclass(slots=True, eq=False)
class TxState:
    """Everything one transaction keeps for itself (module docstring)."""

    connection: Connection | None = None  # store.rows: Session.connection() costs more than most statements
    later: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)  # store.rows.insert_later's rows
    unmailed_contacts: set[str] = field(default_factory=set)  # store.contacts: created here, no mail queued yet
    # notify.casemail: each case's store.cases.Stream, read once a transaction (the type is not
    # imported: store.cases imports store.rows, which imports this)
    streams: dict[int, Any] = field(default_factory=dict)


def tx_state(session: Session) -> TxState:
    """The state of the session's current transaction, made at its first use."""
    state: TxState | None = session.info.get(_KEY)
    if state is None:
        state = session.info[_KEY] = TxState()
    return state


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: a SAVEPOINT that is released keeps it
        session.info.pop(_KEY, None)


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:  # a SAVEPOINT: what the state says may have gone with it
        session.info.pop(_KEY, None)


event.listen(Session, "after_transaction_end", _transaction_ended)
event.listen(Session, "after_soft_rollback", _rolled_back)
