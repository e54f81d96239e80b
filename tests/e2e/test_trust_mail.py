"""Trust, end to end over real sockets (SPEC §4, §6, §11): forged agents are held, strangers
bring no participants, one mail sets off no flood, forged bounces change nothing, and a
stranger's copy of a Message-ID does not swallow the real mail.

Each test does what an attacker would over SMTP and asserts what reached the sink and what
`maild case show` says, not what a function returned.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, load_eml
from tests.support.daemon import Daemon
from tests.support.mails import mail, text_of, token_of, wait_count, wait_until
from tests.support.sink import Caught, Sink


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}",
                           extra='\n[auth]\ntrusted_authserv_ids = ["mx.example.com"]\n')
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def settle() -> None:
    """Lets the outbox drain, so "nothing more was sent" can be asserted."""
    time.sleep(1.5)


def open_case(desk: Daemon, sink: Sink, msgid: str = "v1@acme.test") -> tuple[int, Caught]:
    desk.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "VPN drops every hour",
                   "Hi,\nmy VPN drops every hour since Monday.\nJane", msgid=msgid),
              "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    wait_count(sink, "alice@example.com", 1)
    wait_count(sink, "bob@example.com", 1)
    return int(re.search(r"\[#(\d+)\]", ack.message["Subject"]).group(1)), ack


def participants(desk: Daemon, n: int) -> set[str]:
    return {p["email"] for p in desk.case(n)["participants"]}


def recipients_since(sink: Sink, start: int) -> list[str]:
    return [r.lower() for c in sink.caught[start:] for r in c.rcpt_tos]


# --- forged agents (SPEC §6) ----------------------------------------------------------------------

def test_forged_agent_mail_is_held_and_the_real_agent_releases_it(desk: Daemon, sink: Sink) -> None:
    n, _ = open_case(desk, sink)
    posts = len(desk.case(n)["posts"])
    cases = len(desk.cases())
    start = len(sink.caught)
    # "From: alice" without a token or authentication, aiming at the case, bringing a Cc
    desk.send(mail("Alice Agent <alice@example.com>", "support@example.com", f"Re: [#{n}] VPN drops every hour",
                   "#public\n/stage resolved\nJane, I refunded you in full.\nAlice", cc="mallory@evil.test"),
              "alice@example.com", ["support@example.com"])
    (notice,) = wait_count(sink, "alice@example.com", 2)[1:]
    settle()
    assert recipients_since(sink, start) == ["alice@example.com"]  # one notice, nothing else
    assert "I refunded you in full" in text_of(notice) and "held" in text_of(notice).lower()
    case = desk.case(n)
    assert len(case["posts"]) == posts and case["stage"] == "new" and len(desk.cases()) == cases
    assert "mallory@evil.test" not in json.dumps(case)

    # the agent presses reply: the notice quoted, nothing written -> applied as hers
    held_reply = token_of(notice)
    desk.send(mail("alice@example.com", held_reply, f"Re: {notice.message['Subject']}",
                   "On Fri, 20 Nov 2026, Example Support wrote:\n> Jane, I refunded you in full.",
                   headers={"In-Reply-To": notice.message["Message-ID"]}),
              "alice@example.com", [held_reply])
    (answer,) = wait_count(sink, "jane@acme.test", 2)[1:]
    assert "I refunded you in full" in text_of(answer)
    case = desk.case(n)
    assert case["stage"] == "resolved"
    released = [p for p in case["posts"] if "I refunded you in full" in p["body"]]
    assert len(released) == 1 and released[0]["author"] == "alice@example.com"
    assert released[0]["visibility"] == "public"
    # a second reply to the same notice does nothing more
    desk.send(mail("alice@example.com", held_reply, "Re: again", "again"), "alice@example.com", [held_reply])
    settle()
    assert len(sink.to("jane@acme.test")) == 2 and len(desk.case(n)["posts"]) == len(case["posts"])


@pytest.mark.parametrize("token_kind", ["none", "other agent's", "customer's", "forged"])
def test_agent_from_without_its_own_token_never_reaches_the_case(desk: Daemon, sink: Sink, token_kind: str) -> None:
    n, ack = open_case(desk, sink)
    to_bob = wait_count(sink, "bob@example.com", 1)[0]
    to = {"none": "support@example.com", "other agent's": token_of(to_bob), "customer's": token_of(ack),
          "forged": f"support+{n}c{'a' * 16}@example.com"}[token_kind]
    start = len(sink.caught)
    desk.send(mail("Alice Agent <alice@example.com>", to, f"Re: [#{n}] VPN drops every hour",
                   "#note\n/priority urgent\n/forward mallory@evil.test notes\nforged text"),
              "alice@example.com", [to])
    wait_count(sink, "alice@example.com", 2)
    settle()
    assert recipients_since(sink, start) == ["alice@example.com"]
    case = desk.case(n)
    assert case["priority"] == "normal" and not any("forged text" in p["body"] for p in case["posts"])
    assert sink.to("mallory@evil.test") == []


def test_forged_agent_cannot_hijack_a_case_with_its_subject_tag(desk: Daemon, sink: Sink) -> None:
    """Issue 18 §3: "From: bob" with [#N] and a Cc used to join the case, and the Cc then got the
    real agent's next public answer."""
    n, _ = open_case(desk, sink)
    desk.send(mail("Bob Agent <bob@example.com>", "support@example.com", f"[#{n}] Please copy my colleague",
                   "See cc.", cc="Mallory <mallory@evil.test>"), "bob@example.com", ["support@example.com"])
    wait_count(sink, "bob@example.com", 2)
    alice = token_of(sink.to("alice@example.com")[0])
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}] VPN", "Jane, please restart the router."),
              "alice@example.com", [alice])
    wait_count(sink, "jane@acme.test", 2)
    settle()
    assert sink.to("mallory@evil.test") == []
    assert "mallory@evil.test" not in participants(desk, n)


