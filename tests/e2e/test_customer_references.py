"""Mail to the customer side never names internal notes (SPEC §4, issue 18 point 11): over SMTP, a
customer opens a case, agents write notes and answer from their mail clients, a note resolves the
case; every mail that reached the customer side threads only on mails the customer side saw, and
names no agent's address in any header."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail, token_of, wait_count
from tests.support.sink import Caught, Sink

AGENTS = ("alice@example.com", "bob@example.com", "carol@example.com")
CUSTOMERS = ("jane@acme.test", "tom@acme.test")
MSGID_RE = re.compile(r"<([^<>\s]+)>")


def answering(msgid: str) -> dict[str, str]:
    """The headers of a client's reply to `msgid`."""
    return {"In-Reply-To": f"<{msgid}>", "References": f"<{msgid}>"}


def named_ids(c: Caught) -> set[str]:
    return {m for h in ("In-Reply-To", "References") for m in MSGID_RE.findall(str(c.message[h] or ""))}


def own_id(c: Caught) -> str:
    return MSGID_RE.search(str(c.message["Message-ID"])).group(1)


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    yield d
    d.stop()


def test_customer_mail_threads_only_on_what_the_customer_side_saw(desk: Daemon, sink: Sink) -> None:
    opening = f"{uuid.uuid4().hex}@acme.test"
    desk.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "VPN drops every hour",
                   "My VPN drops every hour.", msgid=opening, cc="Tom <tom@acme.test>"),
              "jane@acme.test", ["support@example.com"])
    ack = wait_count(sink, "jane@acme.test", 1)[0]
    n = int(re.search(r"\[#(\d+)\]", str(ack.message["Subject"])).group(1))
    alice = token_of(wait_count(sink, "alice@example.com", 1)[0])
    bob = token_of(wait_count(sink, "bob@example.com", 1)[0])
    subject = f"Re: [#{n}] VPN drops every hour"

    agent_mails = {f"{uuid.uuid4().hex}@example.com" for _ in range(4)}
    follow, note, answer, resolve = sorted(agent_mails)
    desk.send(mail("Bob Agent <bob@example.com>", bob, subject, "/follow", msgid=follow), "bob@example.com", [bob])
    desk.send(mail("Alice Agent <alice@example.com>", alice, subject,
                   "#note\nJane is on the legacy plan, do not offer the upgrade.", msgid=note),
              "alice@example.com", [alice])
    wait_count(sink, "bob@example.com", 2)  # bob follows: he hears of the note
    desk.send(mail("Alice Agent <alice@example.com>", alice, subject,
                   "Hi Jane,\nplease update the client to 5.2.\nAlice", msgid=answer, headers=answering(note)),
              "alice@example.com", [alice])
    wait_count(sink, "jane@acme.test", 2)
    desk.send(mail("Alice Agent <alice@example.com>", alice, subject, "#note\n/stage resolved\nFixed by 5.2.",
                   msgid=resolve, headers=answering(answer)),
              "alice@example.com", [alice])
    wait_count(sink, "jane@acme.test", 3)  # resolved is told to the customer side (SPEC §10)
    time.sleep(1.0)  # the outbox drains: every mail of the case is at the sink
    assert desk.case(n)["stage"] == "resolved"

    to_customers = [c for c in sink.caught if set(r.lower() for r in c.rcpt_tos) & set(CUSTOMERS)]
    to_agents = [c for c in sink.caught if set(r.lower() for r in c.rcpt_tos) & set(AGENTS)]
    assert len(to_customers) == 6 and len(to_agents) >= 4  # ack, answer, resolved: to Jane and to Tom
    assert not set(c.rcpt_tos[0] for c in to_customers) & set(AGENTS)
    secret = agent_mails | {own_id(c) for c in to_agents}
    for c in to_customers:
        assert named_ids(c) & secret == set(), (c.rcpt_tos, c.message["In-Reply-To"], c.message["References"])
        headers = " ".join(f"{k}: {v}" for k, v in c.message.items()).lower()
        assert not [a for a in AGENTS if a in headers], headers
    # they still thread: each names the customer's opening mail, and the later ones what came before
    customer_side = {opening} | {own_id(c) for c in to_customers}
    for c in to_customers:
        assert opening in named_ids(c) and named_ids(c) <= customer_side
    resolved = [c for c in to_customers if "resolved" in str(c.message.get_body(("plain",)).get_content())]
    assert resolved and all(str(c.message["In-Reply-To"]).strip("<>") in customer_side for c in resolved)
