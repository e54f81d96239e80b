"""Raw bytes to `InboundMessage`: the one plain object the rest of maild reads a mail through.

mail-parser does the MIME walk and charset decoding; this module only reshapes its answer
and reads the headers maild decides on (threading, loop and authentication markers). The
types it returns are vocabulary: import them from maild.domain.message and maild.domain.errors.
"""

from __future__ import annotations

import base64
import dataclasses
import email.policy
import hashlib
import logging
import re
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.utils import getaddresses
from pathlib import Path

import mailparser

from maild.domain.errors import ParseError
from maild.domain.message import Address, InboundAttachment, InboundMessage, RawMail
from maild.headers import clean_name, clean_subject, is_mail_address, normalize_address
from maild.ingest.large_mail import StoredPart, Undecodable, skeleton_of
from maild.ingest.sanitize import sanitize_html
from maild.rules.bounce_detect import BounceScan, could_be_bounce, scan_safely
from maild.store.blobs import BlobStore
from maild.threading.reply import extract_reply, html_to_text

# mail-parser logs every defect it meets; maild reports what matters itself (quarantine reasons).
logging.getLogger("mailparser").setLevel(logging.CRITICAL)


MSGID_RE = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str | None) -> list[str]:
    """All `<id>` tokens of a References/In-Reply-To value, in order, without brackets."""
    if not value:
        return []
    found = MSGID_RE.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [value.strip()]  # some clients omit the brackets
    return found


def _decode_header_value(value: object) -> str:
    text = str(value)
    if not text.isascii():  # RFC 6532 UTF-8 (made text by _header_text): decode_header would garble it
        if "=?" not in text:
            return text
        try:  # encoded words beside raw UTF-8: the policy's parser reads both
            return str(email.policy.default.header_factory("subject", text))
        except Exception:
            return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # malformed encoded words: keep the text as it came
        return text


def _header_text(value: str, fallback: str) -> str:
    """A raw header value as the email package keeps it: 8-bit bytes as surrogates. They are
    UTF-8 (RFC 6532, what SMTPUTF8 clients send); bytes that are not are legacy mail in the
    body's charset (`fallback`) or, failing that, windows-1252 — never U+FFFD in a subject."""
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # already text
        return value
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for charset in (fallback, "windows-1252"):
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


ANGLE_ADDRESS_RE = re.compile(r"<([^\s@<>\"]+@[^\s@<>\"]+)>")


def _addresses(values: list[str]) -> list[Address]:
    """Addr-specs maild can write only (maild.headers.is_mail_address, internationalized ones
    included): a garbled header must not become a contact or a reply target, nor an address
    that would break a header maild writes. Names are decoded and
    cleaned: an encoded word's CR/LF must not reach a header or a contact."""
    out: list[Address] = []
    for name, addr in getaddresses(values):
        addr = normalize_address(addr.strip().strip("<>"))
        if is_mail_address(addr):
            out.append(Address(address=addr, name=clean_name(_decode_header_value(name).strip().strip('"'))))
    if not out:  # a broken header: take the last <local@domain> in it, if any
        for value in values:
            found = [normalize_address(a) for a in ANGLE_ADDRESS_RE.findall(value) if is_mail_address(a)]
            if found:
                out.append(Address(address=found[-1]))
    return out


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _dsn_failed_recipients(parts: list[EmailMessage]) -> list[str]:
    """Final-Recipient (or Original-Recipient) of each failed block of message/delivery-status."""
    found: list[str] = []
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        for block in payload if isinstance(payload, list) else []:
            action = str(block.get("Action", "failed")).strip().lower()
            recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            addr = recipient.split(";", 1)[-1].strip().strip("<>").lower()
            if "@" in addr and action in ("failed", "") and addr not in found:
                found.append(addr)
    return found