def test_inspect_says_why_an_agent_address_mail_is_held(desk: Daemon, sink: Sink, tmp_path: Path) -> None:
    n, _ = open_case(desk, sink)
    eml = tmp_path / "forged.eml"
    eml.write_bytes(mail("alice@example.com", "support@example.com", f"Re: [#{n}]", "/stage closed"))
    (out,) = [json.loads(line) for line in desk.cli("inspect", str(eml), "--json").stdout.splitlines()]
    assert out["is_agent"] is False and out["action"] == "held" and out["case"] is None
    assert out["agent_reason"].startswith("held: unauthenticated agent address")
    assert desk.case(n)["stage"] == "new"


# --- participants and amplification (SPEC §4, §11) --------------------------------------------------

def test_a_stranger_quoting_a_message_id_joins_but_brings_no_one(desk: Daemon, sink: Sink) -> None:
    n, _ = open_case(desk, sink, msgid="orig-1@acme.test")
    desk.send(mail("Eve Stranger <eve@stranger.test>", "support@example.com", "Re: VPN drops every hour",
                   "I have the same problem.", cc="a1@evil.test, a2@evil.test",
                   headers={"In-Reply-To": "<orig-1@acme.test>", "References": "<orig-1@acme.test>"}),
              "eve@stranger.test", ["support@example.com"])
    settle()
    case = desk.case(n)
    assert any("same problem" in p["body"] for p in case["posts"])
    assert "eve@stranger.test" in participants(desk, n)
    assert not {"a1@evil.test", "a2@evil.test"} & participants(desk, n)


def test_a_cc_list_of_100_adds_ten_participants_and_five_acknowledgements(desk: Daemon, sink: Sink) -> None:
    cc = ", ".join(f"Victim {i} <victim{i}@victims.test>" for i in range(100))
    desk.send(mail("Spammer <spammer@evil.test>", "support@example.com", "Buy now", "Cheap.", cc=cc),
              "spammer@evil.test", ["support@example.com"])
    wait_count(sink, "alice@example.com", 1)
    settle()
    (case,) = desk.cases()
    assert len(case["participants"]) == 10
    acks = [c for c in sink.caught if "victims.test" in c.rcpt_tos[0] or c.rcpt_tos[0] == "spammer@evil.test"]
    assert len(acks) == 5
    assert sink.to("spammer@evil.test")  # the requester first


# --- bounces (SPEC §11) ----------------------------------------------------------------------------

def dsn(returned_message_id: str, failed: str, *, to: str = "support@example.com") -> bytes:
    raw = load_eml("bounce-dsn-postfix.eml")
    raw = raw.replace(b"ack-1@support.example.com", returned_message_id.encode())
    raw = raw.replace(b"gone@acme.test", failed.encode()).replace(b"To: support@example.com", f"To: {to}".encode())
    return raw


def contact_state(desk: Daemon, address: str) -> str:
    return desk.cli_json("contact", "show", address)["state"]


