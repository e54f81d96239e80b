"""The `maild` command as an admin uses it: exit codes, messages, JSON shapes."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support.daemon import Daemon, write_config
from tests.support.sink import Sink, free_port

CASE_FIELDS = {"number", "subject", "stage", "queue", "assignee", "priority", "type", "tags", "organization",
               "requester", "participants", "followers"}
POST_FIELDS = {"visibility", "author", "source", "body", "attachments", "message_id", "created_at"}


def maild(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maild", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_check_config_ok_and_every_problem(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db_url=f"sqlite:///{tmp_path}/m.db", outbound_url="smtp://127.0.0.1:2526",
                       smtp_port=2525)
    ok = maild("check-config", "--config", str(cfg), cwd=tmp_path)
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok")
    cfg.write_text(cfg.read_text().replace('team = "billing"', 'team = "nosuchteam"')
                   .replace("max_message_bytes = 2000000", 'max_message_bytes = "lots"'))
    bad = maild("check-config", "--config", str(cfg), cwd=tmp_path)
    assert bad.returncode == 1
    assert f"{cfg}: mailboxes[1].team: team 'nosuchteam' is not defined in [[teams]]" in bad.stderr
    assert f"{cfg}: smtp.max_message_bytes: expected an integer, got 'lots'" in bad.stderr


def test_check_config_reports_a_broken_template_with_its_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db_url=f"sqlite:///{tmp_path}/m.db", outbound_url="smtp://127.0.0.1:2526",
                       smtp_port=2525)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "case_created.j2").write_text('{% extends "layout.j2" %}\n{% block text %}\n{{ case.number }\n'
                                                      "{% endblock %}\n")
    cfg.write_text('templates_dir = "tpl"\n' + cfg.read_text())
    r = maild("check-config", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "case_created.j2:3: template syntax error" in r.stderr


def test_run_refuses_a_bad_config_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, db_url=f"sqlite:///{tmp_path}/m.db", outbound_url="smtp://127.0.0.1:2526",
                       smtp_port=port, extra='\n[smtp2]\nx = 1\n')
    r = maild("run", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 1 and "smtp2: unknown key" in r.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (tmp_path / "m.db").exists()


def test_db_upgrade_is_idempotent(database: Database, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, db_url=database.url, outbound_url="smtp://127.0.0.1:2526", smtp_port=2525)
    for _ in range(2):
        r = maild("db", "upgrade", "--config", str(cfg), cwd=tmp_path)
        assert r.returncode == 0, r.stderr


def test_case_json_has_the_fields_of_the_spec(database: Database, sink: Sink, tmp_path: Path) -> None:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    try:
        raw = (b"From: Jane <jane@acme.test>\r\nTo: support@example.com\r\nCc: Joe <joe@acme.test>\r\n"
               b"Subject: Printer\r\nMessage-ID: <p1@acme.test>\r\n\r\nIt burns.\r\n")
        d.send(raw, "jane@acme.test", ["support@example.com"])
        listed = d.cases()
        assert set(listed[0]) >= CASE_FIELDS and "posts" not in listed[0]
        shown = d.case(listed[0]["number"])
        assert CASE_FIELDS | {"posts", "history"} <= set(shown)
        (post,) = shown["posts"]
        assert set(post) >= POST_FIELDS
        expected = {"visibility": "public", "author": "jane@acme.test", "source": "email", "body": "It burns.",
                    "attachments": [], "message_id": "p1@acme.test"}
        assert {k: post[k] for k in expected} == expected
        assert shown["participants"] == [{"email": "joe@acme.test", "name": "Joe"}]
        missing = d.cli("case", "show", "999", "--json", check=False)
        assert missing.returncode != 0 and "no case #999" in missing.stderr
        assert sink.wait_for(lambda c: "jane@acme.test" in c.rcpt_tos)
        assert sink.wait_for(lambda c: "joe@acme.test" in c.rcpt_tos)
        time.sleep(0.3)
        acks = [m for m in d.cli_json("outbox", "list") if m["recipient"].endswith("@acme.test")]
        assert sorted((m["recipient"], m["status"]) for m in acks) == [("jane@acme.test", "sent"),
                                                                       ("joe@acme.test", "sent")]
        text = d.cli("case", "show", str(listed[0]["number"])).stdout
        assert "It burns." in text and "Jane <jane@acme.test>" in text
        kept = subprocess.run([sys.executable, "-m", "maild", "message", "raw", post["message_id"],
                               "--config", str(d.config)], cwd=tmp_path, capture_output=True, timeout=60)
        assert (kept.returncode, kept.stdout) == (0, raw)  # byte for byte, CRLF included
        unknown = d.cli("message", "raw", "<nope@acme.test>", check=False)
        assert unknown.returncode == 1 and "no stored mail has the Message-ID <nope@acme.test>" in unknown.stderr
    finally:
        d.stop()


def test_failed_delivery_is_visible_in_the_cli(database: Database, sink: Sink, tmp_path: Path) -> None:
    sink.answers = ["550 5.1.1 mailbox unavailable"]
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    try:
        d.send(b"From: jane@acme.test\r\nTo: support@example.com\r\nSubject: x\r\n\r\nx\r\n", "jane@acme.test",
               ["support@example.com"])
        deadline = time.monotonic() + 10
        failed: list[dict] = []
        while not failed and time.monotonic() < deadline:
            failed = d.cli_json("outbox", "list", "--status", "failed")
            time.sleep(0.2)
        assert failed and "550 5.1.1 mailbox unavailable" in failed[0]["last_error"]
    finally:
        d.stop()


def test_embedded_defaults_put_the_acknowledgement_into_var_outbox(tmp_path: Path) -> None:
    """What the README tells a newcomer to try after `make run`."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 2525)) == 0:
            pytest.fail("port 2525 is taken: stop the maild you are running to run this test")
    d = Daemon(tmp_path, None, 2525)
    d.start()
    try:
        with smtplib.SMTP("127.0.0.1", 2525) as s:
            s.sendmail("me@example.org", ["support@localhost"],
                       b"From: me@example.org\r\nTo: support@localhost\r\nSubject: Hello maild\r\n\r\nHi!\r\n")
        deadline = time.monotonic() + 10
        files: list[Path] = []
        while not files and time.monotonic() < deadline:
            files = list((tmp_path / "var" / "outbox" / "new").glob("*"))
            time.sleep(0.1)
        assert len(files) == 1 and b"Subject: [#1] Hello maild" in files[0].read_bytes()
        assert (tmp_path / "var" / "maild.db").exists()
        assert (tmp_path / "var" / "secret.key").stat().st_mode & 0o777 == 0o600
        listed = json.loads(maild("case", "list", "--json", cwd=tmp_path).stdout)
        assert [c["subject"] for c in listed] == ["Hello maild"]
    finally:
        assert d.stop() == 0


