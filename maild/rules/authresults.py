"""What the receiving MX says about the sender: `Authentication-Results` read as RFC 8601 (SPEC §6).

Anyone can write an `Authentication-Results` header into a mail, with any authserv-id. Only
the receiving MX's own header is worth anything, and it adds it above whatever the sender
wrote, so the topmost header of a trusted authserv-id is the only one believed. It is parsed
with a real RFC 8601 parser (`authres`), so text in comments and property values
(`smtp.mailfrom=dmarc=pass@evil.test`) is never taken for a result, and a pass counts only
when it vouches for the From domain: a valid signature of the attacker's own domain proves
nothing about alice@example.com.

Header values are read from the raw mail, not from `InboundMessage.headers`: those are
RFC 2047-decoded, and an encoded word in a property value the sender chose (an envelope
address) would decode into `; dkim=pass ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import authres

from maild.domain.message import InboundMessage
from maild.headers import idna_domain

HEADER = "authentication-results"
FAILED = ("fail", "permerror")  # the results that stop an automatic answer (SPEC §11)
HEADER_SECTION_LIMIT = 1 << 20  # a header section larger than this is not read further from disk


@dataclass(frozen=True)
class SenderAuthentication:
    """The believed header's verdict on the From domain."""

    passed: tuple[str, ...]  # methods that passed aligned with the From domain: "dkim", "dmarc"
    failed: tuple[tuple[str, str], ...]  # (method, result) of dmarc then spf when fail or permerror
    reason: str  # for a person: which header was believed, and why it does or does not count
    authserv_id: str | None = None  # of the believed header; None when none was believed

    @property
    def authenticated(self) -> bool:
        return bool(self.passed)


def normalize_domain(domain: str) -> str:
    """Lowercase, no trailing dot, IDNA A-labels: the form DNS and A-R headers compare in."""
    domain = domain.strip().strip(".").lower()
    return idna_domain(domain) or domain


def dkim_aligned(signer: str, from_domain: str) -> bool:
    """A signing domain speaks for the From domain when it is that domain or a parent of it,
    and not a top-level domain (d=com would vouch for every .com address)."""
    signer, from_domain = normalize_domain(signer), normalize_domain(from_domain)
    if "." not in signer or not from_domain:
        return False
    return from_domain == signer or from_domain.endswith("." + signer)


# A header line as the stdlib parser (which read From) sees one; the first other line ends the section.
FIELD_RE = re.compile(rb"^([\x21-\x39\x3b-\x7e]*):")


def _text(lines: list[bytes]) -> str:
    return b"\r\n".join(lines).decode("utf-8", errors="replace")


def header_values(raw_header_section: bytes, name: str) -> list[str]:
    """The raw values of header `name`, top to bottom, folding kept (CRLF + WSP)."""
    wanted = name.lower().encode()
    values: list[str] = []
    current: list[bytes] | None = None
    for n, line in enumerate(re.split(rb"\r?\n", raw_header_section)):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(_text(current))
            current = None
        if n == 0 and line.startswith(b"From "):
            continue  # an mbox separator
        field = FIELD_RE.match(line)
        if field is None:
            break  # the blank line, or a line that is no header: the header section ends here
        if field.group(1).lower() == wanted:
            current = [line[field.end():].lstrip(b" \t")]
    if current is not None:
        values.append(_text(current))
    return values


def raw_header_section(msg: InboundMessage) -> bytes:
    """The mail's header section as it came, without reading a large body from disk."""
    return msg.raw_mail.header_section(HEADER_SECTION_LIMIT)


COMMENT_RE = re.compile(r"^\s*(\((?:[^()\\]|\\.)*\)\s*)*")


def _lenient_authserv_id(value: str) -> str:
    """The authserv-id of a header the parser refused: its first token after any comments."""
    head = COMMENT_RE.sub("", value, count=1)
    token = re.split(r"[\s;()]", head.strip(), maxsplit=1)[0]
    return token.lower()


