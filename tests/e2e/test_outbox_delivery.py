"""The outbox worker against real SMTP servers (plain, STARTTLS, implicit TLS) and a Maildir,
with the database of each kind and a clock the test moves."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import Engine, select, text

from maild.notify.outbox import OutboxWorker, backoff
from maild.notify.transport import MaildirTransport, SmtpTransport, Transport
from maild.store.db import make_sessionmaker
from maild.store.models import OutboxMail
from maild.store.outbox import enqueue_mail
from tests.support.sink import Sink, free_port

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
RAW = (b"From: support@example.com\r\nTo: jane@acme.test\r\nSubject: [#1] Hi\r\n"
       b"Date: Fri, 20 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@support.example.com>\r\n\r\nHello\r\n")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def queue_one(engine: Engine, recipient: str = "jane@acme.test") -> None:
    with make_sessionmaker(engine)() as s, s.begin():
        enqueue_mail(s, case_number=None, message_id=f"m-{recipient}@support.example.com", kind="case_created",
                     mail_from="support@example.com", recipient=recipient, raw=RAW, automatic=True, now=T0)


def rows(engine: Engine) -> list[OutboxMail]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(OutboxMail).order_by(OutboxMail.id)))


def worker(engine: Engine, transport: Transport, clock: Clock, max_attempts: int = 5) -> OutboxWorker:
    return OutboxWorker(make_sessionmaker(engine), transport, clock, max_attempts)


def test_delivers_over_smtp_and_marks_sent(engine: Engine, sink: Sink, clock: Clock) -> None:
    queue_one(engine)
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    assert w.deliver_due() == 1
    (caught,) = sink.caught
    assert caught.rcpt_tos == ["jane@acme.test"] and caught.mail_from == "support@example.com"
    assert caught.raw.rstrip(b"\r\n") == RAW.rstrip(b"\r\n")
    (row,) = rows(engine)
    assert row.status == "sent" and row.sent_at == T0 and row.attempts == 1
    assert w.deliver_due() == 0  # nothing twice


def test_temporary_failure_is_retried_with_backoff(engine: Engine, sink: Sink, clock: Clock) -> None:
    queue_one(engine)
    sink.answers = ["451 4.3.0 greylisted, try later"]
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    w.deliver_due()
    (row,) = rows(engine)
    assert (row.status, row.attempts) == ("pending", 1) and "greylisted" in row.last_error
    assert row.next_attempt_at == T0 + backoff(1)
    clock.now = T0 + backoff(1) - timedelta(seconds=1)
    assert w.deliver_due() == 0  # not yet due
    clock.now = T0 + backoff(1)
    assert w.deliver_due() == 1
    assert rows(engine)[0].status == "sent" and len(sink.caught) == 1


def test_permanent_failure_is_recorded_not_retried(engine: Engine, sink: Sink, clock: Clock) -> None:
    queue_one(engine)
    sink.answers = ["550 5.1.1 no such user"]
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    w.deliver_due()
    (row,) = rows(engine)
    assert row.status == "failed" and "550 5.1.1 no such user" in row.last_error
    clock.now += timedelta(days=1)
    assert w.deliver_due() == 0


def test_unreachable_relay_is_temporary_until_attempts_run_out(engine: Engine, clock: Clock) -> None:
    queue_one(engine)
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{free_port()}", None, 2), clock, max_attempts=3)
    for _ in range(3):
        w.deliver_due()
        clock.now += timedelta(hours=2)
    (row,) = rows(engine)
    assert row.status == "failed" and row.attempts == 3 and "Connection refused" in row.last_error


def test_maildir_delivery_writes_a_readable_file(engine: Engine, tmp_path: Path, clock: Clock) -> None:
    queue_one(engine)
    worker(engine, MaildirTransport(tmp_path / "outbox"), clock).deliver_due()
    (file,) = (tmp_path / "outbox" / "new").iterdir()
    content = file.read_bytes()
    assert content.startswith(b"Return-Path: <support@example.com>\r\nDelivered-To: jane@acme.test\r\n")
    assert content.endswith(RAW)
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, Path]]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield server_ctx, ca_file


def _accept_relay_user(server: object, session: object, envelope: object, mechanism: str,
                       data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"s3cret")
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself


def test_starttls_with_login(engine: Engine, clock: Clock, tls_files: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca_file = tls_files
    sink = Sink(tls_context=server_ctx, require_starttls=True, authenticator=_accept_relay_user,
                auth_require_tls=True)
    sink.start()
    try:
        queue_one(engine)
        transport = SmtpTransport(f"smtp+starttls://relay:s3cret@127.0.0.1:{sink.port}", None, 5, ca_file)
        worker(engine, transport, clock).deliver_due()
        assert rows(engine)[0].status == "sent" and len(sink.caught) == 1
    finally:
        sink.stop()


def test_implicit_tls(engine: Engine, clock: Clock, tls_files: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca_file = tls_files
    sink = Sink(ssl_context=server_ctx)
    sink.start()
    try:
        queue_one(engine)
        worker(engine, SmtpTransport(f"smtps://127.0.0.1:{sink.port}", None, 5, ca_file), clock).deliver_due()
        assert rows(engine)[0].status == "sent" and len(sink.caught) == 1
        # without our CA the certificate is not trusted: a temporary failure, nothing sent blind
        queue_one(engine, "joe@acme.test")
        worker(engine, SmtpTransport(f"smtps://127.0.0.1:{sink.port}", None, 5), clock).deliver_due()
        row = rows(engine)[1]
        assert row.status == "pending" and "CERTIFICATE_VERIFY_FAILED" in row.last_error
    finally:
        sink.stop()


def test_a_pass_shares_one_connection_and_a_refused_recipient_does_not_spoil_it(engine: Engine, sink: Sink,
                                                                                clock: Clock) -> None:
    for who in ("a@acme.test", "gone@acme.test", "b@acme.test", "c@acme.test"):
        queue_one(engine, who)
    sink.refuse_rcpt = {"gone@acme.test"}
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    assert w.deliver_due() == 4
    assert sink.connections == 1
    assert sorted(r for c in sink.caught for r in c.rcpt_tos) == ["a@acme.test", "b@acme.test", "c@acme.test"]
    states = {r.recipient: (r.status, r.last_error) for r in rows(engine)}
    assert states["gone@acme.test"] == ("failed", "550 5.1.1 no such user here")
    assert states["c@acme.test"] == ("sent", None)


def test_a_wrong_relay_password_keeps_the_mail(engine: Engine, clock: Clock,
                                               tls_files: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca_file = tls_files
    sink = Sink(tls_context=server_ctx, require_starttls=True, authenticator=_accept_relay_user, auth_require_tls=True)
    sink.start()
    try:
        queue_one(engine)
        transport = SmtpTransport(f"smtp+starttls://relay:wrong@127.0.0.1:{sink.port}", None, 5, ca_file)
        worker(engine, transport, clock).deliver_due()
        (row,) = rows(engine)
        assert row.status == "pending" and "relay login refused" in row.last_error
    finally:
        sink.stop()


class FlakySink(Sink):
    """Answers 421 (closing the connection, as smtplib reads it) to the next `rcpt_421` RCPTs."""

    def __init__(self) -> None:
        super().__init__()
        self.rcpt_421 = 0
        self.rcpts = 0

    async def handle_RCPT(self, server: object, session: object, envelope: object, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpts += 1
        if self.rcpt_421 > 0:
            self.rcpt_421 -= 1
            return "421 4.3.2 service shutting down, try again"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)  # type: ignore[arg-type]


@pytest.fixture
def flaky_sink() -> Iterator[FlakySink]:
    s = FlakySink()
    s.start()
    yield s
    s.stop()


def test_a_421_on_a_shared_connection_reconnects_and_costs_the_mail_nothing(engine: Engine, flaky_sink: FlakySink,
                                                                            clock: Clock) -> None:
    for who in ("a@acme.test", "b@acme.test", "c@acme.test"):
        queue_one(engine, who)
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{flaky_sink.port}", None, 5), clock)
    w.deliver_due(limit=1)  # a@ over a connection of its own

    flaky_sink.rcpt_421 = 1  # b@'s RCPT on the pass's connection: the relay closes it
    assert w.deliver_due() == 2 and w.relay_problem is None
    assert sorted(r for c in flaky_sink.caught for r in c.rcpt_tos) == ["a@acme.test", "b@acme.test", "c@acme.test"]
    assert [(r.status, r.attempts) for r in rows(engine)] == [("sent", 1)] * 3


def test_a_relay_that_keeps_answering_421_costs_one_attempt_and_ends_the_pass(engine: Engine, flaky_sink: FlakySink,
                                                                              clock: Clock) -> None:
    for who in ("a@acme.test", "b@acme.test", "c@acme.test"):
        queue_one(engine, who)
    flaky_sink.rcpt_421 = 100
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{flaky_sink.port}", None, 5), clock)
    assert w.deliver_due() == 1 and w.relay_problem is not None and "421" in w.relay_problem
    assert flaky_sink.rcpts == 2  # tried once more on a new connection, then left for later
    a, b, c = rows(engine)
    assert (a.status, a.attempts, a.next_attempt_at) == ("pending", 1, T0 + backoff(1))
    assert [(r.attempts, r.next_attempt_at) for r in (b, c)] == [(0, T0)] * 2  # given back, due now


def test_a_relay_that_never_answers_holds_a_pass_one_timeout(engine: Engine, clock: Clock) -> None:
    for i in range(5):
        queue_one(engine, f"m{i}@acme.test")
    with socket.socket() as silent:  # accepts (the kernel's backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{silent.getsockname()[1]}", None, 1.0), clock)
        started = time.monotonic()
        assert w.deliver_due() == 1
        took = time.monotonic() - started
    assert took < 2.5, took  # one send's timeout, not five
    assert "no answer within 1 s" in (w.relay_problem or "")
    first, *rest = rows(engine)
    assert (first.attempts, first.status) == (1, "pending")
    assert all((r.attempts, r.next_attempt_at) == (0, T0) for r in rest)


def _fail_sent_updates(engine: Engine) -> None:
    """A real storage failure of the UPDATE that records a send (and only that one)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER fail_sent BEFORE UPDATE ON outbox WHEN NEW.status = 'sent' "
                              "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
        else:
            conn.execute(text("CREATE FUNCTION fail_sent() RETURNS trigger AS "
                              "$$ BEGIN RAISE EXCEPTION 'disk I/O error'; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER fail_sent BEFORE UPDATE ON outbox FOR EACH ROW "
                              "WHEN (NEW.status = 'sent') EXECUTE FUNCTION fail_sent()"))


