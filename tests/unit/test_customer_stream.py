"""A case's stream per audience (SPEC §4, issue 18 point 11), in-process: what each outbound mail
names in In-Reply-To/References, and what reading the streams costs a transaction.

Statements are counted at the SQLite connection (its trace callback): maild's hot-path reads
go to the DBAPI cursor directly (store.rows), past SQLAlchemy's events."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from maild.config import AgentConfig, TeamConfig
from maild.store.db import make_engine, upgrade_database
from maild.store.models import OutboxMail
from maild.threading.tokens import make_token, reply_address
from tests.support.pipeline_desk import Desk, mail

TEAM = {"teams": [TeamConfig("support", ["alice@example.com", "bob@example.com"]), TeamConfig("billing")],
        "agents": [AgentConfig("alice@example.com", "Alice", "manager"), AgentConfig("bob@example.com", "Bob")]}
STREAM_READS = (re.compile(r"FROM messages\s+LEFT OUTER JOIN posts", re.I),
                re.compile(r"FROM outbox\s+WHERE outbox.case_number", re.I))


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Desk, list[str]]]:
    statements: list[str] = []
    engine = make_engine(f"sqlite:///{tmp_path}/m.db")

    @event.listens_for(engine, "connect")
    def _trace(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]

    upgrade_database(engine)
    yield Desk(engine, tmp_path, **TEAM), statements
    engine.dispose()


def ids(raw: bytes, header: str) -> list[str]:
    return re.findall(r"<([^<>\s]+)>", str(email.message_from_bytes(raw, policy=email.policy.default)[header] or ""))


def stream_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if any(p.search(s) for p in STREAM_READS)]


def test_customer_mail_names_no_note_and_streams_cost_what_one_stream_did(traced: tuple[Desk, list[str]]) -> None:
    desk, statements = traced
    del statements[:]  # the migrations'
    out = desk.ingest(mail("jane@acme.test", "Printer on fire", msgid="open@acme.test"))
    n = out.case_number
    new_case = len(statements)
    assert {m.recipient for m in desk.outbox()} == {"jane@acme.test", "alice@example.com", "bob@example.com"}
    assert stream_reads(statements) == []  # a new case: three mails, the stream known without a query

    alice = reply_address("support@example.com", make_token(desk.rt.secret, n, "alice@example.com"))
    desk.ingest(mail("alice@example.com", f"Re: [#{n}]", "#note\nLegacy plan.", to=alice, msgid="note@example.com"),
                rcpts=(alice,), mail_from="alice@example.com")
    del statements[:]
    desk.ingest(mail("alice@example.com", f"Re: [#{n}]", "#note\n/stage resolved", to=alice,
                     msgid="resolve@example.com", headers={"In-Reply-To": "<note@example.com>"}),
                rcpts=(alice,), mail_from="alice@example.com")
    # one read per table for both audiences, as one stream took
    assert len(stream_reads(statements)) == 2, stream_reads(statements)

    outbox = desk.outbox()
    to_agents = {m.message_id for m in outbox if m.recipient.endswith("@example.com")}
    (resolved,) = [m for m in outbox if m.recipient == "jane@acme.test" and m.kind != "case_created"]
    (ack,) = [m for m in outbox if m.recipient == "jane@acme.test" and m.kind == "case_created"]
    named = ids(resolved.raw, "In-Reply-To") + ids(resolved.raw, "References")
    assert named and not {"note@example.com", "resolve@example.com", *to_agents} & set(named)
    assert ids(resolved.raw, "In-Reply-To") == [ack.message_id]  # the newest mail Jane saw
    assert ids(resolved.raw, "References") == ["open@acme.test", ack.message_id]
    # agents' mails still thread on everything, the note included
    bob_mail = [m for m in outbox if m.recipient == "bob@example.com" and m.message_id not in
                {o.message_id for o in outbox if o.kind == "case_created"}]
    assert bob_mail == [] or "note@example.com" in ids(bob_mail[-1].raw, "References")
    print(f"\nstatements: new case {new_case}, note with /stage resolved {len(statements)}")


def test_a_forward_is_not_in_the_customer_stream(traced: tuple[Desk, list[str]]) -> None:
    desk, _ = traced
    n = desk.ingest(mail("jane@acme.test", "Printer on fire", msgid="open@acme.test")).case_number
    alice = reply_address("support@example.com", make_token(desk.rt.secret, n, "alice@example.com"))
    desk.ingest(mail("alice@example.com", f"Re: [#{n}]", "/forward vendor@partner.test", to=alice,
                     msgid="fwd@example.com"), rcpts=(alice,), mail_from="alice@example.com")
    desk.ingest(mail("alice@example.com", f"Re: [#{n}]", "Hi Jane, the vendor is on it.", to=alice,
                     msgid="answer@example.com"), rcpts=(alice,), mail_from="alice@example.com")
    outbox: list[OutboxMail] = desk.outbox()
    (forward,) = [m for m in outbox if m.recipient == "vendor@partner.test"]
    answer = [m for m in outbox if m.recipient == "jane@acme.test"][-1]
    assert forward.message_id not in ids(answer.raw, "References")
    assert ids(answer.raw, "In-Reply-To") == ["open@acme.test"]
