"""Agents working from their mail client, end to end over real sockets (SPEC §6)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.dns_server import TxtServer
from tests.support.mails import mail, text_of, token_of, wait_count
from tests.support.sink import Sink

SELECTOR = "mail2026"


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    """A test signing key and its DNS TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@pytest.fixture
def dns(dkim_key: tuple[bytes, str]) -> Iterator[TxtServer]:
    server = TxtServer({f"{SELECTOR}._domainkey.example.com": dkim_key[1]})
    yield server
    server.stop()


@pytest.fixture
def desk(database: Database, sink: Sink, dns: TxtServer, tmp_path: Path) -> Iterator[Daemon]:
    extra = (f'\n[policy]\nclose_requires_manager = true\n\n[auth]\ndns_servers = ["127.0.0.1:{dns.port}"]\n'
             'trusted_authserv_ids = ["mx.example.com"]\n')
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def settle(desk: Daemon) -> None:
    """Lets the outbox drain, so "nothing more was sent" can be asserted."""
    time.sleep(1.0)


def open_case(desk: Daemon, sink: Sink) -> tuple[int, str, str, str]:
    """A customer mail; returns the case number, the customer's token and Alice's and Bob's."""
    desk.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "VPN drops every hour",
                   "Hi,\nmy VPN drops every hour since Monday.\nJane", msgid="v1@acme.test"),
              "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    (to_alice,) = wait_count(sink, "alice@example.com", 1)
    (to_bob,) = wait_count(sink, "bob@example.com", 1)
    n = int(re.search(r"\[#(\d+)\]", ack.message["Subject"]).group(1))
    return n, token_of(ack), token_of(to_alice), token_of(to_bob)


def test_team_hears_of_new_case_with_personal_tokens(desk: Daemon, sink: Sink) -> None:
    n, customer_token, alice, bob = open_case(desk, sink)
    assert len({customer_token, alice, bob}) == 3
    (to_alice,) = sink.to("alice@example.com")
    assert "my VPN drops every hour since Monday." in text_of(to_alice)
    assert f"[#{n}]" in to_alice.message["Subject"]
    assert "Jane Customer" in str(to_alice.message["From"])
    assert to_alice.message["Auto-Submitted"] == "auto-generated"
    assert sink.to("carol@example.com") == []  # billing's agent


def test_note_stays_internal_and_public_reply_reaches_customer_once(desk: Daemon, sink: Sink) -> None:
    n, _, alice, _ = open_case(desk, sink)
    desk.send(mail("Alice Agent <alice@example.com>", alice, f"Re: [#{n}] VPN drops every hour",
                   "#note\nChecked the concentrator logs: lease renewal fails.\n\n"
                   "On Fri, 20 Nov 2026 at 10:00, Jane Customer <jane@acme.test> wrote:\n> my VPN drops"),
              "alice@example.com", [alice])
    settle(desk)
    posts = desk.case(n)["posts"]
    assert posts[-1]["visibility"] == "internal" and posts[-1]["author"] == "alice@example.com"
    assert posts[-1]["body"] == "Checked the concentrator logs: lease renewal fails."
    assert len(sink.to("jane@acme.test")) == 1  # only the acknowledgement

    desk.send(mail("Alice Agent <alice@example.com>", alice, f"RE: [#{n}] VPN drops every hour",
                   "/stage pending\nHi Jane,\n\nplease update the client to 5.2.\n\nAlice\n\n"
                   "-----Original Message-----\nFrom: Jane Customer <jane@acme.test>\n"
                   "Sent: Friday, November 20, 2026 10:00 AM\nTo: support@example.com\n"
                   "Subject: VPN drops every hour\n\nHi,\nmy VPN drops every hour since Monday."),
              "alice@example.com", [alice])
    replies = wait_count(sink, "jane@acme.test", 2)
    settle(desk)
    assert len(sink.to("jane@acme.test")) == 2  # one mail for the text and the stage change together
    reply = replies[1]
    body = text_of(reply)
    assert "please update the client to 5.2." in body and "Stage: new → pending" in body
    assert "/stage" not in body and "Original Message" not in body and "lease renewal" not in body
    headers = " ".join(str(reply.message[h] or "") for h in ("From", "Reply-To", "Sender"))
    assert "alice@example.com" not in headers and "Alice Agent" in str(reply.message["From"])
    assert "alice@example.com" not in reply.raw.decode(errors="replace")
    assert reply.message["Auto-Submitted"] is None  # a person's answer
    assert reply.message["In-Reply-To"] == "<v1@acme.test>"
    case = desk.case(n)
    assert case["stage"] == "pending"
    assert {"field": "stage", "old": "new", "new": "pending", "actor": "alice@example.com"}.items() <= \
        case["history"][-1].items()
    assert case["posts"][-1]["visibility"] == "public" and "/stage" not in case["posts"][-1]["body"]


