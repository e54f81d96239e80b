"""Outbound mail as bytes: the headers every maild mail carries (SPEC §4, §11).

Written out by hand rather than through `email.message.EmailMessage`: its header registry
made composing the slowest step of ingest (4 ms a mail, three mails a new case), and the
shape of our mails is fixed and simple. The tests parse what we write with the standard
library to keep us honest.
"""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

CRLF = b"\r\n"


def new_message_id(hostname: str) -> str:
    """A Message-ID without angle brackets, as stored; the header adds them."""
    return f"{uuid.uuid4().hex}@{hostname}"


def _header_text(value: str) -> str:
    """ASCII as it is; anything else as RFC 2047 encoded words, folded."""
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name="Subject").encode()


def _address(address: str, name: str = "") -> str:
    return formataddr((name, address), charset="utf-8") if name else address


def _qp(text: str) -> bytes:
    """A fan-out's agents get the same text and HTML: the last few are kept encoded (a str
    caches its hash, so the lookup costs little); large ones are not kept."""
    return _qp_kept(text) if len(text) <= 65_536 else _encode_qp(text)


@functools.lru_cache(maxsize=32)
def _qp_kept(text: str) -> bytes:
    return _encode_qp(text)


def _encode_qp(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", CRLF)


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _filename_param(filename: str) -> str:
    """RFC 2231 for non-ASCII names, so every client shows the name as it was."""
    if filename.isascii() and '"' not in filename and "\\" not in filename:
        return f'filename="{filename}"'
    from urllib.parse import quote

    return f"filename*=utf-8''{quote(filename, safe='')}"


def compose_mail(*, mail_from: str, from_name: str, to: str, to_name: str = "", reply_to: str,
                 subject: str, text: str, html: str, message_id: str, in_reply_to: str | None,
                 references: list[str], now: datetime, auto_submitted: str | None,
                 attachments: list[tuple[str, str, bytes]] | tuple[()] = ()) -> bytes:
    """multipart/alternative (in multipart/mixed with `attachments`: name, type, bytes);
    `auto_submitted` marks it automatic (RFC 3834) and asks robots not to answer."""
    headers = [
        f"From: {_address(mail_from, from_name)}",
        f"To: {_address(to, to_name)}",
        f"Reply-To: {_address(reply_to, from_name)}",
        f"Subject: {_header_text(subject)}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        headers.append("References: " + "\r\n ".join(f"<{r}>" for r in references))
    if auto_submitted:
        headers += [f"Auto-Submitted: {auto_submitted}", "X-Auto-Response-Suppress: All",
                    f"Precedence: {'auto_reply' if auto_submitted == 'auto-replied' else 'bulk'}"]
    headers.append("MIME-Version: 1.0")

    alt = "alt-" + uuid.uuid4().hex
    qp = b"Content-Transfer-Encoding: quoted-printable"
    body = [
        f"--{alt}".encode(), b'Content-Type: text/plain; charset="utf-8"', qp, b"", _qp(text),
        f"--{alt}".encode(), b'Content-Type: text/html; charset="utf-8"', qp, b"", _qp(html),
        f"--{alt}--".encode(), b"",
    ]
    if not attachments:
        head = [*headers, f'Content-Type: multipart/alternative; boundary="{alt}"']
        return CRLF.join(h.encode("ascii") for h in head) + CRLF + CRLF + CRLF.join(body)
    mixed = "mix-" + uuid.uuid4().hex
    parts = [f"--{mixed}".encode(), f'Content-Type: multipart/alternative; boundary="{alt}"'.encode(), b"", *body]
    for filename, content_type, data in attachments:
        kind = content_type if "/" in content_type else "application/octet-stream"
        parts += [f"--{mixed}".encode(), f"Content-Type: {kind}".encode("ascii", "replace"),
                  b"Content-Transfer-Encoding: base64",
                  f"Content-Disposition: attachment; {_filename_param(filename)}".encode(), b"", _b64(data)]
    parts += [f"--{mixed}--".encode(), b""]
    head = [*headers, f'Content-Type: multipart/mixed; boundary="{mixed}"']
    return CRLF.join(h.encode("ascii") for h in head) + CRLF + CRLF + CRLF.join(parts)
