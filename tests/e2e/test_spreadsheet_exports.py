"""Spreadsheet formulas (SPEC §7, issue 18 point 6): customers name themselves `=HYPERLINK(...)`
over SMTP, an admin exports contacts (CSV, XLSX) and runs the report CSV; no cell of any of them
is a formula when the file is opened in a spreadsheet."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from email.utils import formataddr
from pathlib import Path

import pytest
from openpyxl import load_workbook

from tests.conftest import Database
from tests.support.daemon import Daemon

DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
# display name as the From header carries it -> the name a contact gets
NAMES = {
    "link@evil.test": '=HYPERLINK("http://evil.test","x")',
    "sum@evil.test": "@SUM(1+1)",
    "plus@evil.test": "+1",
    "minus@evil.test": "-1",
}
TAB_LED = "tab@evil.test"  # "\t=1+1" as an RFC 2047 word: the tab survives header parsing


def customer_mail(frm: str, subject: str) -> bytes:
    return (f"From: {frm}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@client.test>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease help.\r\n").encode()


@pytest.fixture
def desk(database: Database, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, database.url, "maildir://outbox")
    d.start()
    yield d
    d.stop()


def wait_for_contacts(desk: Daemon, emails: set[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emails <= {c["email"] for c in desk.cli_json("contact", "list")}:
            return
        time.sleep(0.2)
    raise AssertionError(f"contacts {emails} not created:\n{desk.log()}")


def assert_neutral(cell: str, where: str) -> None:
    assert not cell.startswith(DANGEROUS), f"{where}: {cell!r} is a formula to a spreadsheet"


def test_exports_and_report_hold_no_formula(desk: Daemon, tmp_path: Path) -> None:
    desk.cli("org", "add", "=HYPERLINK(\"http://evil.test\",\"org\")", "--domain", "evilcorp.test")
    for address, name in NAMES.items():
        desk.send(customer_mail(formataddr((name, address)), "Help"), address, ["support@example.com"])
    desk.send(customer_mail(f"=?utf-8?q?=09=3D1+1?= <{TAB_LED}>", "Help"), TAB_LED, ["support@example.com"])
    desk.send(customer_mail("@Boss <boss@evilcorp.test>", "Help"), "boss@evilcorp.test", ["support@example.com"])
    wait_for_contacts(desk, {*NAMES, TAB_LED, "boss@evilcorp.test"})
    stored = {c["email"]: c["name"] for c in desk.cli_json("contact", "list")}
    assert {a: stored[a] for a in NAMES} == NAMES  # the attack reached the database as written

    exported = desk.cli("contact", "export", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(exported, newline="")))
    by_email = {r[0]: r for r in rows[1:]}
    for address, name in NAMES.items():
        assert by_email[address][1] == "'" + name
    assert by_email["boss@evilcorp.test"][2] == "'=HYPERLINK(\"http://evil.test\",\"org\")"
    for row in rows:
        for cell in row:
            assert_neutral(cell, "contact export --format csv")

    out = tmp_path / "contacts.xlsx"
    desk.cli("contact", "export", "--format", "xlsx", "--output", str(out))
    ws = load_workbook(out).active
    cells = [cell for row in ws.iter_rows() for cell in row if cell.value is not None]
    assert [c for c in cells if c.data_type == "f"] == []
    xlsx = {row[0].value: row for row in ws.iter_rows(min_row=2)}
    for address, name in NAMES.items():
        assert xlsx[address][1].value == "'" + name and xlsx[address][1].data_type == "s"
    for cell in cells:
        if isinstance(cell.value, str):
            assert_neutral(cell.value, "contact export --format xlsx")

    report = desk.cli("report", "--csv").stdout
    report_rows = list(csv.reader(io.StringIO(report, newline="")))
    names = {r[1] for r in report_rows[1:] if r[0] == "by_organization"}
    assert "'=HYPERLINK(\"http://evil.test\",\"org\")" in names
    for row in report_rows:
        for cell in row:
            assert_neutral(cell, "report --csv")

    # exported, then imported again: the names are what they were, not one quote longer
    again = tmp_path / "again.csv"
    again.write_text(exported, encoding="utf-8")
    r = desk.cli_json("contact", "import", str(again))
    assert r["rejected"] == []
    after = {c["email"]: c["name"] for c in desk.cli_json("contact", "list")}
    assert after == stored
