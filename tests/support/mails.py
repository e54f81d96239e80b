"""Mail as clients write it, and what tests read back from the sink: one copy for every e2e test."""

from __future__ import annotations

import re
import time
import uuid

from tests.support.sink import Caught, Sink

TOKEN_RE = re.compile(r"(support\+[a-z0-9]+@example\.com)")


def mail(frm: str, to: str, subject: str, body: str, *, cc: str | None = None, msgid: str | None = None,
         headers: dict[str, str] | None = None) -> bytes:
    """A text/plain mail as a mail client sends it: CRLF line ends, a Message-ID and a Date."""
    lines = [f"From: {frm}", f"To: {to}", *([f"Cc: {cc}"] if cc else []), f"Subject: {subject}",
             f"Message-ID: <{msgid or uuid.uuid4().hex + '@client.test'}>",
             "Date: Fri, 20 Nov 2026 10:00:00 +0000", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


def text_of(c: Caught) -> str:
    part = c.message.get_body(("plain",))
    return part.get_content() if part else ""


def token_of(c: Caught) -> str:
    """The `support+<token>@example.com` Reply-To of a mail maild sent."""
    return TOKEN_RE.search(str(c.message["Reply-To"])).group(1)


def wait_count(sink: Sink, address: str, count: int, timeout: float = 15) -> list[Caught]:
    """The mails to `address` once there are `count` of them (or all there are at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(sink.to(address)) < count:
        time.sleep(0.05)
    return sink.to(address)
