"""What the desk does with an automatic reply (issue 21 §3, SPEC §11), end to end over real sockets.

An out-of-office answering the desk's mail lands on its case as an internal system note with
its own text, and nothing else happens: the stage stays (a solved case stays solved, a pending
one keeps waiting, so the SLA clocks do not move), nobody is acknowledged, nothing reaches the
customer, and agents are not notified (they see the note on the case; a notification about a
robot's mail is how two out-of-office replies start talking to each other). One that answers no
case opens none. The mails are written as Exchange and a French webmail send them.
"""

from __future__ import annotations

import quopri
import re
import time
import uuid
from collections.abc import Iterator
from email.header import Header
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail, token_of, wait_count
from tests.support.sink import Caught, Sink


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=SLA_TOML)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


# SLA clocks running, so that "an out-of-office is not the customer's answer" can be seen on them
SLA_TOML = '\n[sla.targets]\nnormal = { first_response = "4h", resolution = "2d" }\n'


def settle() -> None:
    """Lets the outbox drain, so "nothing more was sent" can be asserted."""
    time.sleep(1.5)


# --- automatic replies as real clients write them ---------------------------------------------

EXCHANGE_TEXT_DE = ("Vielen Dank für Ihre Nachricht.\n\n"
                    "Ich bin bis einschließlich 14.12.2026 nicht im Büro und habe keinen Zugriff auf meine "
                    "E-Mails. In dringenden Fällen wenden Sie sich bitte an it-service@acme.test.\n\n"
                    "Mit freundlichen Grüßen\nJane Customer")


def exchange_ooo(frm: str, to: str, subject: str, answers: str | None, text: str = EXCHANGE_TEXT_DE) -> bytes:
    """An Exchange Online out-of-office (German client): Auto-Submitted, X-Auto-Response-Suppress,
    the inbox-rules loop header, a localized "Automatische Antwort:" subject, text and HTML in
    quoted-printable Latin-1, and no quoted history."""
    address = re.search(r"[^<\s]+@[^>\s]+", frm).group(0)  # type: ignore[union-attr]
    boundary = "_000_AM0PR04MB6481E7B1C2D3OOF000000000000000AM0PR04MB6481eurp_"
    qp_text = quopri.encodestring(text.replace("\n", "\r\n").encode("latin-1")).decode()
    html = "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body>" + \
        "".join(f"<p class=\"MsoNormal\">{p}</p>" for p in text.split("\n")) + "</body></html>"
    qp_html = quopri.encodestring(html.encode("latin-1")).decode()
    head = [
        "Received: from AM0PR04MB6481.eurprd04.prod.outlook.example ([fe80::3c2a:9d11:7f0e:12ab]) by",
        " AM0PR04MB6481.eurprd04.prod.outlook.example ([fe80::3c2a:9d11:7f0e:12ab%4]) with",
        " mapi id 15.20.8207.017; Fri, 20 Nov 2026 10:00:07 +0000",
        f"From: {frm}",
        f"To: {to}",
        f"Subject: {Header(subject, 'utf-8').encode()}",
        f"Thread-Topic: {Header(subject.split(': ', 1)[1], 'utf-8').encode()}",
        "Thread-Index: AQHbQ1x2c3VwcG9ydC1leGFtcGxlLWNvbQ==",
        "Date: Fri, 20 Nov 2026 10:00:07 +0000",
        f"Message-ID: <{uuid.uuid4().hex}@AM0PR04MB6481.eurprd04.prod.outlook.example>",
        *([f"References: <{answers}>", f"In-Reply-To: <{answers}>"] if answers else []),
        "Content-Language: de-DE",
        "X-MS-Has-Attach:",
        "X-MS-TNEF-Correlator:",
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        f"X-MS-Exchange-Inbox-Rules-Loop: {address}",
        "x-ms-exchange-generated-message-source: Mailbox Rules Agent",
        "x-ms-publictraffictype: Email",
        f"Content-Type: multipart/alternative;\r\n\tboundary=\"{boundary}\"",
        "MIME-Version: 1.0",
    ]
    body = [
        f"--{boundary}", "Content-Type: text/plain; charset=\"iso-8859-1\"",
        "Content-Transfer-Encoding: quoted-printable", "", qp_text.replace("\r\n", "\n").replace("\n", "\r\n"),
        f"--{boundary}", "Content-Type: text/html; charset=\"iso-8859-1\"",
        "Content-Transfer-Encoding: quoted-printable", "", qp_html.replace("\n", "\r\n"),
        f"--{boundary}--", "",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body)).encode("ascii")


