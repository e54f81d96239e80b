"""The SMTP dialogue as MTAs hold it (issue 20 §5), over raw sockets against a running daemon:
EHLO offers ENHANCEDSTATUSCODES and PIPELINING; every 2xx/4xx/5xx reply but the greeting and
the answer to EHLO/HELO carries an RFC 3463 code (RFC 2034); commands sent together are
answered in order and their mail stored once; a stop answers 421 4.3.2 to sessions and to
connections that wait for their greeting, instead of closing them silently."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.ingest.smtp import refuse_waiting
from tests.e2e.test_trust_limits import closed, message_raw, plain, start_desk
from tests.support.daemon import Daemon
from tests.support.sink import Sink

HOST = "support.example.com"  # the daemon's [server] hostname (tests.support.daemon)
ENHANCED_RE = re.compile(rb"\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")
SHUTTING_DOWN = f"421 4.3.2 {HOST} ".encode()


@pytest.fixture(params=[2, 0], ids=["workers", "no-workers"])
def desk(request: pytest.FixtureRequest, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose parse workers serve SMTP, or (0) one that serves it itself; 4 MB mail."""
    d = start_desk(tmp_path, f"sqlite:///{tmp_path}/maild.db", sink, workers=request.param)
    yield d
    d.stop()


class Client:
    """A raw SMTP connection: lines as they are sent and replies as they come, nothing hidden."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.seen: list[bytes] = []  # every reply line, in order

    def reply(self) -> list[bytes]:
        """One reply, all its lines (CRLF stripped); [] at the end of the connection."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            assert line.endswith(b"\r\n"), line
            lines.append(line[:-2])
            self.seen.append(line[:-2])
            if line[3:4] != b"-":
                return lines

    def send(self, *commands: bytes) -> None:
        """Commands in one write, as a pipelining client sends a group."""
        self.sock.sendall(b"".join(c + b"\r\n" for c in commands))

    def say(self, command: bytes) -> list[bytes]:
        self.send(command)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def codes(replies: list[list[bytes]]) -> list[bytes]:
    """The reply code and the next word ('250 2.1.0', '354 End') of each reply's last line."""
    return [b" ".join(r[-1].split(b" ")[:2]) for r in replies]


