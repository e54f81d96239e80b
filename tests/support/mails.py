"""Mail as clients write it, and waiting for what maild sends: the one builder and the one wait
helper for every test (issue 22 §9). Client-specific shapes (an Exchange out-of-office, a
Thunderbird mail with attachments, the corpus under tests/eml/) stay fixtures of their own."""

from __future__ import annotations

import base64
import inspect
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypeVar

from tests.support.sink import Caught, Sink

TOKEN_RE = re.compile(r"(support\+[a-z0-9]+@example\.com)")
DATE = "Fri, 20 Nov 2026 10:00:00 +0000"

T = TypeVar("T")


def crlf(text: str) -> str:
    """Every line end as CRLF, whichever the caller wrote (a bare CR stays as it is)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _text_part(text: str) -> list[str]:
    return ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", crlf(text)]


def _attachment_part(name: str, content_type: str, data: bytes) -> list[str]:
    b64 = base64.b64encode(data).decode()
    return [f"Content-Type: {content_type}; name=\"{name}\"", f"Content-Disposition: attachment; filename=\"{name}\"",
            "Content-Transfer-Encoding: base64", "", "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))]


def _mixed(parts: list[list[str]]) -> list[str]:
    """A multipart/mixed entity (its Content-Type line first) with a fresh boundary, as clients pick one."""
    boundary = f"------------{uuid.uuid4().hex}"
    lines = [f"Content-Type: multipart/mixed;\r\n boundary=\"{boundary}\"", ""]
    for part in parts:
        lines += [f"--{boundary}", *part]
    return [*lines, f"--{boundary}--", ""]


def mail(frm: str, to: str, subject: str, body: str = "Hello", *, cc: str | None = None,
         msgid: str | Literal[False] | None = None, date: str = DATE, headers: Mapping[str, str] | None = None,
         lines: Sequence[str] = (), attachments: Sequence[tuple[str, str, bytes]] = ()) -> bytes:
    """A mail as a mail client sends it: CRLF line ends, a Message-ID, a Date and MIME headers,
    the text as UTF-8 in 8 bits (raw UTF-8 in headers too, as with SMTPUTF8).

    `msgid`: None gives a fresh one; False leaves the header out (as scripts and broken clients
    do). `headers` are added after the client's own; `lines` are raw header lines added last, in
    order (folded, repeated or broken as an attack or an MTA writes them): a line without a colon
    ends the header section there, as it does for any reader. `attachments` (file name, content
    type, bytes) make it multipart/mixed, base64 in lines of 76.
    """
    head = [f"From: {frm}", f"To: {to}", *([f"Cc: {cc}"] if cc else []), f"Subject: {subject}"]
    if msgid is not False:
        head.append(f"Message-ID: <{msgid or uuid.uuid4().hex + '@client.test'}>")
    head += [f"Date: {date}", "MIME-Version: 1.0"]
    content = _text_part(body)
    if attachments:
        content = _mixed([content, *(_attachment_part(*a) for a in attachments)])
    head += content[:content.index("")]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head += lines
    entity = "\r\n".join(content[content.index("") + 1:])
    return ("\r\n".join(head) + "\r\n\r\n" + entity + ("" if entity.endswith("\r\n") else "\r\n")).encode()


def text_of(c: Caught) -> str:
    part = c.message.get_body(("plain",))
    return part.get_content() if part else ""


def token_of(c: Caught) -> str:
    """The `support+<token>@example.com` Reply-To of a mail maild sent."""
    return TOKEN_RE.search(str(c.message["Reply-To"])).group(1)


def _source(fn: Callable[..., object]) -> str:
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return repr(fn)


def wait_until(pred: Callable[[], T], timeout: float = 15, *, interval: float = 0.05,
               explain: str | Callable[[], str] = "") -> T:
    """What `pred` returns once it is truthy; at the timeout an AssertionError that names what was
    awaited, what it last returned and `explain` (a callable, e.g. a daemon's log, is read then).
    Tests wait on what a person would see, so a slow machine waits longer instead of failing."""
    deadline = time.monotonic() + timeout
    while not (value := pred()) and time.monotonic() < deadline:
        time.sleep(interval)
    if value:
        return value
    why = explain() if callable(explain) else explain
    last = repr(value)
    raise AssertionError(f"waited {timeout:g}s for: {_source(pred)}\nlast: {last[:500]}"
                         + (f"\n{why}" if why else ""))


def wait_count(sink: Sink, address: str, count: int, timeout: float = 30, *,
               explain: str | Callable[[], str] = "") -> list[Caught]:
    """The mails to `address` once there are at least `count` of them; fails if they are fewer
    at the timeout, naming what did arrive (and `explain`, as for wait_until)."""

    def arrived() -> str:
        got = sink.to(address)
        why = explain() if callable(explain) else explain
        return (f"{address} got {len(got)} of {count} mails: {[str(c.message['Subject']) for c in got]} "
                f"({len(sink.caught)} at the sink in all)" + (f"\n{why}" if why else ""))

    wait_until(lambda: len(sink.to(address)) >= count, timeout, explain=arrived)
    return sink.to(address)
