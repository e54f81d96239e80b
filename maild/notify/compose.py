"""Outbound mail as bytes: the headers every maild mail carries (SPEC §4, §11).

Written out by hand rather than through `email.message.EmailMessage`: its header registry
made composing the slowest step of ingest (4 ms a mail, three mails a new case), and the
shape of our mails is fixed and simple. The tests parse what we write with the standard
library to keep us honest (tests/unit/test_header_encoding.py, over arbitrary Unicode).

Every header is built here, from decoded values, by the encoder below and nothing else: text
is cleaned first (maild.headers: no control character, no line break, names ≤ 200 and
subjects ≤ 1,000 characters), then written as ASCII words, a quoted string or RFC 2047
encoded words (file names: RFC 2231), folded at 78 octets with CRLF. Addresses: a plain
addr-spec as it is; an internationalized one (RFC 6531) with its domain in IDNA form when its
local part is ASCII (the mail stays ASCII), else as raw UTF-8 (RFC 6532: the mail then needs a
relay offering SMTPUTF8, which notify.transport checks). Anything else is never written:
compose raises ValueError.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import uuid
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote

from maild.headers import ascii_address, clean_filename, clean_name, clean_subject, is_mail_address, is_plain_address

CRLF = b"\r\n"
LINE = 78  # RFC 5322's recommended line length; every line maild writes is at most 998

_ATEXT_WORDS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# type/subtype of RFC 6838's restricted names; multipart/* and message/* never travel as base64.
_MIME_TYPE = re.compile(r"(?!multipart/|message/)[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_MSG_ID = re.compile(r"[!-;=?-~]{1,250}")  # printable ASCII but < and >
# RFC 6532 §3.2: in a mail that travels with SMTPUTF8 anyway, a Message-ID may hold UTF-8 too
# (what a customer's SMTPUTF8 client wrote, so their reply threads on their side as well).
_UTF8_MSG_ID = re.compile(r"(?:[!-;=?-~]|[^\x00-\x7f\s\x80-\x9f\u2028\u2029\ud800-\udfff])+")
_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 2231 attribute-char that urllib.parse.quote would escape
_EW_BYTES = 42  # UTF-8 bytes in one encoded word: "=?utf-8?b?" + 56 + "?=" is 68 characters


def new_message_id(hostname: str) -> str:
    """A Message-ID without angle brackets, as stored; the header adds them."""
    return f"{uuid.uuid4().hex}@{hostname}"


def _octets(text: str) -> int:
    """Line lengths count octets (RFC 5322 §2.1.1, RFC 6532 §3.4); only a raw UTF-8 address
    makes them differ from characters."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _fold(field: str, tokens: list[str]) -> str:
    """`Field: ` and the tokens joined by single spaces; a space becomes CRLF SP where the line
    would pass 78 octets. Tokens never hold a line break, so nothing else can start a line."""
    line = f"{field}: {' '.join(tokens)}"
    if _octets(line) <= LINE:
        return line
    lines: list[str] = []
    line = f"{field}: {tokens[0]}"
    for token in tokens[1:]:
        if _octets(line) + 1 + _octets(token) > LINE:
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return "\r\n".join(lines)


def _encoded_word(data: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 words of at most 68 characters, never splitting a character's bytes: a reader
    joins adjacent ones with nothing between them (RFC 2047 §6.2)."""
    data = text.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + _EW_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: step back to its lead
            end -= 1
        words.append(_encoded_word(data[start:end]))
        start = end
    return words


def _unstructured(field: str, value: str) -> str:
    """Subject: ASCII words as they are, anything else (or text that would read as an encoded
    word, or a word too long to fold) as encoded words."""
    text = clean_subject(value)
    words = text.split(" ")
    if text.isascii() and "=?" not in text and max(map(len, words)) <= 900:
        return _fold(field, words)
    return _fold(field, _encoded_words(text))


@functools.lru_cache(maxsize=256)  # a desk's From and its people's To recur mail after mail
def _mailbox(field: str, address: str, name: str = "") -> str:
    """`Field: name <address>`. A non-ASCII name (or one that looks like an encoded word) is
    ONE encoded word: Python's parser before 3.14 puts a space between adjacent encoded words
    of a display name (gh-128110) where RFC 2047 readers join them, and one word reads the
    same to both; clean_name keeps it within 600 bytes, so the line stays under 998. The
    address: see the module's docstring (an address is at most 254 octets, on a line of its own
    when the name is long)."""
    if not is_plain_address(address):
        if not is_mail_address(address):
            raise ValueError(f"{field}: {address!r} is not a mail address; maild writes no other into a header")
        address = ascii_address(address) or address  # None: a UTF-8 local part, written as it is
    name = clean_name(name)
    if not name:
        return f"{field}: {address}"
    if not name.isascii() or "=?" in name:
        phrase = _encoded_word(name.encode("utf-8"))
    elif _ATEXT_WORDS.fullmatch(name):
        phrase = name
    else:
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _fold(field, [phrase, f"<{address}>"])


def _content_type(kind: str) -> str:
    """The attachment's stored type if it is a clean `type/subtype`, else octet-stream."""
    token = kind.partition(";")[0].strip().lower()
    return token if _MIME_TYPE.fullmatch(token) else "application/octet-stream"