def test_a_forged_bounce_is_quarantined_and_changes_nothing(desk: Daemon, sink: Sink, tmp_path: Path) -> None:
    open_case(desk, sink)
    desk.send(dsn("made-up@somewhere.test", "jane@acme.test"), "", ["support@example.com"])
    settle()
    assert contact_state(desk, "jane@acme.test") == "active"
    notes = [json.loads(p.read_text()) for p in (tmp_path / "data" / "quarantine").glob("*.json")]
    assert [x["reason"] for x in notes] == ["bounce of mail not sent by maild"]
    assert len(desk.cases()) == 1 and len(desk.case(1)["posts"]) == 1


def test_a_bounce_to_the_verp_address_marks_only_the_recipient_of_that_mail(desk: Daemon, sink: Sink) -> None:
    n, ack = open_case(desk, sink)
    # the DSN names someone else too: only the recipient of the bounced mail is believed
    desk.send(dsn("not-ours@elsewhere.test", "bob.customer@acme.test"), "", [ack.mail_from])
    wait_until(lambda: contact_state(desk, "jane@acme.test") == "bouncing", 10)
    notes = [p for p in desk.case(n)["posts"] if p["visibility"] == "internal"]
    assert len(notes) == 1 and "jane@acme.test" in notes[0]["body"]


def test_a_bounce_returning_our_message_id_is_believed_for_that_recipient(desk: Daemon, sink: Sink) -> None:
    _, ack = open_case(desk, sink)
    desk.send(dsn(ack.message["Message-ID"].strip("<>"), "jane@acme.test"), "", ["support@example.com"])
    wait_until(lambda: contact_state(desk, "jane@acme.test") == "bouncing", 10)
    # a forged VERP address (right shape, wrong signature) is not believed
    forged = re.sub(r"[a-z2-7]{16}@", "a" * 16 + "@", ack.mail_from)
    desk.send(mail("bob.customer@acme.test", "support@example.com", "Hello", "A new case."),
              "bob.customer@acme.test", ["support@example.com"])
    wait_count(sink, "bob.customer@acme.test", 1)
    desk.send(dsn("none@elsewhere.test", "bob.customer@acme.test"), "", [forged])
    settle()
    assert contact_state(desk, "bob.customer@acme.test") == "active"


def test_a_delayed_bounce_is_noted_and_marks_no_one(desk: Daemon, sink: Sink) -> None:
    """A DSN with Action: delayed (or a 4.x.x status) of mail maild sent: noted on the case,
    nobody marked bouncing (issue 21 §2)."""
    n, ack = open_case(desk, sink)
    raw = dsn("none@elsewhere.test", "jane@acme.test")
    raw = raw.replace(b"Action: failed\r\nStatus: 5.1.1", b"Action: delayed\r\nStatus: 4.4.1")
    raw = raw.replace(b"Subject: Undelivered Mail Returned to Sender", b"Subject: Delayed Mail (still being retried)")
    assert b"Action: delayed" in raw
    desk.send(raw, "", [ack.mail_from])
    notes = wait_until(lambda: [p for p in desk.case(n)["posts"] if p["visibility"] == "internal"], 10)
    assert len(notes) == 1 and notes[0]["body"].startswith("Delivery to jane@acme.test is delayed: ")
    assert "User unknown" in notes[0]["body"]  # the DSN's own diagnostic
    assert contact_state(desk, "jane@acme.test") == "active"


# --- Message-ID preemption (SPEC §4) ----------------------------------------------------------------

def test_a_stolen_message_id_does_not_swallow_the_real_mail(desk: Daemon, sink: Sink) -> None:
    desk.send(mail("Mallory <mallory@evil.test>", "support@example.com", "First!", "preempted",
                   msgid="future@acme.test"), "mallory@evil.test", ["support@example.com"])
    real = mail("Jane Customer <jane@acme.test>", "support@example.com", "Invoice wrong",
                "The invoice total is wrong.", msgid="future@acme.test")
    desk.send(real, "jane@acme.test", ["support@example.com"])
    desk.send(real, "jane@acme.test", ["support@example.com"])  # the MTA retries: still once
    wait_count(sink, "jane@acme.test", 1)
    settle()
    bodies = [p["body"] for c in desk.cases() for p in desk.case(c["number"])["posts"]]
    assert sum("invoice total is wrong" in b for b in bodies) == 1
    assert sum("preempted" in b for b in bodies) == 1
    assert len(sink.to("jane@acme.test")) == 1
