"""The spine end to end: smtplib -> `maild run` -> a real SMTP sink, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.faults import break_inserts, mend_inserts
from tests.support.mails import mail, wait_count
from tests.support.sink import Sink

TOKEN_ADDR_RE = re.compile(r"support\+[a-z0-9]+@example\.com")


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", max_bytes=200_000)
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def posts(desk: Daemon, n: int) -> list[dict]:
    return desk.case(n)["posts"]


def test_customer_mail_threads_by_token_references_and_tag(desk: Daemon, sink: Sink) -> None:
    first_mail = mail("Jane Customer <jane@acme.test>", "support@example.com", "Printer on fire",
                      "Hello,\nthe printer on floor 3 is on fire.\nJane", msgid="m1@acme.test")
    desk.send(first_mail, "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    msg = ack.message
    n = int(re.search(r"\[#(\d+)\]", msg["Subject"]).group(1))
    assert msg["Subject"] == f"[#{n}] Printer on fire"
    assert msg["Message-ID"].endswith("@support.example.com>")
    assert msg["In-Reply-To"] == "<m1@acme.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    # the VERP return path names this very mail, so only a real bounce of it is believed (SPEC §11)
    verp = msg["Message-ID"].strip("<>").partition("@")[0]
    assert re.fullmatch(rf"bounces\+{verp}[a-z2-7]{{16}}@example\.com", ack.mail_from), ack.mail_from
    assert "floor 3" not in ack.raw.decode(errors="replace")  # never quotes the sender's body
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert f"#{n}" in text and "<html" in html
    token_addr = TOKEN_ADDR_RE.search(str(msg["Reply-To"])).group(0)

    (case,) = desk.cases()
    assert case["requester"] == {"email": "jane@acme.test", "name": "Jane Customer"}
    assert case["organization"]["name"] == "acme.test"
    assert case["stage"] == "new" and case["queue"] == "support"

    desk.send(mail("jane@acme.test", token_addr, "Re: your mail", "It is still burning."),
              "jane@acme.test", [token_addr])
    desk.send(mail("jane@acme.test", "support@example.com", "something else", "Any news?",
                   headers={"In-Reply-To": msg["Message-ID"]}), "jane@acme.test", ["support@example.com"])
    desk.send(mail("Jane Customer <jane@acme.test>", "support@example.com", f"RE: [#{n}] Printer on fire",
                   "Outlook reply without headers"), "jane@acme.test", ["support@example.com"])
    assert len(desk.cases()) == 1
    bodies = [p["body"] for p in posts(desk, n)]
    assert bodies[1:] == ["It is still burning.", "Any news?", "Outlook reply without headers"]
    first = posts(desk, n)[0]
    assert first["visibility"] == "public" and first["author"] == "jane@acme.test"
    assert first["source"] == "email" and first["message_id"] == "m1@acme.test"
    assert len(sink.to("jane@acme.test")) == 1  # replies get no second acknowledgement

    desk.send(mail("mallory@evil.test", "support@example.com", f"[#{n}] let me in", "hijack"),
              "mallory@evil.test", ["support@example.com"])
    local, domain = token_addr.split("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
    desk.send(mail("mallory@evil.test", forged, "Re: hello", "forged token"), "mallory@evil.test", [forged])
    cases = desk.cases()
    assert len(cases) == 3 and all(c["requester"]["email"] == "mallory@evil.test" for c in cases[1:])
    assert len(posts(desk, n)) == 4

    # the MTA delivers the first mail again (a lost 250): stored once
    desk.send(first_mail, "jane@acme.test", ["support@example.com"])
    assert len(desk.cases()) == 3 and len(posts(desk, n)) == 4

    # one log line per ingested mail, with what a person searching the log needs
    lines = [json.loads(line) for line in desk.log().splitlines() if line.startswith("{")]
    ingested = [x for x in lines if x.get("event") == "message ingested"]
    assert [x["outcome"] for x in ingested] == ["created", "threaded", "threaded", "threaded", "created",
                                                "created", "duplicate"]
    assert ingested[0]["message_id"] == "m1@acme.test" and ingested[0]["mailbox"] == "support@example.com"
    assert ingested[0]["case"] == n


def test_refusals_550_and_552(desk: Daemon) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        desk.send(mail("x@acme.test", "bob@elsewhere.test", "relay?", "relay"), "x@acme.test",
                  ["bob@elsewhere.test"])
    assert [code for code, _ in e.value.recipients.values()] == [550]
    # a token-looking address of another domain is no mailbox either
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        desk.send(mail("x@acme.test", "support+abc@elsewhere.test", "x", "x"), "x@acme.test",
                  ["support+abc@elsewhere.test"])
    big = mail("big@acme.test", "support@example.com", "big", ("y" * 76 + "\n") * 4000)
    with pytest.raises(smtplib.SMTPResponseException) as e2:  # at MAIL (SIZE=) or after DATA
        desk.send(big, "big@acme.test", ["support@example.com"])
    assert e2.value.smtp_code == 552
    assert desk.cases() == []


def test_long_lines_are_accepted(desk: Daemon, sink: Sink) -> None:
    desk.send(mail("jane@acme.test", "support@example.com", "Long line", "x" * 5000), "jane@acme.test",
              ["support@example.com"])
    (case,) = desk.cases()
    assert posts(desk, case["number"])[0]["body"] == "x" * 5000


def test_lines_starting_with_a_dot_arrive_as_written(desk: Daemon) -> None:
    body = "Steps:\n.\n..\n.profile is missing\nend"
    desk.send(mail("jane@acme.test", "support@example.com", "Dots", body), "jane@acme.test",
              ["support@example.com"])
    (case,) = desk.cases()
    assert posts(desk, case["number"])[0]["body"] == body


def test_auto_reply_gets_no_acknowledgement(desk: Daemon, sink: Sink) -> None:
    desk.send(mail("ooo@partner.test", "support@example.com", "Out of office", "I am away.",
                   headers={"Auto-Submitted": "auto-replied"}), "ooo@partner.test", ["support@example.com"])
    desk.send(mail("jane@acme.test", "support@example.com", "Real", "Real mail"), "jane@acme.test",
              ["support@example.com"])
    assert wait_count(sink, "jane@acme.test", 1)  # the outbox is working ...
    time.sleep(0.5)
    assert sink.to("ooo@partner.test") == []  # ... and sent nothing to the robot


def test_unparseable_mail_is_quarantined_not_lost(desk: Daemon, tmp_path: Path) -> None:
    raw = b"this is not a mail, just text a broken script piped into SMTP\r\n"
    desk.send(raw, "weird@acme.test", ["support@example.com"])
    notes = list((tmp_path / "data" / "quarantine").glob("*.json"))
    assert len(notes) == 1 and "no header" in notes[0].read_text()
    assert notes[0].with_suffix(".eml").read_bytes().strip() == raw.strip()
    assert desk.proc.poll() is None


def test_storage_failure_answers_451_and_stores_nothing(database: Database, sink: Sink,
                                                         tmp_path: Path) -> None:
    from sqlalchemy import text

    from maild.store.db import make_engine

    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    try:
        engine = make_engine(database.url)
        break_inserts(engine, "posts", "disk full")
        with pytest.raises(smtplib.SMTPDataError) as e:
            d.send(mail("jane@acme.test", "support@example.com", "Printer", "fire"), "jane@acme.test",
                   ["support@example.com"])
        assert e.value.smtp_code == 451
        assert d.cases() == []  # no case, contact or acknowledgement half-written
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from contacts")).scalar() == 0
            assert conn.execute(text("select count(*) from outbox")).scalar() == 0
        mend_inserts(engine, "posts")
        engine.dispose()
        # the sender retries, as MTAs do after 451, and now it lands
        d.send(mail("jane@acme.test", "support@example.com", "Printer", "fire"), "jane@acme.test",
               ["support@example.com"])
        assert len(d.cases()) == 1
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_sigterm_stops_cleanly_and_restart_keeps_numbering(database: Database, sink: Sink,
                                                           tmp_path: Path) -> None:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    d.send(mail("jane@acme.test", "support@example.com", "One", "1"), "jane@acme.test",
           ["support@example.com"])
    assert d.stop() == 0
    d.start()
    d.send(mail("jane@acme.test", "support@example.com", "Two", "2"), "jane@acme.test",
           ["support@example.com"])
    assert [c["subject"] for c in d.cases()] == ["One", "Two"]
    assert len(wait_count(sink, "jane@acme.test", 2)) == 2
    assert d.stop() == 0