def test_ehlo_offers_the_extensions_and_every_reply_carries_an_enhanced_code(desk: Daemon) -> None:
    c = Client(desk.smtp_port)
    try:
        greeting = c.reply()
        assert greeting == [f"220 {HOST} maild".encode()]
        assert c.say(b"FOO bar")[0].startswith(b"500 5.5.2 ")
        ehlo = c.say(b"EHLO client.acme.test")
        assert ehlo[0] == f"250-{HOST}".encode()
        assert {"ENHANCEDSTATUSCODES", "PIPELINING", "SMTPUTF8", "8BITMIME", "SIZE 4000000"} <= {
            line[4:].decode() for line in ehlo}
        assert c.say(b"RCPT TO:<support@example.com>")[0].startswith(b"503 5.5.1 ")  # before MAIL
        assert c.say(b"DATA")[0].startswith(b"503 5.5.1 ")
        assert c.say(b"MAIL FROM:<ann@acme.test> SIZE=9999999")[0].startswith(b"552 5.3.4 ")
        assert c.say(b"MAIL FROM ann@acme.test")[0].startswith(b"501 5.5.2 ")
        assert c.say(b"MAIL FROM:<ann@acme.test> BODY=8BITMIME SMTPUTF8") == [b"250 2.1.0 OK"]
        assert c.say(b"MAIL FROM:<ann@acme.test>")[0].startswith(b"503 5.5.1 ")  # nested
        assert c.say(b"RCPT TO:<nobody@example.com>")[0].startswith(b"550 5.1.1 <nobody@example.com>")
        assert c.say(b"RCPT TO:<support@example.com> NOTIFY=NEVER")[0].startswith(b"555 5.5.4 ")
        assert c.say(b"RCPT TO:<support@example.com>") == [b"250 2.1.5 OK"]
        assert c.say(b"RSET") == [b"250 2.0.0 OK"]
        assert c.say(b"NOOP") == [b"250 2.0.0 OK"]
        assert c.say(b"VRFY <support@example.com>")[0].startswith(b"252 2.0.0 ")
        assert c.say(b"VRFY")[0].startswith(b"501 5.5.2 ")
        assert c.say(b"EXPN support")[0].startswith(b"502 5.5.1 ")
        assert c.say(b"HELP")[0].startswith(b"250 2.0.0 Supported commands: ")
        assert c.say(b"MAIL FROM:<" + b"a" * 5000 + b"@acme.test>")[0].startswith(b"500 5.5.2 ")  # over 4 KB
        assert c.say(b"MAIL FROM:<ann@acme.test>") == [b"250 2.1.0 OK"]
        assert c.say(b"RCPT TO:<support@example.com>") == [b"250 2.1.5 OK"]
        assert c.say(b"DATA")[0].startswith(b"354 ")
        raw = plain("enhanced codes")
        c.sock.sendall(raw + b".\r\n")
        assert c.reply() == [b"250 2.0.0 OK"]
        assert c.say(b"MAIL FROM:<ann@acme.test>") == [b"250 2.1.0 OK"]  # a mail past max_message_bytes
        assert c.say(b"RCPT TO:<support@example.com>") == [b"250 2.1.5 OK"]
        assert c.say(b"DATA")[0].startswith(b"354 ")
        c.sock.sendall(plain("too big", b"x" * 998 + (b"\r\n" + b"x" * 998) * 4100) + b".\r\n")
        assert c.reply()[0].startswith(b"552 5.3.4 ")
        assert c.say(b"QUIT") == [b"221 2.0.0 Bye"]
        assert c.reply() == []  # closed
    finally:
        c.close()
    ehlo_lines = set(ehlo)
    uncoded = [line for line in c.seen if not ENHANCED_RE.match(line) and line not in ehlo_lines
               and not line.startswith((b"220 ", b"354 "))]
    assert not uncoded
    assert message_raw(desk, "enhanced.codes@acme.test") == raw
    assert [case["subject"] for case in desk.cases()] == ["enhanced codes"]


def test_a_helo_client_gets_enhanced_codes_too(desk: Daemon) -> None:
    """As Postfix does: the codes do not depend on EHLO (RFC 2034 ties them to it; no client minds)."""
    c = Client(desk.smtp_port)
    try:
        c.reply()
        assert c.say(b"HELO client.acme.test") == [f"250 {HOST}".encode()]  # the answer to HELO takes none
        assert c.say(b"MAIL FROM:<ann@acme.test>") == [b"250 2.1.0 OK"]
        assert c.say(b"RCPT TO:<nobody@example.com>")[0].startswith(b"550 5.1.1 ")
        assert c.say(b"QUIT") == [b"221 2.0.0 Bye"]
    finally:
        c.close()