def _returned_message_ids(parts: list[EmailMessage]) -> list[str]:
    """Message-IDs of the mail a DSN returns (its text/rfc822-headers or message/rfc822 part)."""
    ids: list[str] = []
    for part in parts:
        if part.get_content_type() not in ("text/rfc822-headers", "message/rfc822"):
            continue
        payload = part.get_payload()
        headers = payload[0] if isinstance(payload, list) and payload else None
        value = headers.get("Message-ID") if headers is not None else None
        if value is None and isinstance(payload, str):
            for line in payload.splitlines():
                if line.lower().startswith("message-id:"):
                    value = line.split(":", 1)[1]
        ids += message_ids(str(value) if value else None)
    return ids


_INLINE_MESSAGE_ID_RE = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.I | re.M)


def _inline_returned_ids(text: str) -> list[str]:
    """Message-IDs of a mail returned inline, below a non-MIME bounce's notice (qmail, Exim,
    Yahoo: "--- Below this line is a copy of the message.")."""
    return [i for m in _INLINE_MESSAGE_ID_RE.finditer(text) for i in message_ids(m.group(1))]


def parse_message(raw: bytes, stored: dict[bytes, StoredPart] | None = None, max_parts: int | None = None,
                  *, omitted: int = 0) -> InboundMessage:
    """Reads a mail; raises ParseError with a reason a person can act on. `stored`: the
    markers of a large mail's skeleton (ingest.large_mail) and the bodies they stand for.
    `max_parts`: attachments kept at most ([protection] max_mime_parts); without `stored`,
    parts past it are cut out before the email package reads them. `omitted`: parts the
    skeleton left out already."""
    if not raw.strip():
        raise ParseError("empty message")
    if stored is None and max_parts is not None:
        skeleton = skeleton_of(raw, None, max_parts)  # nothing stored: it only cuts
        if skeleton is not None:
            msg = parse_message(skeleton.raw, skeleton.parts, max_parts, omitted=skeleton.omitted)
            return dataclasses.replace(msg, raw_mail=RawMail(raw), sha256=hashlib.sha256(raw).hexdigest(),
                                       size=len(raw))
    try:
        mp = mailparser.parse_from_bytes(raw)
    except Exception as e:
        raise ParseError(f"mail-parser failed: {type(e).__name__}: {e}") from e
    msg = mp.message
    if msg is None or len(msg.keys()) == 0:
        raise ParseError("no header section found")
    try:
        return _to_inbound(raw, mp, msg, stored or {}, max_parts, omitted)
    except ParseError:
        raise
    except Exception as e:  # whatever odd bytes do to the stdlib, the mail goes to quarantine
        raise ParseError(f"cannot read the message: {type(e).__name__}: {e}") from e


