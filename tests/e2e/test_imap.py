"""IMAP ingestion against a real Dovecot: exactly once, across kills, resets and outages."""

from __future__ import annotations

import json
import random
import shutil
import signal
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import Database, load_eml, require
from tests.support.daemon import Daemon
from tests.support.dovecot import Dovecot, TokenIntrospection, dovecot_problem, running_dovecot
from tests.support.mails import mail, wait_count, wait_until
from tests.support.sink import Sink

USER, PASSWORD = "billing@example.com", "s3cret-pw"


def imap_toml(dv: Dovecot, *, folder: str = "INBOX", done_folder: str | None = "Processed",
              poll_seconds: float = 30, password_file: str = "imap.pass") -> str:
    done = f'done_folder = "{done_folder}"\n' if done_folder else ""
    return (f'\n[mailboxes.imap]\nhost = "127.0.0.1"\nport = {dv.port}\ntls = "none"\nusername = "{USER}"\n'
            f'password_file = "{password_file}"\nfolder = "{folder}"\n{done}poll_seconds = {poll_seconds}\n')


def question(i: int, subject: str | None = None, size: int = 0) -> bytes:
    """Customer i's question (a body of about `size` bytes more), as it lies in the mailbox."""
    return mail(f"Customer {i} <c{i}@firm{i % 7}.test>", USER, subject or f"IMAP case {i:04d}",
                f"Question number {i}.\n" + ("x" * 76 + "\n") * (size // 78), msgid=f"imap{i}@firm.test")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    with running_dovecot({USER: PASSWORD}) as dv:
        yield dv


def make_desk(tmp_path: Path, database: Database, sink: Sink, dv: Dovecot, password: str = PASSWORD,
              **imap: object) -> Daemon:
    (tmp_path / "imap.pass").write_text(password + "\n")
    return Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}",
                              extra=imap_toml(dv, **imap))  # type: ignore[arg-type]


def log_events(d: Daemon, event: str) -> list[dict]:
    out = []
    for line in d.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append(rec)
    return out


def test_messages_become_cases_and_move_to_done_folder(tmp_path: Path, database: Database, sink: Sink,
                                                        dovecot: Dovecot) -> None:
    for name in ("gmail-new-plain-and-html.eml", "russian-koi8r.eml", "attachments-non-ascii-names.eml"):
        dovecot.append(USER, "INBOX", load_eml(name))
    d = make_desk(tmp_path, database, sink, dovecot)
    d.start()
    try:
        wait_until(lambda: len(d.cases()) == 3, 20, explain=d.log)
        wait_until(lambda: dovecot.count(USER, "INBOX") == 0, 10)
        assert dovecot.count(USER, "Processed") == 3
        cases = d.cases()
        assert {c["queue"] for c in cases} == {"billing"}
        assert {c["mailbox"] for c in cases} == {"billing@example.com"}
        assert {"name": "Иван Петров", "email": "ivan.petrov@acme.test"} in [c["requester"] for c in cases]
        assert "Не работает принтер" in [c["subject"] for c in cases]
        wait_count(sink, cases[0]["requester"]["email"], 1)
        assert all(rec["via"] == "imap" for rec in log_events(d, "message ingested"))
    finally:
        d.stop()


def test_without_done_folder_messages_are_flagged_seen_and_not_taken_twice(
        tmp_path: Path, database: Database, sink: Sink, dovecot: Dovecot) -> None:
    for i in range(3):
        dovecot.append(USER, "INBOX", question(i))
    d = make_desk(tmp_path, database, sink, dovecot, done_folder=None)
    d.start()
    try:
        wait_until(lambda: len(d.cases()) == 3, 20, explain=d.log)
        with dovecot.client(USER) as c:
            c.select_folder("INBOX", readonly=True)
            wait_until(lambda: len(c.search("SEEN")) == 3, 10)
        assert d.stop() == 0
        dovecot.append(USER, "INBOX", question(3))
        d.start()
        wait_until(lambda: len(d.cases()) == 4, 20, explain=d.log)
        time.sleep(1)
        assert sorted(c["subject"] for c in d.cases()) == [f"IMAP case {i:04d}" for i in range(4)]
        assert dovecot.count(USER, "INBOX") == 4  # nothing moved
    finally:
        d.stop()


