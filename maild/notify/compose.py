"""Outbound mail as bytes: the headers every maild mail carries (SPEC §4, §11)."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime


def new_message_id(hostname: str) -> str:
    """A Message-ID without angle brackets, as stored; the header adds them."""
    return f"{uuid.uuid4().hex}@{hostname}"


def _header_address(address: str, name: str = "") -> HeaderAddress:
    local, _, domain = address.partition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)


def compose_mail(*, mail_from: str, from_name: str, to: str, to_name: str = "", reply_to: str,
                 subject: str, text: str, html: str, message_id: str, in_reply_to: str | None,
                 references: list[str], now: datetime, auto_submitted: str | None,
                 attachments: list[tuple[str, str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """A multipart/alternative mail (in multipart/mixed with `attachments`: name, type, bytes);
    `auto_submitted` marks it automatic (RFC 3834)."""
    msg = EmailMessage()
    msg["From"] = _header_address(mail_from, from_name)
    msg["To"] = _header_address(to, to_name)
    msg["Reply-To"] = _header_address(reply_to, from_name)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "auto_reply" if auto_submitted == "auto-replied" else "bulk"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)
