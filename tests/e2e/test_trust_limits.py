"""SPEC §11's limits, tried as an attacker would over real sockets against a running daemon:
a mail of 5,000 MIME parts, more SMTP sessions than allowed (from one address and in all),
an idle session, a 1 MB EHLO line; and the 250 reply, which tells any sender nothing of the
case its mail went to. Going over a limit loses no mail."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import Database, require
from tests.e2e.test_imap import PASSWORD, USER, imap_toml
from tests.support.daemon import Daemon
from tests.support.dovecot import Dovecot, dovecot_problem, running_dovecot
from tests.support.mails import wait_until
from tests.support.sink import Sink

CASE_NUMBER_RE = re.compile(rb"#\s*\d|\bcase\b", re.I)


def start_desk(folder: Path, db_url: str, sink: Sink, *, workers: int = 2, protection: str = "",
               extra: str = "") -> Daemon:
    d = Daemon.with_config(folder, db_url, f"smtp://127.0.0.1:{sink.port}", max_bytes=4_000_000,
                           extra=f"{extra}\n[protection]\n{protection}\n")
    assert d.config is not None
    d.config.write_text(d.config.read_text().replace(
        "max_message_bytes = 4000000", f"max_message_bytes = 4000000\nparse_processes = {workers}"))
    d.start()
    return d


@pytest.fixture
def desk(request: pytest.FixtureRequest, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    """Small limits (so that the tests are quick), on a daemon whose parse workers serve SMTP,
    or (param 0) on one that serves it itself."""
    d = start_desk(tmp_path, f"sqlite:///{tmp_path}/maild.db", sink, workers=getattr(request, "param", 2),
                   protection="max_smtp_sessions = 6\nmax_smtp_sessions_per_client = 3\n"
                              "smtp_idle_timeout_seconds = 1.5\n")
    yield d
    d.stop()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    with running_dovecot({USER: PASSWORD}) as dv:
        yield dv


def many_parts(n: int, message_id: str, to: str = "support@example.com") -> bytes:
    """A mail as a client writes one with `n` small attachments, each different."""
    lines = [b"From: Mallory <mallory@evil.test>", f"To: {to}".encode(), b"Subject: a few files",
             f"Message-ID: <{message_id}>".encode(), b"Date: Mon, 3 Mar 2025 10:00:00 +0100", b"MIME-Version: 1.0",
             b'Content-Type: multipart/mixed; boundary="=-parts"', b"", b"--=-parts",
             b"Content-Type: text/plain; charset=utf-8", b"", b"Please see the attached files.", b""]
    for i in range(n):
        lines += [b"--=-parts", b"Content-Type: application/octet-stream",
                  f'Content-Disposition: attachment; filename="file-{i}.bin"'.encode(),
                  b"Content-Transfer-Encoding: base64", b"", base64.b64encode(f"content of file {i}".encode()), b""]
    lines += [b"--=-parts--", b""]
    return b"\r\n".join(lines)


def plain(subject: str, body_line: bytes = b"Hello.") -> bytes:
    message_id = f"<{subject.replace(' ', '.')}@acme.test>"
    return b"\r\n".join([b"From: Ann <ann@acme.test>", b"To: support@example.com", f"Subject: {subject}".encode(),
                         f"Message-ID: {message_id}".encode(), b"", body_line, b""])


def send_over(s: smtplib.SMTP, raw: bytes, mail_from: str = "ann@acme.test") -> tuple[int, bytes]:
    s.ehlo("client.acme.test")
    code, _ = s.mail(mail_from)
    assert code == 250
    code, _ = s.rcpt("support@example.com")
    assert code == 250
    return s.data(raw)


def message_raw(desk: Daemon, message_id: str) -> bytes:
    """`maild message raw`, its bytes as written (no newline translation)."""
    assert desk.config is not None
    r = subprocess.run([sys.executable, "-m", "maild", "message", "raw", message_id, "--config", str(desk.config)],
                       cwd=desk.folder, capture_output=True, timeout=60, check=True)
    return r.stdout


def greeting(source: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, bytes]:
    """A raw connection from `source` (any 127/8 address is this machine's) and its first line."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("workers", [2, 0], ids=["workers", "no-workers"])
def test_5000_mime_parts_keep_500_attachments_and_the_whole_raw_message(
        database: Database, sink: Sink, tmp_path: Path, workers: int) -> None:
    desk = start_desk(tmp_path, database.url, sink, workers=workers)  # max_mime_parts: the default, 500
    try:
        raw = many_parts(5000, "parts@evil.test")
        with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=120) as s:
            code, reply = send_over(s, raw, "mallory@evil.test")
        assert (code, reply) == (250, b"2.0.0 OK")  # stored, and the sender told nothing of the case
        (summary,) = desk.cases()
        case = desk.case(summary["number"])
        attachments = [a for p in case["posts"] for a in p["attachments"]]
        assert len(attachments) == 500
        assert [a["filename"] for a in attachments] == [f"file-{i}.bin" for i in range(500)]
        notes = [p for p in case["posts"] if p["visibility"] == "internal"]
        assert [n["body"] for n in notes] == [
            "4500 MIME parts beyond the limit of 500 were not kept as attachments; they remain in the raw message "
            "(maild message raw <parts@evil.test>)."]
        public = [p for p in case["posts"] if p["visibility"] == "public"]
        assert [p["body"] for p in public] == ["Please see the attached files."]
        blobs = [f for f in (desk.folder / "data" / "attachments").rglob("*") if f.is_file()]
        assert len(blobs) == 500  # the parts left out were never written
        assert message_raw(desk, "parts@evil.test") == raw
        assert "mime parts over the limit" in desk.log()
    finally:
        desk.stop()


