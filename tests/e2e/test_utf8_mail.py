"""Mail of real people behind real MTAs (issue 20 §1, §2): raw UTF-8 headers (RFC 6532) and
internationalized addresses (RFC 6531) over SMTP, as Postfix hands them on with SMTPUTF8 and
BODY=8BITMIME, and legacy 8-bit headers without either. Every one becomes a case whose subject
and requester read as the customer wrote them, and the acknowledgement says them back intact."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import Database, load_eml
from tests.support.daemon import Daemon
from tests.support.mails import text_of, wait_count
from tests.support.sink import Caught, Sink

THUNDERBIRD = "utf8-headers-thunderbird-smtputf8.eml"
INTERNATIONAL = "utf8-sender-internationalized-address.eml"
KOI8R = "legacy-8bit-koi8r-header-outlook-express.eml"


@pytest.fixture
def desk(database: Database, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}")
    d.start()
    yield d
    assert d.stop() == 0, d.log()


def send(desk: Daemon, raw: bytes, mail_from: str, options: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30) as s:
        s.ehlo("mx.example.net")
        assert s.has_extn("smtputf8") and s.has_extn("8bitmime")
        assert s.sendmail(mail_from, ["support@example.com"], raw, mail_options=options) == {}


def case_of(desk: Daemon, subject: str) -> dict:
    found = [c for c in desk.cases() if c["subject"] == subject]
    assert len(found) == 1, (subject, [c["subject"] for c in desk.cases()], desk.log())
    return desk.case(found[0]["number"])


def utf8_message(c: Caught) -> EmailMessage:
    """The stdlib reads a raw UTF-8 header section only from text (its byte parser takes 8-bit
    header bytes for undecodable ones); the bodies maild writes are 7-bit anyway."""
    return email.message_from_string(c.raw.decode("utf-8"), policy=email.policy.SMTPUTF8)  # type: ignore[return-value]


def acknowledgement(sink: Sink, address: str) -> Caught:
    (ack,) = wait_count(sink, address, 1, timeout=20)
    return ack


@pytest.mark.postgres
@pytest.mark.parametrize("options", [["SMTPUTF8", "BODY=8BITMIME"], ["BODY=8BITMIME"]], ids=["smtputf8", "8bitmime"])
def test_raw_utf8_subject_and_name_read_as_written(desk: Daemon, sink: Sink, options: list[str]) -> None:
    """Thunderbird's raw UTF-8 Subject and From name (no encoded words): relayed with SMTPUTF8
    by a modern MTA, or with 8BITMIME only by one that does not ask."""
    subject = "Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118"
    send(desk, load_eml(THUNDERBIRD), "zdenek.novak@firma.test", options)
    case = case_of(desk, subject)
    contact = desk.cli_json("contact", "show", "zdenek.novak@firma.test")
    assert contact["name"] == "Zdeněk Novák"
    assert "místo 12 400 Kč je tam 124 000 Kč." in case["posts"][0]["body"]

    ack = acknowledgement(sink, "zdenek.novak@firma.test")
    assert ack.raw.isascii(), "names and subjects go as encoded words: no SMTPUTF8 needed for this one"
    msg = ack.message
    assert str(msg["Subject"]).endswith(subject), msg["Subject"]
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Zdeněk Novák", "zdenek.novak@firma.test")
    assert "\ufffd" not in text_of(ack)


@pytest.mark.postgres
def test_internationalized_sender_becomes_a_case_and_gets_its_acknowledgement(desk: Daemon, sink: Sink) -> None:
    """`jiří@příklad.example` (RFC 6531) is a contact like any other: a case, never quarantine,
    and an acknowledgement that travels with SMTPUTF8, the address raw UTF-8 in its To."""
    send(desk, load_eml(INTERNATIONAL), "jiří@příklad.example", ["SMTPUTF8", "BODY=8BITMIME"])
    case = case_of(desk, "Nelze se přihlásit do portálu")
    assert "portál hlásí „neplatné heslo“." in case["posts"][0]["body"]
    contact = desk.cli_json("contact", "show", "jiří@příklad.example")
    assert (contact["email"], contact["name"]) == ("jiří@příklad.example", "Jiří Dvořák")
    assert not list((desk.folder / "data" / "quarantine").glob("*")), desk.log()

    ack = acknowledgement(sink, "jiří@příklad.example")
    assert ack.rcpt_tos == ["jiří@příklad.example"]
    (to,) = utf8_message(ack)["To"].addresses
    assert (to.display_name, to.username, to.domain) == ("Jiří Dvořák", "jiří", "příklad.example")
    assert "Nelze se přihlásit do portálu" in str(utf8_message(ack)["Subject"])


@pytest.mark.postgres
def test_legacy_8bit_header_in_the_body_charset(desk: Daemon, sink: Sink) -> None:
    """An old Outlook Express writes the Subject and name as raw KOI8-R bytes, no encoded words:
    read in the body's charset rather than as U+FFFD."""
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=30) as s:
        s.sendmail("ivan.petrov@zavod.test", ["support@example.com"], load_eml(KOI8R))
    case_of(desk, "Не работает выгрузка отчётов")
    assert desk.cli_json("contact", "show", "ivan.petrov@zavod.test")["name"] == "Петров Иван"
    ack = acknowledgement(sink, "ivan.petrov@zavod.test")
    assert str(ack.message["Subject"]).endswith("Не работает выгрузка отчётов")