def test_reply_to_a_note_notification_stays_internal(desk: Daemon, sink: Sink) -> None:
    n, _, alice, bob = open_case(desk, sink)
    desk.send(mail("bob@example.com", bob, f"Re: [#{n}]", "/follow"), "bob@example.com", [bob])
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "#note\nBob, can you look at the logs?"),
              "alice@example.com", [alice])
    note_mails = [c for c in wait_count(sink, "bob@example.com", 2) if "Note:" in str(c.message["Subject"])]
    (note_mail,) = note_mails
    assert "can you look at the logs?" in text_of(note_mail)
    bob_note_token = token_of(note_mail)
    assert bob_note_token != bob
    desk.send(mail("bob@example.com", bob_note_token, f"Re: [#{n}] Note", "Yes, the lease times out."),
              "bob@example.com", [bob_note_token])
    settle(desk)
    posts = desk.case(n)["posts"]
    assert posts[-1]["body"] == "Yes, the lease times out." and posts[-1]["visibility"] == "internal"
    assert len(sink.to("jane@acme.test")) == 1
    # #public forces a public answer even from a note's thread
    desk.send(mail("bob@example.com", bob_note_token, f"Re: [#{n}] Note", "#public\nJane, fixed."),
              "bob@example.com", [bob_note_token])
    assert len(wait_count(sink, "jane@acme.test", 2)) == 2


def test_unauthenticated_or_borrowed_agent_mail_is_held_for_the_real_agent(desk: Daemon, sink: Sink) -> None:
    """SPEC §6: neither joins the case; each From's real agent gets one notice with the text."""
    n, _, alice, _ = open_case(desk, sink)
    alice_before, bob_before = len(sink.to("alice@example.com")), len(sink.to("bob@example.com"))
    desk.send(mail("Alice Agent <alice@example.com>", "support@example.com", f"[#{n}] VPN",
                   "#note\n/stage closed\nspoofed note"), "alice@example.com", ["support@example.com"])
    desk.send(mail("Bob Agent <bob@example.com>", alice, f"Re: [#{n}] VPN", "#note\n/stage closed\nborrowed"),
              "bob@example.com", [alice])
    to_alice = wait_count(sink, "alice@example.com", alice_before + 1)[alice_before:]
    to_bob = wait_count(sink, "bob@example.com", bob_before + 1)[bob_before:]
    settle(desk)
    case = desk.case(n)
    assert case["stage"] == "new"
    assert not [p for p in case["posts"] if "spoofed note" in p["body"] or "borrowed" in p["body"]]
    assert len(to_alice) == 1 and "spoofed note" in text_of(to_alice[0])
    assert len(to_bob) == 1 and "borrowed" in text_of(to_bob[0])
    assert len(sink.to("jane@acme.test")) == 1  # the customer heard nothing of either


def test_commands_are_all_or_nothing_and_errors_are_mailed_back(desk: Daemon, sink: Sink) -> None:
    n, _, alice, bob = open_case(desk, sink)
    posts_before = len(desk.case(n)["posts"])
    desk.send(mail("bob@example.com", bob, f"Re: [#{n}]", "/close works now"), "bob@example.com", [bob])
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/frobnicate now\n/stage open\n/priority extreme\nText"),
              "alice@example.com", [alice])
    bob_error = [c for c in wait_count(sink, "bob@example.com", 2) if "Not applied" in str(c.message["Subject"])]
    alice_error = [c for c in wait_count(sink, "alice@example.com", 2) if "Not applied" in str(c.message["Subject"])]
    assert bob_error and "only managers may close" in text_of(bob_error[0])
    text = text_of(alice_error[0])
    assert "/frobnicate" in text and "/priority extreme" in text and "line 1" in text and "line 3" in text
    case = desk.case(n)
    assert case["stage"] == "new" and case["priority"] == "normal" and len(case["posts"]) == posts_before

    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/tag +vpn +vip\n/priority high\n/assign bob"),
              "alice@example.com", [alice])
    settle(desk)
    case = desk.case(n)
    assert len(case["posts"]) == posts_before  # commands only: no post
    assert set(case["tags"]) == {"vpn", "vip"} and case["priority"] == "high"
    assert case["assignee"] == "bob@example.com" and "bob@example.com" in case["followers"]
    assigned = [c for c in sink.to("bob@example.com") if "Assignee" in text_of(c)]
    assert assigned, [text_of(c) for c in sink.to("bob@example.com")]
    assert len(sink.to("jane@acme.test")) == 1  # tags and priority are not the customer's business

    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/close fixed by client 5.2"),
              "alice@example.com", [alice])
    settle(desk)
    case = desk.case(n)
    assert case["stage"] == "closed" and case["closed_reason"] == "fixed by client 5.2"
    closed = wait_count(sink, "jane@acme.test", 2)
    assert len(closed) == 2 and "closed" in text_of(closed[1])