def test_new_mail_arrives_within_seconds_through_idle(tmp_path: Path, database: Database, sink: Sink,
                                                      dovecot: Dovecot) -> None:
    d = make_desk(tmp_path, database, sink, dovecot, poll_seconds=300)  # polling alone would take minutes
    d.start()
    try:
        wait_until(lambda: bool(log_events(d, "imap connected")), 10, explain=d.log)
        time.sleep(1)
        t0 = time.monotonic()
        dovecot.append(USER, "INBOX", question(1, "Arrives while idle"))
        wait_until(lambda: [c["subject"] for c in d.cases()] == ["Arrives while idle"], 10, explain=d.log)
        assert time.monotonic() - t0 < 5
    finally:
        d.stop()


def test_uidvalidity_change_rereads_without_duplicates_or_skips(tmp_path: Path, database: Database, sink: Sink,
                                                                dovecot: Dovecot) -> None:
    with dovecot.client(USER) as c:
        c.create_folder("Support")
    for i in range(2):
        dovecot.append(USER, "Support", question(i))
    d = make_desk(tmp_path, database, sink, dovecot, folder="Support", done_folder=None)
    d.start()
    try:
        wait_until(lambda: len(d.cases()) == 2, 20, explain=d.log)
        assert d.stop() == 0
        with dovecot.client(USER) as c:  # the folder is recreated: new UIDVALIDITY, UIDs start over
            c.delete_folder("Support")
            c.create_folder("Support")
        for i in range(3):
            dovecot.append(USER, "Support", question(i))
        d.start()
        wait_until(lambda: len(d.cases()) == 3, 20, explain=d.log)
        time.sleep(1)
        assert sorted(c["subject"] for c in d.cases()) == [f"IMAP case {i:04d}" for i in range(3)]
        (reset,) = log_events(d, "imap UIDVALIDITY changed: re-reading the folder; Message-IDs prevent duplicates")
        assert reset["old"] != reset["new"]
    finally:
        d.stop()


def test_wrong_password_is_one_clear_line_per_attempt_and_smtp_keeps_working(
        tmp_path: Path, database: Database, sink: Sink, dovecot: Dovecot) -> None:
    dovecot.append(USER, "INBOX", question(1))
    d = make_desk(tmp_path, database, sink, dovecot, password="wrong", poll_seconds=1)
    d.start()
    try:
        with smtplib.SMTP("127.0.0.1", d.smtp_port) as s:
            s.sendmail("jane@acme.test", ["support@example.com"],
                       b"From: jane@acme.test\r\nTo: support@example.com\r\nSubject: via SMTP\r\n\r\nhi\r\n")
        assert [c["subject"] for c in d.cases()] == ["via SMTP"]
        time.sleep(7)
        failures = log_events(d, "imap mailbox unavailable")
        assert 1 <= len(failures) <= 3, failures  # backoff 5 s, 10 s, ...: no flood at poll_seconds = 1
        assert "login as billing@example.com refused" in failures[0]["error"]
        assert "AUTHENTICATIONFAILED" in failures[0]["error"] or "Authentication failed" in failures[0]["error"]
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_connection_loss_reconnects_and_nothing_is_lost(tmp_path: Path, database: Database, sink: Sink,
                                                        dovecot: Dovecot) -> None:
    d = make_desk(tmp_path, database, sink, dovecot, poll_seconds=2)
    d.start()
    try:
        wait_until(lambda: bool(log_events(d, "imap connected")), 10, explain=d.log)
        dovecot.stop()
        time.sleep(1)
        dovecot.start()
        dovecot.append(USER, "INBOX", question(7, "After the outage"))
        wait_until(lambda: [c["subject"] for c in d.cases()] == ["After the outage"], 30, explain=d.log)
        wait_until(lambda: dovecot.count(USER, "Processed") == 1, 10)
    finally:
        d.stop()