def _shown(text: str, limit: int = 100) -> str:
    """A value the sender may have written, as the reason shows it: one line, bounded."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _props(result: authres.core.AuthenticationResult) -> dict[str, str]:
    return {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}


def evaluate(values: list[str], from_domain: str, trusted_ids: list[str]) -> SenderAuthentication:
    """The verdict of the topmost header among `values` (top to bottom) whose authserv-id is trusted."""
    trusted = {t.strip().lower() for t in trusted_ids if t.strip()}
    from_domain = normalize_domain(from_domain)
    untrusted: list[str] = []
    for value in values:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
            authserv_id = (header.authserv_id or "").lower()
        except Exception as e:  # whatever the parser trips on, the header is not believed
            authserv_id = _lenient_authserv_id(value)
            if authserv_id in trusted:
                return SenderAuthentication((), (), f"authentication-results from {authserv_id} cannot be "
                                            f"parsed ({_shown(str(e))}): not believed", authserv_id)
            untrusted.append(authserv_id)
            continue
        if authserv_id in trusted:
            return _verdict(header, authserv_id, from_domain)
        untrusted.append(authserv_id)
    seen = ", ".join(dict.fromkeys(_shown(i) or "(no authserv-id)" for i in untrusted[:5]))
    return SenderAuthentication((), (), "no trusted Authentication-Results" + (f" (untrusted: {seen})" if seen else ""))


def _verdict(header: authres.AuthenticationResultsHeader, authserv_id: str,
             from_domain: str) -> SenderAuthentication:
    passed: list[str] = []
    evidence: list[str] = []
    unaligned: list[str] = []
    first: dict[str, str] = {}
    for result in header.results:
        method, outcome = str(result.method).lower(), str(result.result).lower()
        first.setdefault(method, outcome)
        if outcome != "pass" or method not in ("dkim", "dmarc"):
            continue
        props = _props(result)
        if method == "dkim":
            signer = props.get("header.d", "")
            if dkim_aligned(signer, from_domain):
                passed.append("dkim")
                evidence.append(f"dkim=pass header.d={normalize_domain(signer)}")
            else:
                unaligned.append(f"header.d={_shown(signer) or '(none)'}")
        else:
            domain = props.get("header.from", "")
            if from_domain and normalize_domain(domain) == from_domain:
                passed.append("dmarc")
                evidence.append(f"dmarc=pass header.from={normalize_domain(domain)}")
            else:
                unaligned.append(f"header.from={_shown(domain) or '(none)'}")
    failed = tuple((m, first[m]) for m in ("dmarc", "spf") if first.get(m) in FAILED)
    if passed:
        reason = f"authentication-results: {', '.join(evidence)} by {authserv_id}"
    elif unaligned:
        reason = (f"authentication-results from {authserv_id} not aligned with {from_domain or 'no From domain'}: "
                  + ", ".join(unaligned))
    else:
        said = _shown(", ".join(f"{m}={r}" for m, r in first.items()), 200) or "none"
        reason = f"authentication-results from {authserv_id}: no dkim or dmarc pass ({said})"
    return SenderAuthentication(tuple(dict.fromkeys(passed)), failed, reason, authserv_id)


def sender_authentication(msg: InboundMessage, trusted_ids: list[str]) -> SenderAuthentication:
    """What the trusted MX says about this mail's From domain."""
    if not trusted_ids:
        return SenderAuthentication((), (), "no trusted Authentication-Results (no [auth] trusted_authserv_ids)")
    from_domain = msg.sender.address.rpartition("@")[2] if msg.sender else ""
    if HEADER.lower() not in msg.headers:  # most mail: no need to read the raw header section again
        return evaluate([], from_domain, trusted_ids)
    return evaluate(header_values(raw_header_section(msg), HEADER), from_domain, trusted_ids)