def _to_inbound(raw: bytes, mp: mailparser.MailParser, msg: EmailMessage,
                stored: dict[bytes, StoredPart], max_parts: int | None = None, omitted: int = 0) -> InboundMessage:

    fallback = ""  # the charset legacy 8-bit headers are read in, looked up at the first one
    raw_headers: dict[str, list[str]] = {}  # lowercased name -> undecoded text (RFC 6532 UTF-8 read)
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        if not value.isascii():
            fallback = fallback or next((c for c in msg.get_charsets() if c), "windows-1252")
            value = _header_text(value, fallback)
        raw_headers.setdefault(name.lower(), []).append(value)
        headers.setdefault(name.lower(), []).append(_decode_header_value(value))

    def raw_values(name: str) -> list[str]:
        return raw_headers.get(name.lower(), [])

    def first(name: str) -> str | None:
        values = raw_headers.get(name.lower())
        return values[0] if values else None

    senders = _addresses(raw_values("From"))
    subject = clean_subject(_decode_header_value(first("Subject") or ""))  # one line, ≤ 1,000 (SPEC §11)

    text = _lines("\n".join(t for t in mp.text_plain if t)).strip("\n")
    html_parts = [_lines(h) for h in mp.text_html if h]
    html_body = "\n".join(html_parts) if html_parts else None
    plain = text  # the reply's new text is cut from the HTML when there is no text part
    if not text and html_body:
        text = html_to_text(html_body)

    attachments: list[InboundAttachment] = []
    found = mp.attachments
    if max_parts is not None and len(found) > max_parts:  # the rest stays in the raw message
        found, omitted = found[:max_parts], omitted + len(found) - max_parts
    for a in found:
        payload = a.get("payload") or ""
        try:
            data = base64.b64decode(payload) if a.get("binary") else str(payload).encode("utf-8")
        except (ValueError, TypeError) as e:
            raise ParseError(f"attachment {a.get('filename')!r} cannot be decoded: {e}") from e
        part = stored.get(data)
        disposition = (a.get("content-disposition") or "").lower()
        content_id = (a.get("content-id") or "").strip().strip("<>") or None
        filename = _decode_header_value(a.get("filename") or "attachment")
        attachments.append(InboundAttachment(
            filename=filename, content_type=a.get("mail_content_type") or "application/octet-stream",
            data=None if part else data, sha256=part.sha256 if part else hashlib.sha256(data).hexdigest(),
            size=part.size if part else len(data), content_id=content_id,
            inline=disposition.startswith("inline") or (content_id is not None and not disposition),
        ))

    mid = message_ids(first("Message-ID"))
    parts = list(msg.walk())
    sender = senders[0] if senders else None
    bounce = BounceScan()
    if could_be_bounce(msg, subject, sender.address if sender else "", sender.name if sender else ""):
        bounce = scan_safely(msg)
    return InboundMessage(
        raw_mail=RawMail(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        message_id=mid[0] if mid else None,
        sender=sender,
        reply_to=_addresses(raw_values("Reply-To")),
        to=_addresses(raw_values("To")),
        cc=_addresses(raw_values("Cc")),
        subject=subject,
        text=text,
        html=html_body,
        attachments=attachments,
        in_reply_to=message_ids(first("In-Reply-To")),
        references=message_ids(" ".join(raw_values("References"))),
        headers=headers,
        content_type=msg.get_content_type(),
        report_type=(msg.get_param("report-type") or None) if msg.get_content_type() == "multipart/report"
        else None,
        dsn_failed_recipients=_dsn_failed_recipients(parts),
        returned_message_ids=list(dict.fromkeys(_returned_message_ids(parts) + (
            _inline_returned_ids(text) if bounce.detector else []))),
        bounce_permanent=bounce.permanent,
        bounce_temporary=bounce.temporary,
        bounce_detector=bounce.detector,
        bounce_diagnostics=bounce.diagnostics,
        size=len(raw),
        reply=extract_reply(plain, html_body),
        safe_html=sanitize_html(html_body) if html_body else None,
        omitted_parts=omitted,
    )


def parse_stored(source: Path | bytes, attachments: BlobStore, max_parts: int | None = None) -> InboundMessage:
    """parse_message for a parse worker: large base64 attachments are decoded straight into
    `attachments` (ingest.large_mail) instead of through the email package, line by line; a
    spooled mail (a Path) is never read whole. Parts past `max_parts` are neither stored nor
    parsed. Returns the mail with `raw` empty, its sha256 and size those of the whole mail."""
    try:
        skeleton = skeleton_of(source, attachments, max_parts)
    except Undecodable as e:
        raise ParseError(str(e)) from e
    if skeleton is None:  # nothing to take out, or a structure the walk does not follow
        raw = source if isinstance(source, bytes) else source.read_bytes()
        return dataclasses.replace(parse_message(raw, {}, max_parts), raw_mail=RawMail())  # {}: walked already
    msg = parse_message(skeleton.raw, skeleton.parts, max_parts, omitted=skeleton.omitted)
    if isinstance(source, bytes):
        return dataclasses.replace(msg, raw_mail=RawMail(), sha256=hashlib.sha256(source).hexdigest(), size=len(source))
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return dataclasses.replace(msg, raw_mail=RawMail(), sha256=digest.hexdigest(), size=source.stat().st_size)
