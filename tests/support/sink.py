"""A real SMTP server that catches what maild sends, and can be told to refuse.

Every mail it catches is checked byte by byte as it travelled (tests.support.wire_check); the
problems are kept on the mail, and conftest fails the test (or the session) whose sinks caught
a mail that a strict relay would refuse or garble (issue 20 §3).
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.wire_check import wire_problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Caught:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM parameters, upper case
    smtputf8: bool = False  # the envelope used SMTPUTF8 (RFC 6531)
    problems: list[str] = field(default_factory=list)  # what wire_problems found; [] = fit to travel

    @property
    def message(self) -> EmailMessage:
        """Parsed as a reader of this envelope would: UTF-8 headers as text under SMTPUTF8."""
        if self.smtputf8:
            return email.message_from_string(self.raw.decode("utf-8", "surrogateescape"),  # type: ignore[return-value]
                                             policy=email.policy.SMTPUTF8)
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    def describe(self) -> str:
        """Which mail, for a failure message: envelope, Subject and Message-ID."""
        try:
            msg = self.message
            subject, message_id = str(msg["Subject"]), str(msg["Message-ID"])
        except Exception as e:  # a mail too broken to parse is described by its envelope
            subject = message_id = f"<unparsable: {type(e).__name__}>"
        return (f"mail from <{self.mail_from}> to {', '.join(self.rcpt_tos)} (options {self.mail_options or 'none'}), "
                f"Subject {subject!r}, Message-ID {message_id}")


class _StrictSMTP(SMTP):
    """Takes lines of any length, so a line over 998 octets reaches the wire check (and fails the
    test naming the mail) instead of a `500 Line too long` that maild records as a failed send."""

    line_length_limit = 1 << 20


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _StrictSMTP(self.handler, **self.SMTP_kwargs)


_LIVE: list[Sink] = []  # sinks started and not yet checked after their stop: see bad_mails()
_LIVE_LOCK = threading.Lock()


def bad_mails(sinks: list[Sink] | None = None) -> list[str]:
    """The caught mails with wire problems not reported before, one paragraph each; `sinks`:
    these, else every sink started in this process. A stopped sink, once checked, is forgotten."""
    with _LIVE_LOCK:
        chosen = list(_LIVE) if sinks is None else sinks
    report: list[str] = []
    for s in chosen:
        report += s.unreported_problems()
        if not s.running:
            with _LIVE_LOCK:
                if s in _LIVE:
                    _LIVE.remove(s)
    return report


class Sink:
    def __init__(self, ssl_context: ssl.SSLContext | None = None, **smtp_options: Any) -> None:
        """`ssl_context`: implicit TLS (smtps); `smtp_options` go to aiosmtpd's SMTP (e.g.
        tls_context for STARTTLS, authenticator)."""
        self.port = free_port()
        self.caught: list[Caught] = []
        self.lock = threading.Lock()
        # Answers for the next DATA commands, e.g. ["451 4.3.0 try later"]; empty: 250.
        self.answers: list[str] = []
        self.refuse_rcpt: set[str] = set()  # these recipients get 550 at RCPT
        self.connections = 0  # EHLOs seen: how many SMTP sessions were opened
        self.running = False
        self._reported = 0  # caught[:_reported] were checked by bad_mails()
        smtp_options.setdefault("enable_SMTPUTF8", True)  # maild sends to internationalized addresses
        self.controller = _Controller(self, hostname="127.0.0.1", port=self.port, ssl_context=ssl_context,
                                      **smtp_options)

    def start(self) -> None:
        self.controller.start()
        self.running = True
        with _LIVE_LOCK:
            if self not in _LIVE:
                _LIVE.append(self)

    def stop(self) -> None:
        self.controller.stop()
        self.running = False

    def unreported_problems(self) -> list[str]:
        """Caught mails with wire problems since the last call, each with its problems."""
        with self.lock:
            fresh, self._reported = self.caught[self._reported:], len(self.caught)
        return [f"{c.describe()}:\n" + "\n".join(f"    - {p}" for p in c.problems) for c in fresh if c.problems]

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() in self.refuse_rcpt:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.answers:
                return self.answers.pop(0)
        raw = envelope.original_content or b""
        options = [o.upper() for o in envelope.mail_options]
        try:
            problems = wire_problems(raw, options)
        except Exception as e:  # the check's own bug must fail the test, not make the sink answer 500
            problems = [f"the wire check itself failed: {type(e).__name__}: {e}"]
        with self.lock:
            self.caught.append(Caught(envelope.mail_from or "", list(envelope.rcpt_tos), raw, options,
                                      bool(envelope.smtp_utf8), problems))
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[Caught]:
        with self.lock:
            return [c for c in self.caught if address.lower() in (r.lower() for r in c.rcpt_tos)]

    def wait_for(self, pred: Callable[[Caught], bool], timeout: float = 15.0) -> list[Caught]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [c for c in self.caught if pred(c)]
            if found:
                return found
            time.sleep(0.05)
        return []
