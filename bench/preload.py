"""Fills a maild database with old cases before a run, to see whether ingest slows down as
the desk grows (issue 6: 100,000 cases with 300,000 messages).

Core bulk inserts, not the pipeline: this is about the size of the tables maild queries,
not about how they were filled. Old cases are mostly closed, as on a real desk.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, insert, select

from maild.store.db import make_engine, upgrade_database
from maild.store.models import Case, Contact, Message, Organization, OrganizationDomain, RawMessage

CHUNK = 5_000
MESSAGES_PER_CASE = 3


def _advance_sequences(conn: Connection) -> None:
    """The rows above carry their keys; PostgreSQL's sequences did not hand them out, so they
    are moved past them, or maild's first new organization, contact or case collides."""
    if conn.dialect.name != "postgresql":
        return  # SQLite takes the next rowid after the largest
    for column in (Organization.id, OrganizationDomain.id, Contact.id, Case.number):
        table = column.property.columns[0].table.name
        conn.execute(select(func.setval(func.pg_get_serial_sequence(table, column.key),
                                        select(func.max(column)).scalar_subquery())))


def preload_database(url: str, cases: int) -> dict[str, int]:
    """Creates the schema and `cases` cases with three messages each; returns the row counts."""
    engine = make_engine(url)
    upgrade_database(engine)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    orgs = max(1, cases // 100)
    contacts = max(1, cases // 2)
    with engine.begin() as conn:
        conn.execute(insert(Organization), [
            {"id": i + 1, "name": f"old{i}.test", "type": None, "fields": {}, "created_at": start}
            for i in range(orgs)])
        conn.execute(insert(OrganizationDomain), [
            {"id": i + 1, "organization_id": i + 1, "domain": f"old{i}.test"} for i in range(orgs)])
        for lo in range(0, contacts, CHUNK):
            conn.execute(insert(Contact), [
                {"id": i + 1, "email": f"person{i}@old{i % orgs}.test", "name": f"Person {i}",
                 "organization_id": i % orgs + 1, "type": None, "state": "active", "fields": {},
                 "created_at": start, "last_mail_at": start}
                for i in range(lo, min(lo + CHUNK, contacts))])
        for lo in range(0, cases, CHUNK):
            rows, messages, raws = [], [], []
            for n in range(lo, min(lo + CHUNK, cases)):
                at = start + timedelta(minutes=n)
                rows.append({
                    "number": n + 1, "subject": f"Old case {n}", "mailbox": "support@example.com", "queue": "support",
                    "stage": "closed" if n % 10 < 7 else "open", "type": "question", "priority": "normal",
                    "assignee": None, "requester_id": n % contacts + 1, "organization_id": n % contacts % orgs + 1,
                    "fields": {}, "sla_events_sent": [], "sla_remaining": {}, "created_at": at, "updated_at": at})
                for k in range(MESSAGES_PER_CASE):
                    mid = f"old-{n}-{k}@old.test"
                    sha = hashlib.sha256(mid.encode()).hexdigest()
                    raws.append({"sha256": sha, "data": (mid.encode() + b" ") * (4000 // (len(mid) + 1))})
                    messages.append({
                        "case_number": n + 1, "mailbox": "support@example.com", "message_id": mid, "dedup_key": mid,
                        "sha256": sha, "size": 4000,
                        "from_address": f"person{n % contacts}@old.test", "subject": f"Old case {n}",
                        "classification": "normal", "matched_by": "new" if k == 0 else "references",
                        "received_at": at + timedelta(seconds=k)})
            conn.execute(insert(Case), rows)
            conn.execute(insert(Message), messages)
            conn.execute(insert(RawMessage), raws)  # their bytes, as maild keeps a small mail's
        _advance_sequences(conn)
    engine.dispose()
    return {"organizations": orgs, "contacts": contacts, "cases": cases, "messages": cases * MESSAGES_PER_CASE}