# --- maild inspect --json (SPEC §13, issue 21 §4) -------------------------------------------------

POSTFIX_DELAYED = """\
Return-Path: <>
Date: Fri, 20 Nov 2026 14:10:02 +0100 (CET)
From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: support@example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4ZdLm21qkVz9sW4.1795187402/mx.example.com"
Content-Transfer-Encoding: 8bit
Message-Id: <20261120131002.4ZdLm21qkVz9sW4@mx.example.com>

This is a MIME-encapsulated message.

--4ZdLm21qkVz9sW4.1795187402/mx.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.com.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

                   The mail system

<slow@acme.test>: connect to mx.acme.test[198.51.100.7]:25: Connection timed out

--4ZdLm21qkVz9sW4.1795187402/mx.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
X-Postfix-Queue-ID: 4ZdFb05Yx1z9sV8
X-Postfix-Sender: rfc822; support@example.com
Arrival-Date: Fri, 20 Nov 2026 10:02:11 +0100 (CET)

Final-Recipient: rfc822; slow@acme.test
Original-Recipient: rfc822;slow@acme.test
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.acme.test[198.51.100.7]:25: Connection
    timed out
Will-Retry-Until: Wed, 25 Nov 2026 10:02:11 +0100 (CET)

--4ZdLm21qkVz9sW4.1795187402/mx.example.com
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <support@example.com>
From: Example Support <support@example.com>
To: slow@acme.test
Subject: [#3] We received your request
Date: Fri, 20 Nov 2026 09:02:10 +0000
Message-ID: <ack-3@support.example.com>
Auto-Submitted: auto-replied

--4ZdLm21qkVz9sW4.1795187402/mx.example.com--
"""