def _mend_sent_updates(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER fail_sent" + ("" if engine.dialect.name == "sqlite" else " ON outbox")))


def test_a_send_the_database_would_not_record_is_recorded_later_not_sent_again(engine: Engine, sink: Sink,
                                                                               clock: Clock) -> None:
    queue_one(engine, "a@acme.test")
    queue_one(engine, "b@acme.test")
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    _fail_sent_updates(engine)
    with pytest.raises(Exception, match="disk I/O error"):
        w.deliver_due()
    assert [c.rcpt_tos for c in sink.caught] == [["a@acme.test"]]
    with pytest.raises(Exception, match="disk I/O error"):
        w.deliver_due()  # still failing: nothing is claimed or sent meanwhile
    assert len(sink.caught) == 1
    _mend_sent_updates(engine)
    assert w.deliver_due() == 1  # a@'s send is recorded, b@ (given back) goes
    assert sorted(r for c in sink.caught for r in c.rcpt_tos) == ["a@acme.test", "b@acme.test"]
    assert [(r.recipient, r.status, r.attempts) for r in rows(engine)] == [("a@acme.test", "sent", 1),
                                                                           ("b@acme.test", "sent", 1)]
    assert w.deliver_due() == 0


def test_a_clean_stop_gives_claimed_mail_back_at_once(engine: Engine, sink: Sink, clock: Clock) -> None:
    for i in range(4):
        queue_one(engine, f"m{i}@acme.test")
    w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
    w.stop()
    assert w.deliver_due() == 0
    assert sink.caught == []
    assert [(r.status, r.next_attempt_at) for r in rows(engine)] == [("pending", T0)] * 4
    assert worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock).deliver_due() == 4


def test_a_process_killed_before_recording_its_sends_has_them_recorded_from_its_journal(
        engine: Engine, sink: Sink, clock: Clock, tmp_path: Path) -> None:
    queue_one(engine, "a@acme.test")
    transport = SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5)
    first = OutboxWorker(make_sessionmaker(engine), transport, clock, 5, journal_dir=tmp_path)
    _fail_sent_updates(engine)
    with pytest.raises(Exception, match="disk I/O error"):
        first.deliver_due()
    assert len(sink.caught) == 1
    assert first.journal is not None
    first.journal.close(remove=False)  # what a SIGKILL leaves: the journal, its lock released
    _mend_sent_updates(engine)
    clock.now += timedelta(minutes=5)  # the claim's lease ran out long ago
    second = OutboxWorker(make_sessionmaker(engine), transport, clock, 5, journal_dir=tmp_path)
    assert second.deliver_due() == 0
    assert len(sink.caught) == 1  # not sent again
    (row,) = rows(engine)
    assert (row.status, row.attempts) == ("sent", 1)
    assert [p.name for p in tmp_path.glob("outbox-sent.*")] == [second.journal.path.name]  # type: ignore[union-attr]
