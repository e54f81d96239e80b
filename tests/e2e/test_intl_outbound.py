"""The running daemon's outbound side toward internationalized addresses (issue 20 §2) and its
EHLO (§4): a customer at an internationalized address always gets a case; the acknowledgement
goes in IDNA form where that suffices, and where it needs SMTPUTF8 that the relay lacks it
fails for good with a reason `maild outbox list` shows, while other mail still goes."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, load_eml
from tests.e2e.test_outbound_smtputf8 import RecordingSink
from tests.support.daemon import Daemon
from tests.support.mails import mail, wait_count

INTERNATIONAL = "utf8-sender-internationalized-address.eml"  # From: Jiří Dvořák <jiří@příklad.example>


def send(desk: Daemon, raw: bytes, mail_from: str) -> None:
    """As Postfix hands on a mail with an internationalized envelope: SMTPUTF8, 8BITMIME."""
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30) as s:
        assert s.sendmail(mail_from, ["support@example.com"], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}


def start(database: Database, tmp_path: Path, *, smtputf8: bool) -> tuple[RecordingSink, Daemon]:
    sink = RecordingSink(enable_SMTPUTF8=smtputf8)
    sink.start()
    desk = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    desk.start()
    return sink, desk


@pytest.fixture
def plain_relay(database: Database, tmp_path: Path) -> Iterator[tuple[RecordingSink, Daemon]]:
    """maild relaying through a server that does not offer SMTPUTF8."""
    sink, desk = start(database, tmp_path, smtputf8=False)
    yield sink, desk
    assert desk.stop() == 0, desk.log()
    sink.stop()


@pytest.fixture
def utf8_relay(database: Database, tmp_path: Path) -> Iterator[tuple[RecordingSink, Daemon]]:
    sink, desk = start(database, tmp_path, smtputf8=True)
    yield sink, desk
    assert desk.stop() == 0, desk.log()
    sink.stop()


@pytest.mark.postgres
def test_without_smtputf8_at_the_relay_the_case_stands_and_the_outbox_says_why(
        plain_relay: tuple[RecordingSink, Daemon]) -> None:
    sink, desk = plain_relay
    send(desk, load_eml(INTERNATIONAL), "jiří@příklad.example")
    desk.send(mail("Jane Doe <jane@acme.test>", "support@example.com", "Printer", "It burns."), "jane@acme.test",
              ["support@example.com"])
    assert len(wait_count(sink, "jane@acme.test", 1)) == 1  # the other mail still goes

    subjects = sorted(c["subject"] for c in desk.cases())
    assert subjects == ["Nelze se přihlásit do portálu", "Printer"], desk.log()
    assert not list((desk.folder / "data" / "quarantine").glob("*")), desk.log()
    reason = (f"relay 127.0.0.1:{sink.port} does not offer SMTPUTF8, needed for jiří@příklad.example "
              "(an internationalized address)")
    (failed,) = desk.cli_json("outbox", "list", "--status", "failed")
    assert (failed["recipient"], failed["kind"], failed["last_error"]) == ("jiří@příklad.example", "case_created",
                                                                           reason)
    listed = desk.cli("outbox", "list", "--status", "failed").stdout
    assert "jiří@příklad.example" in listed and reason in listed
    assert all("jiří@příklad.example" not in e[1] for e in sink.envelopes)


@pytest.mark.postgres
def test_an_ascii_local_part_at_an_internationalized_domain_is_answered_in_idna_form(
        utf8_relay: tuple[RecordingSink, Daemon]) -> None:
    """Even where the relay offers SMTPUTF8, such an address needs none: envelope and To in IDNA."""
    sink, desk = utf8_relay
    send(desk, mail("Jiri Dvorak <jiri@příklad.example>", "support@example.com", "Faktura", "Dobrý den"),
         "jiri@příklad.example")
    (ack,) = wait_count(sink, "jiri@xn--pklad-zsa96e.example", 1, timeout=20)
    assert ack.raw.isascii()
    to_customer = [(e[1], e[2]) for e in sink.envelopes if not e[1][0].endswith("@example.com")]  # not the agents'
    assert to_customer == [(["jiri@xn--pklad-zsa96e.example"], False)]
    (to,) = ack.message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jiri Dvorak", "jiri@xn--pklad-zsa96e.example")


@pytest.mark.postgres
def test_maild_greets_its_relay_as_its_configured_hostname(utf8_relay: tuple[RecordingSink, Daemon]) -> None:
    sink, desk = utf8_relay
    desk.send(mail("jane@acme.test", "support@example.com", "Printer", "It burns."), "jane@acme.test",
              ["support@example.com"])
    assert len(wait_count(sink, "jane@acme.test", 1)) == 1
    assert set(sink.ehlo_names) == {"support.example.com"}, sink.ehlo_names  # [server] hostname of write_config
