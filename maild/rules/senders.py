"""Who is speaking: an agent of ours, or a customer (SPEC §6).

A mail counts as an agent's only when its From is a configured agent AND it carries a valid
token issued to that agent, or it passes sender authentication: a DKIM signature that
verifies for the From domain, or the topmost Authentication-Results header of a trusted
authserv-id with a dkim or dmarc pass aligned with the From domain (`authresults`). Anything
else is a customer's mail, whose command lines are plain text: a From header costs nothing
to forge. Every verdict carries a reason a person can read (`maild inspect`, the log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import dkim
import dkim.util
import dns.resolver

from maild.config import AgentConfig, Config
from maild.domain.message import InboundMessage
from maild.rules.authresults import dkim_aligned, sender_authentication
from maild.threading.tokens import ReplyToken, agent_key

TxtLookup = Callable[..., bytes | None]


@dataclass(frozen=True)
class Speaker:
    agent: AgentConfig | None
    reason: str  # for a person: "token", the authentication that passed, or why none did

    @property
    def is_agent(self) -> bool:
        return self.agent is not None


def dns_txt_lookup(servers: list[str], timeout: float = 5.0) -> TxtLookup:
    """A TXT lookup for dkimpy; `servers` ("host" or "host:port") replace the system's."""
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:  # dnspython has one port for all servers: the first one's
        hosts_ports = [s.rpartition(":")[::2] if ":" in s else (s, "53") for s in servers]
        resolver.nameservers = [h for h, _ in hosts_ports]
        resolver.port = int(hosts_ports[0][1])
    resolver.lifetime = timeout

    def lookup(name: bytes, timeout: float = timeout) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except (dns.exception.DNSException, UnicodeError):
            return None
        for record in answer:
            return b"".join(record.strings)
        return None
    return lookup


class DkimVerdict(NamedTuple):
    verified: bool
    reason: str


def dkim_verifies_for(raw: bytes, domain: str, lookup: TxtLookup) -> DkimVerdict:
    """Whether a DKIM signature of the From domain (or a parent of it) verifies over the whole body.

    A signature of another domain proves only that that domain sent it; one with l= signs a
    prefix of the body, and whatever follows it could be anyone's. The signing domain is read
    with dkimpy's own tag parser, so the domain checked is the domain verified.
    """
    try:
        d = dkim.DKIM(raw)
    except dkim.DKIMException as e:
        return DkimVerdict(False, f"DKIM: the mail cannot be read ({e})")
    signatures = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    if not signatures:
        return DkimVerdict(False, "no DKIM signature")
    reasons: list[str] = []
    for idx, value in enumerate(signatures):
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList:
            reasons.append("DKIM signature is malformed")
            continue
        signer = tags.get(b"d", b"").decode(errors="replace").strip().lower()
        if not dkim_aligned(signer, domain):
            reasons.append(f"DKIM signature d={' '.join(signer.split())[:100] or '(none)'} is not the From domain")
            continue
        if b"l" in tags:
            reasons.append(f"DKIM signature d={signer} signs only part of the body (l=)")
            continue
        try:
            verified = d.verify(idx=idx, dnsfunc=lookup)
        except dkim.DKIMException as e:
            reasons.append(f"DKIM signature d={signer} did not verify ({e})")
            continue
        if verified and dkim_aligned((d.domain or b"").decode(errors="replace"), domain):
            return DkimVerdict(True, f"dkim: signature d={signer} verified")
        reasons.append(f"DKIM signature d={signer} did not verify")
    return DkimVerdict(False, "; ".join(dict.fromkeys(reasons)))


def identify_speaker(msg: InboundMessage, token: ReplyToken | None, config: Config,
                     lookup: TxtLookup) -> Speaker:
    """An agent only with that agent's token or sender authentication of the From domain (SPEC §6)."""
    sender = msg.sender.address if msg.sender else ""
    agent = config.agent(sender) if sender else None
    if agent is None:
        return Speaker(None, "not a configured agent")
    if token is not None and token.agent_key is not None:
        if token.agent_key == agent_key(agent.email):
            return Speaker(agent, "token")
        return Speaker(None, "token issued to another agent")
    not_agent = "customer token" if token is not None else "no agent token"
    if len(msg.headers.get("from", [])) > 1:
        # a signature covers one From; a second one above it is what a mail client shows
        return Speaker(None, f"{not_agent}; more than one From header: no sender authentication")
    auth = sender_authentication(msg, config.auth.trusted_authserv_ids)
    if auth.authenticated:
        return Speaker(agent, auth.reason)
    why = [auth.reason]
    if msg.header("DKIM-Signature"):
        dkim_verdict = dkim_verifies_for(msg.raw_bytes(), sender.rpartition("@")[2], lookup)
        if dkim_verdict.verified:
            return Speaker(agent, dkim_verdict.reason)
        why.append(dkim_verdict.reason)
    else:
        why.append("no DKIM signature")
    return Speaker(None, f"{not_agent}; " + "; ".join(why))