def test_forward_sends_public_posts_but_notes_only_when_asked(desk: Daemon, sink: Sink) -> None:
    n, _, alice, _ = open_case(desk, sink)
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "#note\nsecret internal remark"),
              "alice@example.com", [alice])
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/forward vendor@partner.test"),
              "alice@example.com", [alice])
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/forward carol@example.com notes"),
              "alice@example.com", [alice])
    (to_vendor,) = wait_count(sink, "vendor@partner.test", 1)
    assert "my VPN drops every hour" in text_of(to_vendor) and "secret internal remark" not in text_of(to_vendor)
    (to_carol,) = wait_count(sink, "carol@example.com", 1)
    assert "secret internal remark" in text_of(to_carol)


def test_dkim_signed_agent_mail_counts_without_a_token(desk: Daemon, sink: Sink, dns: TxtServer,
                                                       dkim_key: tuple[bytes, str]) -> None:
    n, _, _, _ = open_case(desk, sink)
    raw = mail("Alice Agent <alice@example.com>", "support@example.com", f"Re: [#{n}] VPN",
               "#note\n/priority urgent\nSigned by our own mail server.")
    signed = dkim.sign(raw, SELECTOR.encode(), b"example.com", dkim_key[0],
                       include_headers=[b"from", b"to", b"subject", b"message-id", b"date"]) + raw
    desk.send(signed, "alice@example.com", ["support@example.com"])
    settle(desk)
    case = desk.case(n)
    assert case["priority"] == "urgent"
    assert case["posts"][-1]["visibility"] == "internal"
    assert f"{SELECTOR}._domainkey.example.com" in dns.queries
    # the same signature on altered mail does not verify: a customer message, commands as text
    tampered = signed.replace(b"Signed by our own", b"Forged by some")
    desk.send(tampered.replace(b"urgent", b"low"), "alice@example.com", ["support@example.com"])
    settle(desk)
    assert desk.case(n)["priority"] == "urgent"


def test_trusted_authentication_results_count_untrusted_do_not(desk: Daemon, sink: Sink) -> None:
    n, _, _, _ = open_case(desk, sink)
    untrusted = "mx.evil.test; dkim=pass header.d=example.com; dmarc=pass"
    desk.send(mail("alice@example.com", "support@example.com", f"Re: [#{n}]", "/priority low\nuntrusted",
                   headers={"Authentication-Results": untrusted}), "alice@example.com", ["support@example.com"])
    settle(desk)
    assert desk.case(n)["priority"] == "normal"
    trusted = "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com"
    desk.send(mail("alice@example.com", "support@example.com", f"Re: [#{n}]", "/priority low\ntrusted",
                   headers={"Authentication-Results": trusted}), "alice@example.com", ["support@example.com"])
    settle(desk)
    assert desk.case(n)["priority"] == "low"


def test_inspect_says_what_would_happen_and_stores_nothing(desk: Daemon, sink: Sink, tmp_path: Path) -> None:
    n, _, alice, _ = open_case(desk, sink)
    files = []
    for i, raw in enumerate([
        mail("alice@example.com", alice, f"Re: [#{n}]", "#note\n/stage pending\nLooks like DHCP.\n\n"
             "On Fri, 20 Nov 2026 at 10:00, Jane <jane@acme.test> wrote:\n> my VPN"),
        mail("bob@example.com", alice, f"Re: [#{n}]", "/stage closed"),
        mail("new@other.test", "support@example.com", "Hello", "A new question"),
        b"not a mail at all\r\n",
    ]):
        path = tmp_path / f"in{i}.eml"
        path.write_bytes(raw)
        files.append(str(path))
    before = (desk.case(n), len(desk.cases()))
    out = desk.cli("inspect", *files, "--json").stdout.splitlines()
    results = [json.loads(line) for line in out]
    assert [r["file"] for r in results] == files
    note, borrowed, new, broken = results
    assert note["is_agent"] and note["agent_reason"] == "token" and note["visibility"] == "internal"
    assert note["reply_text"] == "Looks like DHCP." and note["commands"] == ["/stage pending"]
    assert note["case"] == n and note["match"] == "token" and note["classification"] == "normal"
    assert not borrowed["is_agent"] and borrowed["action"] == "held" and borrowed["case"] is None
    assert borrowed["agent_reason"] == "held: unauthenticated agent address (token issued to another agent)"
    assert new["case"] is None and new["match"] == "new"
    assert "error" in broken
    settle(desk)
    assert (desk.case(n), len(desk.cases())) == before  # nothing stored
