"""The writer thread under faults, on real databases: a failing job costs only its own mail
(also when it failed in a statement store.rows ran), nothing a job or a hook raises ends the
thread, and an SMTP session's wait for its commit is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from maild.ingest.pipeline import ingest_message
from maild.ingest.receive import PendingReceive, ReceiveResult
from maild.ingest.writer import IngestWriter, StorageError
from maild.store.models import Case, Contact
from maild.store.rows import insert_row
from tests.support.pipeline_desk import T0, Desk, mail


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> Desk:
    return Desk(engine, tmp_path)


def ingest(desk: Desk, sender: str):  # type: ignore[no-untyped-def]
    from maild.ingest.parse import parse_message
    from maild.ingest.receive import deliveries_for

    (delivery,) = deliveries_for(desk.rt, ["support@example.com"], "x@client.test", "smtp")
    msg = parse_message(mail(sender, sender.split("@")[0].title()))
    return lambda s: ingest_message(s, msg, delivery, desk.rt)


def test_a_row_written_by_store_rows_that_fails_costs_only_its_mail(desk: Desk) -> None:
    """The failing statement runs on the connection store.rows keeps, before the job asks the
    session for anything: it must still be inside the job's SAVEPOINT (on PostgreSQL the
    transaction was aborted and every later mail of the batch answered 451)."""
    desk.ingest(mail("jane@acme.test", "Before"))

    def duplicate_contact(s: Session) -> None:
        insert_row(s, Contact(email="jane@acme.test", name="Again", created_at=T0))

    writer = IngestWriter(desk.sessions)
    jobs = [writer.submit(ingest(desk, "ann@acme.test")), writer.submit(duplicate_contact),
            writer.submit(ingest(desk, "bob@acme.test")), writer.submit(ingest(desk, "cat@acme.test"))]
    writer.start()  # queued already: one batch
    writer.stop()
    with pytest.raises(StorageError):
        jobs[1].result()
    assert [j.result().action for j in (jobs[0], jobs[2], jobs[3])] == ["created"] * 3
    assert desk.q(lambda s: s.scalar(select(func.count(Case.number)))) == 4


def test_nothing_a_job_or_the_hook_raises_ends_the_writer(desk: Desk) -> None:
    writer = IngestWriter(desk.sessions)

    def exits(s: Session) -> None:
        raise SystemExit("a library that calls exit()")

    def hook() -> None:
        raise RuntimeError("the event loop is closed")

    writer.after_commit = hook
    writer.start()
    try:
        with pytest.raises(StorageError, match="SystemExit"):
            writer.submit(exits).result(10)
        assert writer.submit(ingest(desk, "ann@acme.test")).result(10).action == "created"
        assert writer.submit(ingest(desk, "bob@acme.test")).result(10).action == "created"
        assert writer.health.running and writer.health.last_commit is not None
    finally:
        writer.stop()
    assert not writer.health.running


def test_a_session_waits_for_its_commit_no_longer_than_its_bound(desk: Desk) -> None:
    """A database that hangs: the sender hears 451 in time, and a mail still queued then is
    withdrawn, not stored later behind the sender's back."""
    writer = IngestWriter(desk.sessions)
    release = threading.Event()
    writer.start()
    try:
        started = threading.Event()

        def hangs(s: Session) -> bool:
            started.set()
            return release.wait(30)

        stuck = writer.submit(hangs)
        assert started.wait(10)
        queued = writer.submit(ingest(desk, "ann@acme.test"))
        pending = PendingReceive(lambda: ReceiveResult(stored=True, outcomes=[]), queued)
        t0 = time.monotonic()
        result = asyncio.run(pending.finish_on_loop(timeout=0.5))
        assert not result.stored and time.monotonic() - t0 < 5
        release.set()
        assert stuck.result(10) is True
        assert writer.submit(ingest(desk, "bob@acme.test")).result(10).action == "created"
    finally:
        release.set()
        writer.stop()
    contacts = desk.q(lambda s: sorted(s.scalars(select(Contact.email))))
    assert contacts == ["bob@acme.test"]  # Ann's mail was withdrawn: her retry is the one stored
