"""Templates and SIGHUP under faults (issue 19 §3, SPEC §3, §10): a template that does not render
never costs a customer's mail, a reload with one is refused, and what only a restart can change
is said to need one and keeps running as it was.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail, text_of, wait_count
from tests.support.sink import Sink, free_port

# An admin's override that compiles but fails at render time (StrictUndefined), as a typo does.
FAILING_CASE_CREATED = """{% extends "layout.j2" %}
{% block text %}Thanks, {{ requester.nmae }}!{% endblock %}
{% block html %}<p>Thanks, {{ requester.nmae }}!</p>{% endblock %}
"""
# One that does not even compile.
BROKEN_SYNTAX = """{% extends "layout.j2" %}
{% block text %}{% if %}{% endblock %}
"""
# A template of the admin's own that a rule names and that works: proves the reload ran.
GOOD_SUBJECT = """{% extends "layout.j2" %}
{% block subject %}[#{{ case.number }}] Received: {{ case.subject }}{% endblock %}
{% block text %}We have your mail.{% endblock %}
{% block html %}<p>We have your mail.</p>{% endblock %}
"""


def start_desk(folder: Path, database: Database, sink: Sink, templates: dict[str, str]) -> Daemon:
    tpl = folder / "tpl"
    tpl.mkdir()
    for name, text in templates.items():
        (tpl / f"{name}.j2").write_text(text)
    d = Daemon.with_config(folder, database.url, f"smtp://127.0.0.1:{sink.port}")
    assert d.config is not None
    d.config.write_text('templates_dir = "tpl"\n' + d.config.read_text())
    d.start()
    return d


@pytest.fixture
def stopped() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        assert d.stop() == 0, d.log()
        assert "Traceback" not in d.log()


def quarantined(folder: Path) -> list[Path]:
    return sorted((folder / "data" / "quarantine").glob("*.eml"))


def log_events(d: Daemon, event: str) -> list[dict]:
    return [x for line in d.log().splitlines() if line.startswith("{")
            and (x := json.loads(line)).get("event") == event]


def wait_log(d: Daemon, event: str, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (found := log_events(d, event)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_outbox(d: Daemon, status: str, count: int, timeout: float = 15) -> list[dict]:
    """`maild outbox list --status S --json`, once it lists `count` mails."""
    deadline = time.monotonic() + timeout
    while len(rows := d.cli_json("outbox", "list", "--status", status)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return rows


@pytest.mark.parametrize(("template", "error"), [(FAILING_CASE_CREATED, "Contact object' has no attribute 'nmae'"),
                                                 (BROKEN_SYNTAX, "TemplateSyntaxError")],
                         ids=["undefined-attribute", "syntax-error"])
@pytest.mark.parametrize("read_again", ["restart", "sighup"])
def test_a_template_that_fails_to_render_fails_its_mails_and_costs_no_customer_mail(
        database: Database, sink: Sink, tmp_path: Path, stopped: list[Daemon], template: str, error: str,
        read_again: str) -> None:
    d = start_desk(tmp_path, database, sink, {"case_created": template})
    d.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "Printer on fire", "It burns."),
           "jane@acme.test", ["support@example.com"])
    # the customer's mail is a case; its acknowledgement and the team's notice fail, with the error
    failed = wait_outbox(d, "failed", 3)
    assert sorted(m["recipient"] for m in failed) == ["alice@example.com", "bob@example.com", "jane@acme.test"]
    assert all(m["kind"] == "case_created" and m["case"] == 1 and error in m["last_error"]
               and "case_created.j2" in m["last_error"] and m["attempts"] == 0 for m in failed)
    assert [c["subject"] for c in d.cases()] == ["Printer on fire"]
    assert quarantined(tmp_path) == []
    assert sink.caught == []
    (logged, *_) = log_events(d, "mail not built, not sent")
    assert logged["template"] == "case_created" and logged["case"] == 1 and error in logged["error"]
    # a mail the template does not concern still goes: the failure is those rows' alone
    d.cli("case", "update", "1", "--stage", "resolved")
    (resolved,) = wait_count(sink, "jane@acme.test", 1)
    assert "resolved" in text_of(resolved)
    # the admin fixes the template; a start or SIGHUP reads it again and the failed mails go out, once
    (tmp_path / "tpl" / "case_created.j2").unlink()
    if read_again == "restart":
        assert d.stop() == 0, d.log()
        d.start()
    else:
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        assert wait_log(d, "config reloaded"), d.log()
    stopped.append(d)
    wait_count(sink, "jane@acme.test", 2)
    assert wait_count(sink, "alice@example.com", 1) and wait_count(sink, "bob@example.com", 1)
    (ack,) = [m for m in sink.to("jane@acme.test") if "we have received your message" in text_of(m)]
    assert str(ack.message["Subject"]) == "[#1] Printer on fire"
    assert str(ack.message["Message-ID"]).strip("<>") in {m["message_id"] for m in failed}  # the one of the commit
    assert len(wait_outbox(d, "sent", 4)) == 4 and d.cli_json("outbox", "list", "--status", "failed") == []
    time.sleep(1)
    assert len(sink.caught) == 4  # each once


def test_sighup_with_a_broken_template_is_refused_and_the_running_one_kept(database: Database, sink: Sink,
                                                                          tmp_path: Path,
                                                                          stopped: list[Daemon]) -> None:
    d = start_desk(tmp_path, database, sink, {"received": GOOD_SUBJECT})
    stopped.append(d)
    assert d.config is not None and d.proc is not None
    rule = '\n[[rules]]\nname = "ack"\nwhen = {}\nthen = { auto_reply = "received" }\n'
    d.config.write_text(d.config.read_text() + rule)
    d.proc.send_signal(signal.SIGHUP)
    assert wait_log(d, "config reloaded")
    (tmp_path / "tpl" / "received.j2").write_text(BROKEN_SYNTAX)
    d.proc.send_signal(signal.SIGHUP)
    (refused,) = wait_log(d, "reload refused, running config kept")
    assert any("received.j2" in p and "syntax" in p for p in refused["problems"])
    d.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "Printer on fire", "It burns."),
           "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    assert str(ack.message["Subject"]) == "[#1] Received: Printer on fire"  # the last good templates
    assert quarantined(tmp_path) == []


def test_sighup_says_what_needs_a_restart_and_keeps_it_running(database: Database, sink: Sink, tmp_path: Path,
                                                              stopped: list[Daemon]) -> None:
    d = start_desk(tmp_path, database, sink, {})
    stopped.append(d)
    assert d.config is not None and d.proc is not None
    text = d.config.read_text()
    elsewhere = free_port()
    d.config.write_text(text.replace(f"127.0.0.1:{d.smtp_port}", f"127.0.0.1:{elsewhere}")
                        .replace(f"smtp://127.0.0.1:{sink.port}", "smtp://127.0.0.1:1"))
    d.proc.send_signal(signal.SIGHUP)
    (warned,) = wait_log(d, "config change needs a restart, running values kept")
    assert set(warned["keys"]) == {"smtp", "outbound"}
    assert log_events(d, "config reloaded") == []
    # still on the old port, still sending to the old relay
    d.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "Printer on fire", "It burns."),
           "jane@acme.test", ["support@example.com"])
    assert wait_count(sink, "jane@acme.test", 1)