def _disposition(filename: str) -> str:
    """`attachment` with the file name quoted when plain ASCII, else RFC 2231 (continued in
    parts of at most 60 characters), so every client shows the same name."""
    name = clean_filename(filename)
    if name.isascii() and "=?" not in name:
        return _fold("Content-Disposition", ["attachment;", f'filename="{name}"'])
    parts = [""]
    for char in name:  # a part ends between characters: some readers decode each part alone
        encoded = quote(char, safe=_ATTR_CHARS)
        if len(parts[-1]) + len(encoded) > 60:
            parts.append("")
        parts[-1] += encoded
    if len(parts) == 1:
        return _fold("Content-Disposition", ["attachment;", f"filename*=utf-8''{parts[0]}"])
    params = [f"filename*{i}*={part};" for i, part in enumerate(parts)]
    params[0] = params[0].replace("=", "=utf-8''", 1)
    params[-1] = params[-1].rstrip(";")
    return _fold("Content-Disposition", ["attachment;", *params])


def _msg_id(field: str, value: str) -> str:
    if not _MSG_ID.fullmatch(value):
        raise ValueError(f"{field}: {value!r} is not a Message-ID maild writes")
    return f"<{value}>"


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


def _boundary(seed: str | None, part: str) -> str:
    """32 hex digits: from the seed (no text holds them by chance), or random."""
    if seed is None:
        return uuid.uuid4().hex
    return hashlib.blake2b(f"{part}\0{seed}".encode(), digest_size=16).hexdigest()


def compose_mail(*, mail_from: str, from_name: str, to: str, to_name: str = "", reply_to: str,
                 subject: str, text: str, html: str, message_id: str, in_reply_to: str | None,
                 references: list[str], now: datetime, auto_submitted: str | None,
                 attachments: list[tuple[str, str, bytes]] | tuple[()] = (),
                 boundary_seed: str | None = None) -> bytes:
    """multipart/alternative (in multipart/mixed with `attachments`: name, type, bytes);
    `auto_submitted` marks it automatic (RFC 3834) and asks robots not to answer.

    Names and the subject may hold anything: they are cleaned and encoded. Addresses must be
    mail addresses (maild.headers.is_mail_address) and `message_id` plain (ValueError
    otherwise); an `in_reply_to` or reference that is not a plain Message-ID is left out, since
    it came from someone else's mail (a UTF-8 one is kept in a mail to a UTF-8 address only).
    The header section is ASCII unless the To address has a UTF-8 local part. `boundary_seed`
    (the outbox passes the Message-ID): MIME boundaries derived from it, so building the same
    mail again gives the same bytes; random ones otherwise."""
    headers = [
        _mailbox("From", mail_from, from_name),
        _mailbox("To", to, to_name),
        _mailbox("Reply-To", reply_to, from_name),
        _unstructured("Subject", subject),
        f"Date: {format_datetime(now)}",
        f"Message-ID: {_msg_id('Message-ID', message_id)}",
    ]
    utf8 = not headers[1].isascii()  # the To has a UTF-8 local part: the mail needs SMTPUTF8 anyway

    def ok(msg_id: str) -> bool:
        return _MSG_ID.fullmatch(msg_id) is not None or (
            utf8 and len(msg_id.encode("utf-8")) <= 250 and _UTF8_MSG_ID.fullmatch(msg_id) is not None)

    if in_reply_to and ok(in_reply_to):
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    references = [r for r in references if ok(r)]
    if references:
        headers.append("References: " + "\r\n ".join(f"<{r}>" for r in references))
    if auto_submitted:
        headers += [f"Auto-Submitted: {auto_submitted}", "X-Auto-Response-Suppress: All",
                    f"Precedence: {'auto_reply' if auto_submitted == 'auto-replied' else 'bulk'}"]
    headers.append("MIME-Version: 1.0")

    alt = "alt-" + _boundary(boundary_seed, "alt")
    qp = b"Content-Transfer-Encoding: quoted-printable"
    body = [
        f"--{alt}".encode(), b'Content-Type: text/plain; charset="utf-8"', qp, b"", _qp(text),
        f"--{alt}".encode(), b'Content-Type: text/html; charset="utf-8"', qp, b"", _qp(html),
        f"--{alt}--".encode(), b"",
    ]
    if not attachments:
        head = [*headers, f'Content-Type: multipart/alternative; boundary="{alt}"']
        return CRLF.join(h.encode("utf-8") for h in head) + CRLF + CRLF + CRLF.join(body)
    mixed = "mix-" + _boundary(boundary_seed, "mix")
    parts = [f"--{mixed}".encode(), f'Content-Type: multipart/alternative; boundary="{alt}"'.encode(), b"", *body]
    for filename, content_type, data in attachments:
        parts += [f"--{mixed}".encode(), f"Content-Type: {_content_type(content_type)}".encode(),
                  b"Content-Transfer-Encoding: base64", _disposition(filename).encode("ascii"), b"", _b64(data)]
    parts += [f"--{mixed}--".encode(), b""]
    head = [*headers, f'Content-Type: multipart/mixed; boundary="{mixed}"']
    return CRLF.join(h.encode("utf-8") for h in head) + CRLF + CRLF + CRLF.join(parts)
