"""Header injection, end to end over SMTP (issue 18, SPEC §11): a display name or subject that
decodes to CR/LF, control characters or a megabyte never reaches a header of a mail maild sends,
neither the acknowledgement nor the agents' notifications, nor later mail to the same contact."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail, wait_count
from tests.support.sink import Caught, Sink

SUPPORT = "support@example.com"
TOKEN_ADDRESS = re.compile(r"support\+[a-z0-9]+@example\.com")
# What an outgoing maild mail carries: anything else in a mail at the sink was injected.
WRITTEN = {"from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to", "references", "auto-submitted",
           "x-auto-response-suppress", "precedence", "mime-version", "content-type"}

# The finding of issue 18: the name decodes to CR/LF, a Reply-To header and a body of its own.
INJECTING_FROM = ("=?utf-8?q?Support=0D=0AReply-To=3A_mallory=40evil.test=0D=0A=0D=0AYour_account_is_closed?="
                  " <eve@evil.test>")
INJECTING_FROM_NAME = "Support Reply-To: mallory@evil.test Your account is closed"
INJECTING_CC = "=?utf-8?q?Bob=0D=0ABcc=3A_all=40evil.test=0D=0AX-Injected=3A_yes?= <victim@acme.test>"
INJECTING_CC_NAME = "Bob Bcc: all@evil.test X-Injected: yes"
CONTROLS = "".join(map(chr, [*range(0x00, 0x20), *range(0x7F, 0xA0)]))


def encoded_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", max_bytes=8_000_000)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def case_number(c: Caught) -> int:
    return int(re.search(r"\[#(\d+)\]", str(c.message["Subject"])).group(1))


def assert_clean(c: Caught, to: str, to_name: str, from_name: str | None = None) -> str:
    """One From, one To, one Reply-To (a maild token address), no header maild did not write,
    lines of CRLF within 998 octets, a Subject within 1,000 characters; returns the text part."""
    raw_head = c.raw.split(b"\r\n\r\n", 1)[0]
    for line in c.raw.split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line and len(line) <= 998, line[:120]
    msg = c.message
    names = [k.lower() for k in msg]
    assert set(names) <= WRITTEN, set(names) - WRITTEN
    for field in ("from", "to", "reply-to", "subject"):
        assert names.count(field) == 1, (field, raw_head[:2000])
    (sender,) = msg["From"].addresses
    assert sender.addr_spec == "support@example.com"
    if from_name is not None:
        assert sender.display_name == from_name
    (recipient,) = msg["To"].addresses
    assert (recipient.addr_spec, recipient.display_name) == (to, to_name)
    (reply_to,) = msg["Reply-To"].addresses
    assert TOKEN_ADDRESS.fullmatch(reply_to.addr_spec), reply_to
    assert b"mallory@evil.test>" not in raw_head and b"all@evil.test>" not in raw_head
    assert len(str(msg["Subject"])) <= 1000
    text = msg.get_body(("plain",)).get_content()
    assert msg.get_body(("html",)) is not None
    return text


def test_an_injecting_display_name_reaches_no_header_of_any_mail(desk: Daemon, sink: Sink) -> None:
    desk.send(mail(INJECTING_FROM, SUPPORT, "Printer on fire", "The printer on floor 3 is on fire.\nEve",
                   cc=INJECTING_CC),
              "eve@evil.test", ["support@example.com"])
    (ack,) = wait_count(sink, "eve@evil.test", 1)
    (cc_ack,) = wait_count(sink, "victim@acme.test", 1)
    n = case_number(ack)
    assert "we have received your message" in assert_clean(ack, "eve@evil.test", INJECTING_FROM_NAME, "Example Support")
    assert f"case #{n}" in assert_clean(cc_ack, "victim@acme.test", INJECTING_CC_NAME, "Example Support")
    for agent, name in (("alice@example.com", "Alice Agent"), ("bob@example.com", "Bob Agent")):
        (note,) = wait_count(sink, agent, 1)
        text = assert_clean(note, agent, name, f"{INJECTING_FROM_NAME} via Example Support")
        assert "The printer on floor 3 is on fire." in text and f"New case #{n} from {INJECTING_FROM_NAME}" in text
    case = desk.case(n)
    assert case["requester"]["name"] == INJECTING_FROM_NAME and case["subject"] == "Printer on fire"
    assert not sink.to("mallory@evil.test") and not sink.to("all@evil.test")

    # The agent's public reply reaches both contacts named as first seen, and nothing else.
    token = TOKEN_ADDRESS.search(str(wait_count(sink, "alice@example.com", 1)[0].message["Reply-To"])).group(0)
    desk.send(mail("Alice Agent <alice@example.com>", token, f"Re: [#{n}] Printer on fire", "We are on our way."),
              "alice@example.com", [token])
    reply = wait_count(sink, "eve@evil.test", 2)[-1]
    assert "We are on our way." in assert_clean(reply, "eve@evil.test", INJECTING_FROM_NAME)
    cc_reply = wait_count(sink, "victim@acme.test", 2)[-1]
    assert "We are on our way." in assert_clean(cc_reply, "victim@acme.test", INJECTING_CC_NAME)

    # The Cc'd contact writes on its own, without a name: its name is still the clean one.
    desk.send(mail("victim@acme.test", SUPPORT, "My own question", "Where is my invoice?"), "victim@acme.test",
              ["support@example.com"])
    own_ack = wait_count(sink, "victim@acme.test", 3)[-1]
    assert case_number(own_ack) != n
    assert "we have received your message" in assert_clean(own_ack, "victim@acme.test", INJECTING_CC_NAME)
    assert not sink.to("mallory@evil.test") and not sink.to("all@evil.test")


def test_a_name_of_every_control_character_is_cleaned(desk: Daemon, sink: Sink) -> None:
    name = f"Eve{CONTROLS}Mallory"
    desk.send(mail(f"{encoded_word(name)} <eve@evil.test>", SUPPORT, encoded_word(f"Help{CONTROLS}me"),
                   "Body text here."), "eve@evil.test", ["support@example.com"])
    (ack,) = wait_count(sink, "eve@evil.test", 1)
    n = case_number(ack)
    assert_clean(ack, "eve@evil.test", "Eve Mallory", "Example Support")
    assert str(ack.message["Subject"]) == f"[#{n}] Help me"
    (note,) = wait_count(sink, "alice@example.com", 1)
    text = assert_clean(note, "alice@example.com", "Alice Agent", "Eve Mallory via Example Support")
    assert "Body text here." in text
    case = desk.case(n)
    assert (case["requester"]["name"], case["subject"]) == ("Eve Mallory", "Help me")


def test_a_megabyte_subject_is_cut_to_1000_characters(desk: Daemon, sink: Sink) -> None:
    words = ["Printer", "broken"] * 75_000  # about 1 MB, folded as a client folds it
    folded = "\r\n ".join(" ".join(words[i:i + 10]) for i in range(0, len(words), 10))
    desk.send(mail("Jane Doe <jane@acme.test>", SUPPORT, folded, "The printer is broken."), "jane@acme.test",
              ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1, timeout=60)
    n = case_number(ack)
    expected = " ".join(words)[:1000].rstrip()
    case = desk.case(n)
    assert case["subject"] == expected and len(case["subject"]) == 1000
    assert_clean(ack, "jane@acme.test", "Jane Doe", "Example Support")
    subject = str(ack.message["Subject"])
    assert subject.startswith(f"[#{n}] Printer broken Printer broken")
    assert expected.startswith(subject[len(f"[#{n}] "):])
    assert len(ack.raw) < 20_000  # the acknowledgement does not carry the megabyte anywhere else
    for agent in ("alice@example.com", "bob@example.com"):
        (note,) = wait_count(sink, agent, 1)
        assert "The printer is broken." in assert_clean(note, agent, agent.split("@")[0].title() + " Agent")
        assert len(note.raw) < 20_000