FRENCH_OOO_TEXT = ("Bonjour,\n\nJe suis absente du bureau jusqu'au lundi 14 décembre inclus, sans accès à "
                   "ma messagerie.\nPour toute urgence, merci de contacter Paul au 01 23 45 67 89.\n\n"
                   "Cordialement,\nJane")


def french_webmail_ooo(frm: str, to: str, subject: str) -> bytes:
    """A webmail's vacation message that carries no automatic-reply header at all: only its
    localized subject ("Réponse automatique : …") says what it is; it quotes the mail it answers,
    and names no Message-ID it answers (only the case tag in the subject threads it)."""
    text = (FRENCH_OOO_TEXT + "\n\nLe ven. 20 nov. 2026 à 10:00, Example Support <support@example.com> a écrit :\n"
            "> Hello Jane,\n> we received your request and will answer soon.\n")
    head = [
        f"From: {frm}", f"To: {to}", f"Subject: {Header(subject, 'utf-8').encode()}",
        "Date: Fri, 20 Nov 2026 11:02:13 +0100", f"Message-ID: <{uuid.uuid4().hex}@webmail.acme.test>",
        "X-Mailer: Webmail Orange", "MIME-Version: 1.0", "Content-Type: text/plain; charset=UTF-8; format=flowed",
        "Content-Transfer-Encoding: 8bit",
    ]
    return ("\r\n".join(head) + "\r\n\r\n" + text.replace("\n", "\r\n")).encode("utf-8")


# --- helpers ---------------------------------------------------------------------------------

def open_case(desk: Daemon, sink: Sink) -> tuple[int, Caught]:
    desk.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "VPN drops every hour",
                   "Hi,\nmy VPN drops every hour since Monday.\nJane"), "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    wait_count(sink, "alice@example.com", 1)
    wait_count(sink, "bob@example.com", 1)
    return int(re.search(r"\[#(\d+)\]", ack.message["Subject"]).group(1)), ack


def set_stage(desk: Daemon, sink: Sink, n: int, stage: str) -> Caught:
    """The stage set as an admin; returns the last mail the customer got (what an OOO answers)."""
    if stage != "new":
        desk.cli("case", "update", str(n), "--stage", stage)
    settle()
    return sink.to("jane@acme.test")[-1]


def message_id(c: Caught) -> str:
    return str(c.message["Message-ID"]).strip().strip("<>")


def system_notes(desk: Daemon, n: int) -> list[dict]:  # type: ignore[type-arg]
    return [p for p in desk.case(n)["posts"] if p["author_kind"] == "system"]


def assert_only_a_note(desk: Daemon, sink: Sink, n: int, before: dict, sent_before: int,  # type: ignore[type-arg]
                       cases_before: int) -> dict:  # type: ignore[type-arg]
    """One new internal system note on case n; stage, SLA, participants unchanged; no mail at all."""
    settle()
    after = desk.case(n)
    assert [c.rcpt_tos for c in sink.caught[sent_before:]] == []  # no ack, no post to anyone, no notification
    assert len(desk.cases()) == cases_before  # no new case, also not for a closed one
    assert after["stage"] == before["stage"] and after["due_at"] is not None
    # SLA clocks, updated_at, participants, history: all as they were
    assert {k: v for k, v in after.items() if k != "posts"} == {k: v for k, v in before.items() if k != "posts"}
    new = after["posts"][len(before["posts"]):]
    assert len(new) == 1, new
    (note,) = new
    assert (note["visibility"], note["author_kind"], note["author"]) == ("internal", "system", "system")
    assert [p for p in after["posts"] if p["visibility"] == "public"] == \
        [p for p in before["posts"] if p["visibility"] == "public"]
    return note


# --- the customer's out-of-office ------------------------------------------------------------

@pytest.mark.parametrize("stage", ["new", "pending", "resolved", "closed"])
def test_exchange_out_of_office_is_a_system_note_and_changes_nothing(desk: Daemon, sink: Sink, stage: str) -> None:
    n, _ = open_case(desk, sink)
    last = set_stage(desk, sink, n, stage)
    before, sent, cases = desk.case(n), len(sink.caught), len(desk.cases())
    assert before["stage"] == stage
    subject = f"Automatische Antwort: {last.message['Subject']}"
    desk.send(exchange_ooo("Jane Customer <jane@acme.test>", "Example Support <support@example.com>", subject,
                           message_id(last)), "jane@acme.test", ["support@example.com"])
    note = assert_only_a_note(desk, sink, n, before, sent, cases)
    assert "nicht im Büro" in note["body"] and "it-service@acme.test" in note["body"]
    assert "jane@acme.test" in note["body"]  # whose automatic reply it is


