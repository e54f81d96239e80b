"""Untrusted text as it may stand in a mail header (SPEC §11): one cleaning for every reader.

Ingest cleans what it decodes (display names, subjects), the contacts store cleans the names
it keeps, and notify's encoder cleans again before it writes: whatever a value went through,
no control character, no line break and no overlong value reaches a header. Imports nothing
of maild, so that `ingest`, `store` and `notify` can all use it.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata

import idna

NAME_MAX = 200  # a display name (SPEC §11)
NAME_BYTES = 600  # and its UTF-8: as one RFC 2047 word (notify.compose) it stays well within a line
SUBJECT_MAX = 1000  # a stored subject, and any Subject maild writes (SPEC §11)
FILENAME_MAX = 255  # an attachment's file name as maild writes it
ADDRESS_MAX = 254  # RFC 5321's path limit less the angle brackets

# C0, DEL, C1 and the Unicode line and paragraph separators. Those that `str.split()` counts
# as whitespace (TAB, LF, VT, FF, CR, FS..US, NEL, U+2028, U+2029) become a space there;
# the rest are dropped. Lone surrogates go too: they cannot be encoded at all.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_DROP = {c: None for c in _CONTROLS if not chr(c).isspace()} | {c: None for c in range(0xD800, 0xE000)}

# A plain addr-spec: a dot-atom local part of ASCII atext and a host name. Nothing else is
# ever written as an address: no quoted local part, no comment, no space, no control, none
# of <>,;" that would end or add an address in the header.
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def clean_text(value: str, limit: int) -> str:
    """`value` on one line: control characters dropped (line breaks and tabs as a space), runs
    of whitespace as one space, no space at either end, at most `limit` characters."""
    if len(value) > 8 * limit:  # a megabyte of subject is not worth translating whole
        value = value[: 8 * limit]
    text = " ".join(value.translate(_DROP).split())
    return text[:limit].rstrip() if len(text) > limit else text


def clean_name(value: str) -> str:
    """A display name as maild keeps and writes it: at most 200 characters, and 600 UTF-8
    bytes (only names of 4-byte characters, such as emoji, reach that first)."""
    text = clean_text(value, NAME_MAX)
    if len(text) > NAME_BYTES // 4 and len(text.encode("utf-8")) > NAME_BYTES:
        text = text.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore").rstrip()
    return text


def clean_subject(value: str) -> str:
    """A subject as maild keeps and writes it."""
    return clean_text(value, SUBJECT_MAX)


_FILENAME_QUOTES = str.maketrans('"\\<>', "____")


def clean_filename(value: str) -> str:
    """A file name as maild writes it: clean text without the quotes, backslashes and angle
    brackets that readers strip or unescape from a parameter (Python's `get_filename` drops a
    surrounding pair of them), never empty."""
    return clean_text(value, FILENAME_MAX).translate(_FILENAME_QUOTES) or "attachment"


def is_plain_address(address: str) -> bool:
    """True for an addr-spec that can be written into a header as it is."""
    return len(address) <= ADDRESS_MAX and _ADDR_SPEC.fullmatch(address) is not None


# RFC 6531 §3.3: a local part may also hold UTF-8 beyond ASCII. Still a dot-atom: no space, no
# control, none of the specials that would end or add an address in a header.
_INTL_LOCAL = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s\x80-\x9f\u2028\u2029])+"
                         r"(?:\.(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s\x80-\x9f\u2028\u2029])+)*")
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def idna_domain(domain: str) -> str | None:
    """The domain as DNS and an ASCII header carry it (IDNA 2008 with UTS #46 mapping, not
    Python's IDNA 2003 codec, which maps ß to ss), or None if it is no valid domain. An ASCII
    domain is returned as it is."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain.rstrip("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def normalize_address(address: str) -> str:
    """An address as maild keeps it: lowercased, NFC, an IDNA domain in its Unicode form, so
    that one mailbox is one contact whether a client or an MTA (Postfix does) wrote the domain
    as `příklad.example` or `xn--pklad-zsa96e.example`. Mail to it goes out in the form the
    relay needs (notify.transport)."""
    address = address.lower()
    if "xn--" in address:
        local, at, domain = address.rpartition("@")
        with contextlib.suppress(idna.IDNAError, UnicodeError, ValueError):  # not valid IDNA: kept as written
            address = f"{local}{at}{idna.decode(domain)}"
    return address if address.isascii() else unicodedata.normalize("NFC", address)


def ascii_address(address: str) -> str | None:
    """`address` as plain ASCII: an internationalized domain in IDNA form (`jiri@xn--pklad-zsa96e.example`).
    None when the local part itself is not ASCII: such a mailbox is reached with SMTPUTF8 only."""
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    ascii_domain = idna_domain(domain)
    if ascii_domain is None:
        return None
    result = f"{local}@{ascii_domain}"
    return result if is_plain_address(result) else None


def is_mail_address(address: str) -> bool:
    """True for an address maild keeps and writes: a plain addr-spec, or an internationalized
    one (RFC 6531: UTF-8 in the local part, a domain that is valid IDNA). Such an address goes
    into a header as raw UTF-8 (RFC 6532), so it must hold nothing a header could not carry."""
    if is_plain_address(address):
        return True
    local, at, domain = address.rpartition("@")
    if not at or len(address.encode("utf-8")) > ADDRESS_MAX or address != clean_text(address, ADDRESS_MAX):
        return False
    if not (_PLAIN_LOCAL.fullmatch(local) if local.isascii() else _INTL_LOCAL.fullmatch(local)):
        return False
    ascii_domain = idna_domain(domain)
    return ascii_domain is not None and is_plain_address(f"x@{ascii_domain}")
