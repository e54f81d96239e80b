"""Notifications, history, rules and reload, end to end over real sockets (SPEC §3, §5, §9, §10)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail, text_of, wait_count
from tests.support.sink import Caught, Sink

RULES = '''
[[rules]]
name = "acme to billing"
when = { from_domain = "acme.test" }
then = { team = "billing", priority = "high", add_tags = ["acme"] }
'''
TOKEN_RE = re.compile(r"((?:support|billing)\+[a-z0-9]+@example\.com)")


def html_of(c: Caught) -> str:
    return "".join(p.get_content() for p in c.message.walk() if p.get_content_type() == "text/html")


def quiet(seconds: float = 1.0) -> None:
    """Lets the outbox drain before asserting that nothing more was sent."""
    time.sleep(seconds)


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=RULES)
    d.start()
    yield d
    d.stop()


def new_case(desk: Daemon, sink: Sink, frm: str = "Jane <jane@acme.test>") -> tuple[int, str]:
    address = re.search(r"[\w.]+@[\w.]+", frm).group(0)
    desk.send(mail(frm, "support@example.com", "Invoice 2026-11 is wrong", "The total is off."), address,
              ["support@example.com"])
    ack = wait_count(sink, address, 1)[-1]
    return int(re.search(r"\[#(\d+)\]", ack.message["Subject"]).group(1)), address


def test_rule_routes_a_new_case_and_the_history_names_it(desk: Daemon, sink: Sink) -> None:
    n, _ = new_case(desk, sink)
    case = desk.case(n)
    assert (case["queue"], case["priority"], case["tags"]) == ("billing", "high", ["acme"])
    by_rule = [h for h in case["history"] if h["rule"] == "acme to billing"]
    assert {h["field"] for h in by_rule} == {"queue", "priority", "tags"} and all(h["via"] == "rule" for h in by_rule)
    (to_carol,) = wait_count(sink, "carol@example.com", 1)
    assert f"[#{n}]" in to_carol.message["Subject"]
    quiet()
    assert sink.to("alice@example.com") == [] and sink.to("bob@example.com") == []
    text = desk.cli("case", "show", str(n)).stdout
    assert "queue: support → billing" in text and "rule 'acme to billing'" in text


def test_reply_with_stage_change_is_one_mail_and_tags_stay_internal(desk: Daemon, sink: Sink) -> None:
    n, jane = new_case(desk, sink)
    carol = TOKEN_RE.search(str(wait_count(sink, "carol@example.com", 1)[0].message["Reply-To"])).group(1)
    desk.send(mail("carol@example.com", carol, f"Re: [#{n}]", "/stage pending\n/assign me\n"
                   "We are correcting the invoice."), "carol@example.com", [carol])
    got = wait_count(sink, jane, 2)
    quiet()
    assert len(sink.to(jane)) == 2
    assert "We are correcting the invoice." in text_of(got[1]) and "pending" in text_of(got[1])
    desk.send(mail("carol@example.com", carol, f"Re: [#{n}]", "/follow"), "carol@example.com", [carol])
    desk.send(mail("alice@example.com", carol.replace("billing", "billing"), f"Re: [#{n}]", "hello"),
              "alice@example.com", [carol])  # not an agent reply: alice holds no token of hers here
    desk.cli("case", "update", str(n), "--tag", "+vip", "--as", "alice@example.com")
    tag_mails = sink.wait_for(lambda c: "carol@example.com" in c.rcpt_tos and "vip" in text_of(c), timeout=20)
    quiet()
    assert tag_mails and "Tags: +vip" in text_of(tag_mails[-1])
    assert not any("vip" in text_of(c) for c in sink.to(jane))


def test_attachments_added_reach_the_assignee_by_name_and_can_be_removed(desk: Daemon, sink: Sink) -> None:
    n, jane = new_case(desk, sink)
    desk.cli("case", "update", str(n), "--assign", "carol@example.com")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Jane <jane@acme.test>", "support@example.com", f"Re: [#{n}] Invoice"
    m.set_content("Here are the two invoices.")
    m.add_alternative('<p>Here are the two invoices.<script>alert(1)</script><img src="x" onerror="alert(2)">'
                      '<img src="https://tracker.test/p.gif"></p>', subtype="html")
    m.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice-A.pdf")
    m.add_attachment(b"%PDF-1.4 fake2", maintype="application", subtype="pdf", filename="invoice-B.pdf")
    desk.send(m.as_bytes(), jane, ["support@example.com"])
    notes = sink.wait_for(lambda c: "carol@example.com" in c.rcpt_tos and "invoice-A.pdf" in text_of(c),
                          timeout=20)
    assert notes and "invoice-B.pdf" in text_of(notes[0])
    html = "".join(html_of(c) for c in sink.to("carol@example.com")).lower()
    assert "<script" not in html and "onerror" not in html and "tracker.test" not in html
    posts = desk.case(n)["posts"]
    files = {a["filename"]: a for a in posts[-1]["attachments"]}
    assert set(files) == {"invoice-A.pdf", "invoice-B.pdf"} and files["invoice-A.pdf"]["size"] == 13

    sha = files["invoice-A.pdf"]["sha256"]
    out = desk.cli("case", "update", str(n), "--remove-attachment", sha).stdout
    assert "attachment_removed" in out
    assert [a["filename"] for a in desk.case(n)["posts"][-1]["attachments"]] == ["invoice-B.pdf"]
    assert sink.wait_for(lambda c: "carol@example.com" in c.rcpt_tos
                         and "Attachment removed: invoice-A.pdf" in text_of(c), timeout=20)
    bad = desk.cli("case", "update", str(n), "--remove-attachment", "nope.pdf", check=False)
    assert bad.returncode == 1 and "no such attachment" in bad.stderr


def test_detach_by_mail(desk: Daemon, sink: Sink) -> None:
    n, _ = new_case(desk, sink, "Joe <joe@other.test>")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "joe@other.test", "support@example.com", f"Re: [#{n}] Invoice"
    m.set_content("Oops, wrong file.")
    m.add_attachment(b"private", maintype="application", subtype="octet-stream", filename="passwords.txt")
    desk.send(m.as_bytes(), "joe@other.test", ["support@example.com"])
    alice = TOKEN_RE.search(str(wait_count(sink, "alice@example.com", 1)[0].message["Reply-To"])).group(1)
    desk.send(mail("alice@example.com", alice, f"Re: [#{n}]", "/detach passwords.txt"), "alice@example.com", [alice])
    quiet()
    case = desk.case(n)
    assert all(a["filename"] != "passwords.txt" for p in case["posts"] for a in p["attachments"])
    assert any(h["field"] == "attachments" and h["old"] == "passwords.txt" for h in case["history"])


def test_case_update_goes_through_the_same_checks_and_history(desk: Daemon, sink: Sink) -> None:
    n, jane = new_case(desk, sink)
    ok = desk.cli("case", "update", str(n), "--stage", "resolved", "--priority", "low", "--field", "po", "4711")
    assert "stage_changed" in ok.stdout and "priority_changed" in ok.stdout
    case = desk.case(n)
    assert case["stage"] == "resolved" and case["fields"] == {"po": "4711"}
    by_cli = [h for h in case["history"] if h["via"] == "cli"]
    assert {h["field"] for h in by_cli} == {"stage", "priority", "field:po"}
    assert all(h["actor"].endswith("@cli") for h in by_cli)
    resolved = wait_count(sink, jane, 2)  # resolved is one of the stages customers hear of
    assert len(resolved) == 2 and "resolved" in text_of(resolved[1])
    bad = desk.cli("case", "update", str(n), "--stage", "done", "--queue", "nope", check=False)
    assert bad.returncode == 1 and "unknown stage 'done'" in bad.stderr and "unknown team 'nope'" in bad.stderr
    assert desk.case(n)["stage"] == "resolved"


def test_sighup_reload_applies_an_edit_and_keeps_the_old_config_on_a_broken_one(desk: Daemon, sink: Sink) -> None:
    assert desk.config is not None
    original = desk.config.read_text()
    desk.config.write_text(original.replace('team = "billing", priority', 'team = "support", priority'))
    desk.proc.send_signal(signal.SIGHUP)
    quiet()
    n2, _ = new_case(desk, sink, "Newguy <newguy@acme.test>")
    assert desk.case(n2)["queue"] == "support"
    desk.config.write_text(original + '\n[[rules]]\nname = "broken"\nthen = { team = "nosuchteam" }\n')
    desk.proc.send_signal(signal.SIGHUP)
    quiet()
    assert desk.proc.poll() is None
    n3, _ = new_case(desk, sink, "Third <third@acme.test>")
    assert desk.case(n3)["queue"] == "support"  # the last good rules, not the broken file's
    refused = [json.loads(line) for line in desk.log().splitlines()
               if line.startswith("{") and "reload refused" in line]
    assert refused and any("nosuchteam" in p for p in refused[-1]["problems"])


def test_notify_matrix_can_be_changed_per_event(database: Database, sink: Sink, tmp_path: Path) -> None:
    extra = '\n[notify]\nevents = { tags_changed = ["team", "audit@example.org"], case_created = [] }\n'
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
    d.start()
    try:
        d.send(mail("joe@other.test", "support@example.com", "Hello", "Hi"), "joe@other.test", ["support@example.com"])
        wait_count(sink, "joe@other.test", 1)
        quiet()
        assert sink.to("alice@example.com") == []  # case_created told to nobody
        d.cli("case", "update", "1", "--tag", "+urgent-ish")
        assert wait_count(sink, "alice@example.com", 1) and wait_count(sink, "bob@example.com", 1)
        assert wait_count(sink, "audit@example.org", 1)
        (tmp_path / "bad").mkdir()
        bad = Daemon.with_config(tmp_path / "bad", database.url, "smtp://127.0.0.1:1",
                                 extra='\n[notify]\nevents = { tags_changd = ["team"], closed = ["nobody"] }\n')
        r = bad.cli("check-config", check=False)
        assert r.returncode == 1 and "notify.events.tags_changd: unknown event" in r.stderr
        assert "'nobody' is neither an audience" in r.stderr
    finally:
        d.stop()


def test_auto_reply_rule_uses_an_admin_template(database: Database, sink: Sink, tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "vip_welcome.j2").write_text(
        '{% extends "layout.j2" %}\n{% block subject %}[#{{ case.number }}] Welcome, VIP{% endblock %}\n'
        "{% block text %}Our VIP line will call you within the hour.{% endblock %}\n"
        "{% block html %}<p>Our VIP line will call you within the hour.</p>{% endblock %}\n")
    extra = ('\n[[rules]]\nname = "vip welcome"\nwhen = { from_domain = "vip.test" }\n'
             'then = { auto_reply = "vip_welcome", add_tags = ["vip"] }\n')
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=extra)
    d.config.write_text('templates_dir = "tpl"\n' + d.config.read_text())
    d.start()
    try:
        d.send(mail("boss@vip.test", "support@example.com", "Urgent", "Call me"), "boss@vip.test",
               ["support@example.com"])
        (welcome,) = wait_count(sink, "boss@vip.test", 1)
        quiet()
        assert len(sink.to("boss@vip.test")) == 1 and "Welcome, VIP" in welcome.message["Subject"]
        assert "VIP line will call you" in text_of(welcome)
        assert welcome.message["Auto-Submitted"] == "auto-replied"
    finally:
        d.stop()


def test_a_broken_admin_template_is_reported_when_the_daemon_starts(sink: Sink, tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "stage_changed.j2").write_text(
        '{% extends "layout.j2" %}\n{% block text %}Now {{ case.stage }{% endblock %}\n')
    d = Daemon.with_config(tmp_path, f"sqlite:///{tmp_path}/maild.db", f"smtp://127.0.0.1:{sink.port}")
    assert d.config is not None
    d.config.write_text('templates_dir = "tpl"\n' + d.config.read_text())
    d.start()
    try:
        problem = [json.loads(line) for line in d.log().splitlines()
                   if line.startswith("{") and "template problems" in line]
        assert problem and any("stage_changed.j2:2: template syntax error" in p for p in problem[0]["problems"])
    finally:
        d.stop()
