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


def test_a_template_that_fails_to_render_costs_no_customer_mail(database: Database, sink: Sink, tmp_path: Path,
                                                                stopped: list[Daemon]) -> None:
    d = start_desk(tmp_path, database, sink, {"case_created": FAILING_CASE_CREATED})
    stopped.append(d)
    d.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "Printer on fire", "It burns."),
           "jane@acme.test", ["support@example.com"])
    (ack,) = wait_count(sink, "jane@acme.test", 1)
    assert "[#1]" in str(ack.message["Subject"]) and "we have received your message" in text_of(ack)  # built-in
    assert wait_count(sink, "alice@example.com", 1)
    assert [c["subject"] for c in d.cases()] == ["Printer on fire"]
    assert quarantined(tmp_path) == []
    failed = log_events(d, "template failed to render, the built-in one is used")
    assert failed and failed[0]["template"] == "case_created" and "nmae" in failed[0]["error"]


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