def test_oversized_message_is_quarantined_and_moved_not_retried(tmp_path: Path, database: Database,
                                                               sink: Sink, dovecot: Dovecot) -> None:
    dovecot.append(USER, "INBOX", question(1, "Too big", size=300_000))
    dovecot.append(USER, "INBOX", question(2, "Fine"))
    (tmp_path / "imap.pass").write_text(PASSWORD + "\n")
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", max_bytes=100_000,
                           extra=imap_toml(dovecot))
    d.start()
    try:
        wait_until(lambda: dovecot.count(USER, "Processed") == 2, 20, explain=d.log)
        assert [c["subject"] for c in d.cases()] == ["Fine"]
        (note,) = (tmp_path / "data" / "quarantine").glob("*.json")
        assert "larger than max_message_bytes" in json.loads(note.read_text())["reason"]
        assert b"Too big" in note.with_suffix(".eml").read_bytes()
    finally:
        d.stop()


def test_check_config_connect_reports_each_mailbox(tmp_path: Path, database: Database, sink: Sink,
                                                   dovecot: Dovecot) -> None:
    dovecot.append(USER, "INBOX", question(1))
    d = make_desk(tmp_path, database, sink, dovecot)
    ok = d.cli("check-config", "--connect")
    assert f"billing@example.com: imap 127.0.0.1:{dovecot.port}: ok: 1 messages in INBOX" in ok.stdout
    (tmp_path / "imap.pass").write_text("wrong\n")
    bad = d.cli("check-config", "--connect", check=False)
    assert bad.returncode == 1 and "login as billing@example.com refused" in bad.stderr


def test_killed_mid_drain_stores_every_message_exactly_once(tmp_path: Path, database: Database, sink: Sink,
                                                            dovecot: Dovecot) -> None:
    n = 300
    with dovecot.client(USER) as c:
        for i in range(n):
            c.append("INBOX", question(i))
    d = make_desk(tmp_path, database, sink, dovecot)
    rng = random.Random(7)
    moved_at_kill = []
    for _ in range(4):
        moved = dovecot.count(USER, "Processed")
        if moved == n:
            break
        d.start()
        # killed once it has moved some, at a random point after: a fixed delay from the start
        # misses the drain on a machine that drains 300 messages in about a second
        wait_until(lambda moved=moved: dovecot.count(USER, "Processed") != moved, 60, interval=0.02)
        time.sleep(rng.uniform(0.0, 0.25))
        assert d.proc is not None and d.proc.poll() is None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        moved_at_kill.append(dovecot.count(USER, "Processed"))
    assert any(0 < m < n for m in moved_at_kill), f"no kill landed mid-drain: {moved_at_kill}"
    d.start()
    try:
        wait_until(lambda: dovecot.count(USER, "Processed") == n, 120, explain=d.log)
        subjects = [c["subject"] for c in d.cases()]
        assert len(subjects) == n and len(set(subjects)) == n
        assert dovecot.count(USER, "INBOX") == 0
    finally:
        d.stop()