@pytest.mark.parametrize("stage", ["new", "resolved"])
def test_header_less_out_of_office_known_by_its_subject_is_a_system_note(desk: Daemon, sink: Sink,
                                                                         stage: str) -> None:
    """Needs subject-only detection in rules.loops (issue 21 §3, being added in parallel)."""
    n, _ = open_case(desk, sink)
    last = set_stage(desk, sink, n, stage)
    before, sent, cases = desk.case(n), len(sink.caught), len(desk.cases())
    # sent back to the address the desk's mail came from, as vacation responders do
    desk.send(french_webmail_ooo("Jane Customer <jane@acme.test>", "support@example.com",
                                 f"Réponse automatique : {last.message['Subject']}"),
              "jane@acme.test", ["support@example.com"])
    note = assert_only_a_note(desk, sink, n, before, sent, cases)
    assert "absente du bureau" in note["body"] and "01 23 45 67 89" in note["body"]
    assert "we received your request" not in note["body"]  # the reply text, not the quoted history


def test_out_of_office_to_no_case_opens_none(desk: Daemon, sink: Sink) -> None:
    open_case(desk, sink)
    sent, cases = len(sink.caught), desk.cases()
    # a case number that does not exist, and an answer to a mail the desk never sent
    desk.send(exchange_ooo("Max Muster <max@partner.test>", "support@example.com",
                           "Automatische Antwort: [#999] Ihre Bestellung", None),
              "max@partner.test", ["support@example.com"])
    desk.send(exchange_ooo("Max Muster <max@partner.test>", "support@example.com",
                           "Automatische Antwort: Angebot", "never-sent@elsewhere.test"),
              "max@partner.test", ["support@example.com"])
    settle()
    assert desk.cases() == cases
    assert sink.caught[sent:] == []
    log = desk.log()
    assert log.count("automatic reply to no case") == 2, log


def test_a_long_out_of_office_is_shortened(desk: Daemon, sink: Sink) -> None:
    n, ack = open_case(desk, sink)
    text = "Ich bin nicht im Büro.\n\n" + "\n".join(f"Für Thema {i} wenden Sie sich bitte an team{i}@acme.test."
                                                   for i in range(200))
    desk.send(exchange_ooo("jane@acme.test", "support@example.com", f"Automatische Antwort: {ack.message['Subject']}",
                           message_id(ack), text=text), "jane@acme.test", ["support@example.com"])
    settle()
    (note,) = system_notes(desk, n)
    assert "Ich bin nicht im Büro." in note["body"] and "team5@acme.test" in note["body"]
    assert "team199@acme.test" not in note["body"] and note["body"].endswith("[…]")
    assert len(note["body"]) < 2000


# --- an agent's out-of-office answering a notification: no loop --------------------------------

def test_agents_out_of_office_to_notifications_makes_one_note_at_most_and_no_loop(desk: Daemon, sink: Sink) -> None:
    n, _ = open_case(desk, sink)
    (to_alice,) = sink.to("alice@example.com")
    (to_bob,) = sink.to("bob@example.com")
    before, sent, cases = desk.case(n), len(sink.caught), len(desk.cases())
    subject = f"Automatische Antwort: {to_alice.message['Subject']}"
    # Alice's Exchange answers the notification's Reply-To (her token) ...
    desk.send(exchange_ooo("Alice Agent <alice@example.com>", token_of(to_alice), subject, message_id(to_alice),
                           text="Ich bin bis Montag im Urlaub.\nAlice"), "alice@example.com", [token_of(to_alice)])
    # ... and its From, as some responders do; Bob's does the same
    desk.send(exchange_ooo("Alice Agent <alice@example.com>", "support@example.com", subject, message_id(to_alice),
                           text="Ich bin bis Montag im Urlaub.\nAlice"), "alice@example.com", ["support@example.com"])
    desk.send(exchange_ooo("Bob Agent <bob@example.com>", token_of(to_bob),
                           f"Automatic reply: {to_bob.message['Subject']}", message_id(to_bob),
                           text="I am away until Monday.\nBob"), "bob@example.com", [token_of(to_bob)])
    settle()
    settle()
    assert sink.caught[sent:] == []  # nothing to Alice, Bob, or the customer: nothing to answer again
    after = desk.case(n)
    assert after["stage"] == before["stage"] and len(desk.cases()) == cases
    new = after["posts"][len(before["posts"]):]
    assert all((p["visibility"], p["author_kind"]) == ("internal", "system") for p in new)
    alice_notes = [p for p in new if "im Urlaub" in p["body"]]
    bob_notes = [p for p in new if "away until Monday" in p["body"]]
    assert len(alice_notes) <= 1 and len(bob_notes) <= 1
