"""The writer thread under faults, on real databases: a failing job costs only its own mail
(also when it failed in a statement store.rows ran), nothing a job or a hook raises ends the
thread, and an SMTP session's wait for its commit is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from maild.config import ProtectionConfig
from maild.ingest.committer import Committer, Pending, Receipt
from maild.ingest.parse import parse_message
from maild.ingest.pipeline import ingest_message
from maild.ingest.wire import Envelope, ParsedMail
from maild.ingest.writer import IngestWriter, StorageError
from maild.store.models import Case, Contact
from maild.store.rows import insert_row
from tests.support.faults import break_inserts, mend_inserts
from tests.support.mails import mail as client_mail
from tests.support.pipeline_desk import T0, Desk, mail


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> Desk:
    return Desk(engine, tmp_path)


def ingest(desk: Desk, sender: str):  # type: ignore[no-untyped-def]
    from maild.ingest.committer import deliveries_for
    from maild.ingest.parse import parse_message

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
        pending = Pending(lambda: Receipt(stored=True, outcomes=[]), queued)
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


def _logged(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == event]


def test_a_mail_whose_job_fails_logs_its_failure_with_its_message_id_and_mailbox(desk: Desk, engine: Engine) -> None:
    """Issue 22 §8: the writer thread and the committer log about a mail with its message_id and
    mailbox bound (structlog contextvars), and unbind them after it: the next mail's lines and
    the writer's next job carry none of the failed mail's."""
    writer = IngestWriter(desk.sessions)
    committer = Committer(desk.rt, writer)
    envelope = Envelope("jane@acme.test", ["support@example.com"])
    failing = ParsedMail(parse_message(mail("jane@acme.test", "Printer", msgid="printer@acme.test")))
    fine = ParsedMail(parse_message(mail("bob@acme.test", "Scanner", msgid="scanner@acme.test")))
    probe = structlog.get_logger("tests.probe")
    writer.start()
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
            break_inserts(engine, "cases", "disk on fire")
            failed = asyncio.run(committer.commit(failing, envelope))
            assert structlog.contextvars.get_contextvars() == {}
            mend_inserts(engine, "cases")
            stored = asyncio.run(committer.commit(fine, Envelope("bob@acme.test", ["support+x@example.com"])))
            writer.submit(lambda s: probe.info("next job")).result(10)
    finally:
        writer.stop()
    assert not failed.stored and stored.stored
    (failure,) = _logged(entries, "message not stored, sender must retry")
    assert failure["message_id"] == "printer@acme.test" and failure["mailbox"] == "support@example.com"
    assert "disk on fire" in failure["error"]
    (ingested,) = _logged(entries, "message ingested")
    assert ingested["message_id"] == "scanner@acme.test" and ingested["mailbox"] == "support@example.com"
    assert ingested["case"] == stored.outcomes[0].case_number
    (next_job,) = _logged(entries, "next job")
    assert "message_id" not in next_job and "mailbox" not in next_job  # the writer thread kept nothing
    assert all(e.get("message_id") != "printer@acme.test" for e in entries if e is not failure)


def test_the_writers_job_failed_line_carries_what_its_caller_bound(desk: Desk) -> None:
    """'job failed' (a bug in a job, logged by the writer thread) says which mail it was."""
    writer = IngestWriter(desk.sessions)

    def bug(s: Session) -> None:
        raise RuntimeError("a bug on this mail")

    writer.start()
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
            with structlog.contextvars.bound_contextvars(message_id="odd@acme.test", mailbox="support@example.com"):
                job = writer.submit(bug)
            with pytest.raises(RuntimeError):
                job.result(10)
            writer.submit(ingest(desk, "ann@acme.test")).result(10)
    finally:
        writer.stop()
    (failed,) = _logged(entries, "job failed")
    assert failed["message_id"] == "odd@acme.test" and failed["mailbox"] == "support@example.com"
    assert all("message_id" not in e for e in entries if e is not failed)


def test_a_line_logged_once_the_case_is_known_carries_the_case(engine: Engine, tmp_path: Path) -> None:
    """Issue 22 §8: the pipeline binds the mail's case (structlog contextvars) once it has one,
    so its later lines carry it with the message_id and mailbox (here: the parts past [protection]
    max_mime_parts, a line that does not name the case itself); the writer's next job carries none."""
    desk = Desk(engine, tmp_path, protection=ProtectionConfig(max_mime_parts=1))
    writer = IngestWriter(desk.sessions)
    committer = Committer(desk.rt, writer)
    parts = [(f"scan-{n}.txt", "text/plain", f"page {n}".encode()) for n in range(3)]
    raw = client_mail("jane@acme.test", "support@example.com", "Scans", "Three pages.", msgid="scans@acme.test",
                      attachments=parts)
    parsed = ParsedMail(parse_message(raw, max_parts=1))
    probe = structlog.get_logger("tests.probe")
    writer.start()
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
            receipt = asyncio.run(committer.commit(parsed, Envelope("jane@acme.test", ["support@example.com"])))
            writer.submit(lambda s: probe.info("next job")).result(10)
            assert structlog.contextvars.get_contextvars() == {}
    finally:
        writer.stop()
    assert receipt.stored
    (outcome,) = receipt.outcomes
    assert outcome.action == "created" and outcome.case_number is not None
    (line,) = _logged(entries, "mime parts over the limit, kept only in the raw message")
    assert line["case"] == outcome.case_number
    assert line["message_id"] == "scans@acme.test" and line["mailbox"] == "support@example.com"
    (next_job,) = _logged(entries, "next job")
    assert "case" not in next_job and "message_id" not in next_job
