"""Who is speaking: an agent of ours, or a customer (SPEC §6).

A mail counts as an agent's only when its From is a configured agent AND it carries a valid
token issued to that agent, or it passes sender authentication: a DKIM signature that
verifies for the From domain, or an Authentication-Results header from a trusted
authserv-id with dkim=pass or dmarc=pass. Anything else is a customer's mail, whose
command lines are plain text: a From header costs nothing to forge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import dkim
import dns.resolver

from maild.config import AgentConfig, Config
from maild.ingest.parse import InboundMessage
from maild.rules.loops import authentication_results
from maild.threading.tokens import ReplyToken, agent_key

TxtLookup = Callable[..., bytes | None]


@dataclass(frozen=True)
class Speaker:
    agent: AgentConfig | None
    reason: str  # why: "token", "dkim", "authentication-results", or why not

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


DKIM_DOMAIN_RE = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.I)


def dkim_verifies_for(raw: bytes, domain: str, lookup: TxtLookup) -> bool:
    """True when a DKIM signature whose d= is the From domain (or a parent of it) verifies."""
    d = dkim.DKIM(raw)
    signatures = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    for idx, value in enumerate(signatures):
        m = DKIM_DOMAIN_RE.search(value.replace(b"\r\n", b""))
        signer = m.group(1).decode(errors="replace").lower().rstrip(".") if m else ""
        if not signer or not (domain == signer or domain.endswith("." + signer)):
            continue
        try:
            if d.verify(idx=idx, dnsfunc=lookup):
                return True
        except dkim.DKIMException:
            continue
    return False


def identify_speaker(msg: InboundMessage, token: ReplyToken | None, config: Config,
                     lookup: TxtLookup) -> Speaker:
    sender = msg.sender.address if msg.sender else ""
    agent = config.agent(sender) if sender else None
    if agent is None:
        return Speaker(None, "not a configured agent")
    if token is not None and token.agent_key is not None:
        if token.agent_key == agent_key(agent.email):
            return Speaker(agent, "token")
        return Speaker(None, "token issued to another agent")
    auth = authentication_results(msg, config.auth.trusted_authserv_ids)
    if auth.get("dkim") == "pass" or auth.get("dmarc") == "pass":
        return Speaker(agent, "authentication-results")
    if msg.header("DKIM-Signature") and dkim_verifies_for(msg.raw_bytes(), sender.rpartition("@")[2], lookup):
        return Speaker(agent, "dkim")
    if token is not None:
        return Speaker(None, "customer token, no sender authentication")
    return Speaker(None, "no agent token and no sender authentication")
