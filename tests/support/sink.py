"""A real SMTP server that catches what maild sends, and can be told to refuse."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Caught:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


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
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, ssl_context=ssl_context,
                                     **smtp_options)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

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
            self.caught.append(Caught(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      envelope.original_content or b""))
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