@pytest.mark.parametrize("source", ["token_command", "token_file"])
def test_oauth2_token_is_fetched_again_when_the_old_one_expires(tmp_path: Path, database: Database, sink: Sink,
                                                                source: str) -> None:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    tokens = TokenIntrospection(USER)
    folder = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
    dv = Dovecot(folder, {USER: PASSWORD}, oauth2_introspection_url=tokens.url)
    try:
        dv.start()
        token_file = tmp_path / "token.txt"
        token_file.write_text("token-one\n")
        tokens.valid = {"token-one"}
        oauth = ('oauth2 = { token_command = "cat token.txt" }' if source == "token_command"
                 else 'oauth2 = { token_file = "token.txt" }')
        extra = imap_toml(dv, poll_seconds=2).replace('password_file = "imap.pass"', oauth)
        d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
        d.start()
        try:
            dv.append(USER, "INBOX", question(1, "Before expiry"))
            wait_until(lambda: len(d.cases()) == 1, 20, explain=d.log)
            # the provider expires the token and drops the session; a refreshed token is available
            tokens.valid = {"token-two"}
            token_file.write_text("token-two\n")
            dv.kick(USER)
            dv.append(USER, "INBOX", question(2, "After expiry"))
            wait_until(lambda: len(d.cases()) == 2, 30, explain=d.log)
            assert tokens.seen[0] == "token-one" and tokens.seen[-1] == "token-two"
        finally:
            d.stop()
    finally:
        dv.stop()
        tokens.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_failing_mailbox_does_not_hold_up_another(tmp_path: Path, database: Database, sink: Sink,
                                                    dovecot: Dovecot) -> None:
    dovecot.append(USER, "INBOX", question(1, "For billing"))
    d = make_desk(tmp_path, database, sink, dovecot, poll_seconds=2)
    broken = (f'[mailboxes.imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\ntls = "none"\n'
              f'username = "support@example.com"\npassword_file = "imap.pass"\n\n')
    text = d.config.read_text().replace('team = "support"\nname = "Example Support"\n',
                                        'team = "support"\nname = "Example Support"\n' + broken)
    d.config.write_text(text)  # support logs in as a user the server does not know
    d.start()
    try:
        wait_until(lambda: [c["subject"] for c in d.cases()] == ["For billing"], 20, explain=d.log)
        # Dovecot answers a failed login only after its auth_failure_delay: wait for that line too
        wait_until(lambda: bool(log_events(d, "imap mailbox unavailable")), 20, explain=d.log)
        failures = log_events(d, "imap mailbox unavailable")
        assert {f["mailbox"] for f in failures} == {"support@example.com"}
    finally:
        d.stop()


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_implicit_and_starttls(tmp_path: Path, database: Database, sink: Sink, tls: str) -> None:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    ca = trustme.CA()
    folder = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
    folder.chmod(0o755)
    cert, key, ca_file = folder / "cert.pem", folder / "key.pem", tmp_path / "ca.pem"
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    dv = Dovecot(folder, {USER: PASSWORD}, tls=(cert, key))
    try:
        dv.start()
        dv.append(USER, "INBOX", question(1, f"Over {tls} TLS"))
        port = dv.tls_port if tls == "implicit" else dv.port
        extra = (imap_toml(dv).replace(f"port = {dv.port}", f"port = {port}")
                 .replace('tls = "none"', f'tls = "{tls}"\nca_file = "ca.pem"'))
        (tmp_path / "imap.pass").write_text(PASSWORD + "\n")
        d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
        d.start()
        try:
            wait_until(lambda: [c["subject"] for c in d.cases()] == [f"Over {tls} TLS"], 20, explain=d.log)
        finally:
            d.stop()
        # without our CA the server's certificate is refused: nothing is sent over an unverified channel
        untrusted = d.config.read_text().replace('ca_file = "ca.pem"\n', "")
        d.config.write_text(untrusted)
        r = d.cli("check-config", "--connect", check=False)
        assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
    finally:
        dv.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_servers_without_idle_are_polled(tmp_path: Path, database: Database, sink: Sink) -> None:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    folder = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
    dv = Dovecot(folder, {USER: PASSWORD}, capability="IMAP4rev1 LITERAL+ UIDPLUS MOVE")
    try:
        dv.start()
        d = make_desk(tmp_path, database, sink, dv, poll_seconds=1)
        d.start()
        try:
            wait_until(lambda: bool(log_events(d, "imap connected")), 10, explain=d.log)
            assert log_events(d, "imap connected")[0]["idle"] is False
            dv.append(USER, "INBOX", question(1, "Found by polling"))
            wait_until(lambda: [c["subject"] for c in d.cases()] == ["Found by polling"], 10, explain=d.log)
        finally:
            d.stop()
    finally:
        dv.stop()
        shutil.rmtree(folder, ignore_errors=True)