def test_pipelined_commands_are_answered_in_order_and_each_mail_stored_once(desk: Daemon) -> None:
    first, second = plain("pipelined first"), plain("pipelined second")
    c = Client(desk.smtp_port)
    try:
        c.reply()
        assert b"250-PIPELINING" in c.say(b"EHLO client.acme.test")
        c.send(b"MAIL FROM:<ann@acme.test>", b"RCPT TO:<support@example.com>", b"RCPT TO:<nobody@example.com>",
               b"RCPT TO:<Support@Example.COM>", b"DATA")
        assert codes([c.reply() for _ in range(5)]) == [b"250 2.1.0", b"250 2.1.5", b"550 5.1.1", b"250 2.1.5",
                                                         b"354 End"]
        # the end of one mail and the next transaction in one write: the DATA reader leaves them be
        c.sock.sendall(first + b".\r\nMAIL FROM:<ann@acme.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
        assert codes([c.reply() for _ in range(4)]) == [b"250 2.0.0", b"250 2.1.0", b"250 2.1.5", b"354 End"]
        c.sock.sendall(second + b".\r\nQUIT\r\n")
        assert codes([c.reply() for _ in range(2)]) == [b"250 2.0.0", b"221 2.0.0"]
        assert c.reply() == []
    finally:
        c.close()
    cases = desk.cases()
    assert sorted(case["subject"] for case in cases) == ["pipelined first", "pipelined second"]
    assert [len(desk.case(case["number"])["posts"]) for case in cases] == [1, 1]
    assert message_raw(desk, "pipelined.first@acme.test") == first
    assert message_raw(desk, "pipelined.second@acme.test") == second


def hears_shutting_down(port: int, wait: float = 5.0) -> bytes:
    """The first line a new connection hears once the stop has reached every acceptor: a
    worker may get the daemon's stop a moment after another, and greet meanwhile."""
    deadline = time.monotonic() + wait
    while True:
        c = Client(port)
        try:
            line = c.file.readline()
            if not line.startswith(b"220 ") or time.monotonic() > deadline:
                assert closed(c.sock)  # 421, then the end of the connection: nothing more
                return line
            c.send(b"QUIT")
        finally:
            c.close()
        time.sleep(0.1)


def test_sigterm_answers_421_to_sessions_and_to_connections_waiting_for_their_greeting(desk: Daemon) -> None:
    assert desk.proc is not None
    raw = plain("arriving at the stop")
    head, tail = raw[:60], raw[60:]
    arriving, between = Client(desk.smtp_port), Client(desk.smtp_port)
    try:
        for c in (arriving, between):
            c.reply()
            c.say(b"EHLO client.acme.test")
            assert c.say(b"MAIL FROM:<ann@acme.test>") == [b"250 2.1.0 OK"]
            assert c.say(b"RCPT TO:<support@example.com>") == [b"250 2.1.5 OK"]
        assert arriving.say(b"DATA")[0].startswith(b"354 ")
        arriving.sock.sendall(head)  # a DATA still arriving holds the stop (up to 10 s) for its mail
        os.killpg(desk.proc.pid, signal.SIGTERM)

        line = between.file.readline()  # between commands: told at once, then closed
        assert line.startswith(SHUTTING_DOWN), line
        assert closed(between.sock)
        for _ in range(3):  # connections made while the stop waits for that mail
            line = hears_shutting_down(desk.smtp_port)
            assert line.startswith(SHUTTING_DOWN), line

        arriving.sock.sendall(tail + b".\r\n")
        assert arriving.reply() == [b"250 2.0.0 OK"]  # the mail that was arriving is stored
        line = arriving.say(b"MAIL FROM:<ann@acme.test>")  # its next command
        assert line[0].startswith(SHUTTING_DOWN), line
        assert arriving.reply() == []
    finally:
        arriving.close()
        between.close()
    assert desk.stop() == 0
    assert message_raw(desk, "arriving.at.the.stop@acme.test") == raw
    assert [case["subject"] for case in desk.cases()] == ["arriving at the stop"]
    assert "Traceback" not in desk.log()


def test_connections_still_in_the_listen_queue_at_the_end_hear_421_not_a_reset() -> None:
    """What a stop does last before the listening socket closes: the kernel has completed
    these connections, but nobody accepted them; closing would reset them."""
    listening = socket.create_server(("127.0.0.1", 0), backlog=16)
    listening.setblocking(False)
    port = listening.getsockname()[1]
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.2)  # the handshakes are complete: they wait in the queue
        assert refuse_waiting(listening, HOST) == 3
        listening.close()
        for sock in waiting:
            assert sock.makefile("rb").readline() == SHUTTING_DOWN + b"Service shutting down, try again later\r\n"
            assert closed(sock)
    finally:
        listening.close()
        for sock in waiting:
            sock.close()
    assert refuse_waiting(listening, HOST) == 0  # closed: nothing to answer, no error