@pytest.mark.parametrize("workers", [2, 0], ids=["workers", "no-workers"])
def test_mail_fetched_over_imap_keeps_max_mime_parts_too(sink: Sink, tmp_path: Path, dovecot: Dovecot,
                                                         workers: int) -> None:
    raw = many_parts(600, "imap-parts@evil.test", USER)
    dovecot.append(USER, "INBOX", raw)
    (tmp_path / "imap.pass").write_text(PASSWORD + "\n")
    desk = start_desk(tmp_path, f"sqlite:///{tmp_path}/maild.db", sink, workers=workers,
                      protection="max_mime_parts = 20", extra=imap_toml(dovecot))
    try:
        assert wait_until(lambda: len(desk.cases()) == 1, 30), desk.log()
        case = desk.case(desk.cases()[0]["number"])
        assert len([a for p in case["posts"] for a in p["attachments"]]) == 20
        assert [p["body"] for p in case["posts"] if p["visibility"] == "internal"] == [
            "580 MIME parts beyond the limit of 20 were not kept as attachments; they remain in the raw message "
            "(maild message raw <imap-parts@evil.test>)."]
        assert message_raw(desk, "imap-parts@evil.test") == raw
    finally:
        desk.stop()


@pytest.mark.parametrize("desk", [2, 0], ids=["workers", "no-workers"], indirect=True)
def test_a_fourth_session_from_one_address_is_refused_and_the_first_three_still_work(desk: Daemon) -> None:
    with ExitStack() as stack:
        sessions = [stack.enter_context(smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=10)) for _ in range(3)]
        fourth, line = greeting(port=desk.smtp_port)
        stack.callback(fourth.close)
        assert line == b"421 4.7.0 support.example.com Too many connections from your address\r\n"
        assert closed(fourth)
        other, line = greeting("127.0.0.2", desk.smtp_port)  # another address has its own allowance
        stack.callback(other.close)
        assert line.startswith(b"220 ")
        for i, s in enumerate(sessions):
            assert send_over(s, plain(f"session {i}")) == (250, b"2.0.0 OK")
        sessions[0].quit()
        time.sleep(0.3)  # the daemon sees the end of the session
        again, line = greeting(port=desk.smtp_port)  # a session ended: room for one more
        stack.callback(again.close)
        assert line.startswith(b"220 ")
    assert len(desk.cases()) == 3
    assert "smtp session refused" in desk.log()


def test_sessions_past_the_total_cap_are_refused_whoever_opens_them(desk: Daemon) -> None:
    with ExitStack() as stack:
        opened = []
        for n in range(6):  # six addresses, one session each: max_smtp_sessions = 6
            sock, line = greeting(f"127.0.0.{10 + n}", desk.smtp_port)
            stack.callback(sock.close)
            assert line.startswith(b"220 ")
            opened.append(sock)
        seventh, line = greeting("127.0.0.99", desk.smtp_port)
        stack.callback(seventh.close)
        assert line == b"421 4.7.0 support.example.com Too many connections\r\n"
        assert closed(seventh)
        opened[0].sendall(b"QUIT\r\n")
        assert read_line(opened[0]).startswith(b"221")
        time.sleep(0.3)
        with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=10) as s:  # room again, and mail goes through
            assert send_over(s, plain("after the cap")) == (250, b"2.0.0 OK")
    assert [c["subject"] for c in desk.cases()] == ["after the cap"]


def test_an_idle_session_is_closed_and_a_talking_one_is_not(desk: Daemon) -> None:
    idle, line = greeting(port=desk.smtp_port)
    talking, _ = greeting(port=desk.smtp_port)
    try:
        assert line.startswith(b"220 ")
        for _ in range(5):  # 2.5 s of a NOOP every half second: never idle for 1.5 s
            talking.sendall(b"NOOP\r\n")
            assert read_line(talking).startswith(b"250")
            time.sleep(0.5)
        assert read_line(idle) == b"421 4.4.2 support.example.com Idle too long, closing connection\r\n"
        assert closed(idle)
        talking.sendall(b"NOOP\r\n")
        assert read_line(talking).startswith(b"250")
    finally:
        idle.close()
        talking.close()
    assert "smtp session idle, closed" in desk.log()


def test_a_1_mb_ehlo_line_is_refused_but_a_100_kb_line_in_data_is_kept(desk: Daemon) -> None:
    long_line = b"x" * 100_000
    raw = plain("long line", long_line)
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30) as s:
        s.send(b"EHLO " + b"a" * 1_000_000 + b"\r\n")
        code, _ = s.getreply()
        assert code == 500
        assert send_over(s, raw) == (250, b"2.0.0 OK")  # the same session goes on
    assert message_raw(desk, "long.line@acme.test") == raw
    (case,) = desk.cases()
    assert desk.case(case["number"])["posts"][0]["body"] == long_line.decode()
    assert "smtp command line too long" in desk.log()


def test_the_250_reply_names_no_case_however_the_mail_is_matched(desk: Daemon) -> None:
    replies = []
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30) as s:
        replies.append(send_over(s, plain("first question")))
        replies.append(send_over(s, plain("Re: [#1] first question")))  # threaded by its tag
        replies.append(send_over(s, b"\x00\xff not a mail\r\n"))  # quarantined
    assert replies == [(250, b"2.0.0 OK")] * 3
    assert not any(CASE_NUMBER_RE.search(r) for _, r in replies)
    assert len(desk.cases()) == 1