def test_inspect_json_shows_classification_reason_bounced_addresses_and_reply_text(
        database: Database, sink: Sink, tmp_path: Path) -> None:
    from tests.conftest import load_eml
    from tests.e2e.test_auto_replies import exchange_ooo
    from tests.support.mails import mail

    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    try:
        d.send(mail("Jane Customer <jane@acme.test>", "support@example.com", "VPN drops", "It drops hourly."),
               "jane@acme.test", ["support@example.com"])
        (ack,) = sink.wait_for(lambda c: "jane@acme.test" in c.rcpt_tos)
        n = d.cases()[0]["number"]
        ack_id = str(ack.message["Message-ID"]).strip("<>")
        files = {
            "bounce.eml": load_eml("bounce-dsn-postfix.eml"),
            "delayed.eml": POSTFIX_DELAYED.replace("\n", "\r\n").encode(),
            "ooo.eml": exchange_ooo("Jane Customer <jane@acme.test>", "support@example.com",
                                    f"Automatische Antwort: {ack.message['Subject']}", ack_id),
            "reply.eml": mail("Jane Customer <jane@acme.test>", "support@example.com",
                              f"Re: {ack.message['Subject']}",
                              f"Still dropping, now every ten minutes.\n\nOn Fri, 20 Nov 2026 at 10:00, Example "
                              f"Support <support@example.com> wrote:\n> We received your request [#{n}].\n",
                              headers={"In-Reply-To": f"<{ack_id}>", "References": f"<{ack_id}>"}),
        }
        for name, raw in files.items():
            (tmp_path / name).write_bytes(raw)
        posts = len(d.case(n)["posts"])
        r = d.cli("inspect", *(str(tmp_path / f) for f in files), "--json")
        out = {Path(o["file"]).name: o for o in map(json.loads, r.stdout.splitlines())}
        assert list(out) == list(files)  # one line per file, in the order given

        bounce = out["bounce.eml"]  # not of mail maild sent: kept aside, but what it says is shown
        assert (bounce["classification"], bounce["action"]) == ("bounce", "quarantined")
        assert bounce["reason"]  # which detector
        assert bounce["bounced"] == [{"address": "gone@acme.test", "failure": "permanent"}]
        assert bounce["bounced_addresses"] == ["gone@acme.test"]
        assert bounce["outcome_reason"] == "bounce of mail not sent by maild"

        delayed = out["delayed.eml"]
        assert delayed["classification"] == "bounce" and delayed["reason"]
        assert delayed["bounced"] == [{"address": "slow@acme.test", "failure": "temporary"}]
        assert delayed["bounced_addresses"] == []

        ooo = out["ooo.eml"]
        assert (ooo["classification"], ooo["action"], ooo["case"], ooo["visibility"]) == \
            ("auto_reply", "noted", n, "internal")
        assert "auto-replied" in ooo["reason"].lower()
        assert "nicht im Büro" in ooo["reply_text"] and ooo["would_notify"] == []
        assert ooo["acknowledgement"] == "none: automatic reply"

        reply = out["reply.eml"]
        assert (reply["classification"], reply["action"], reply["case"]) == ("normal", "threaded", n)
        assert reply["reply_text"] == "Still dropping, now every ten minutes."
        assert reply["bounced"] == [] and reply["reason"] is None

        assert len(d.case(n)["posts"]) == posts and len(d.cases()) == 1  # nothing stored
    finally:
        d.stop()
