"""Spreadsheet cells (SPEC §7): text that Excel would run as a formula is written as text, in every
export, and an export imported again is the same data (no quote grows per round trip)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from maild.config import Config, parse_config
from maild.crm.csvio import parse_csv, write_csv, write_xlsx
from maild.report import CaseRow, Period, build_report, render_csv
from maild.spreadsheet import safe_cell, unsafe_cell
from maild.store.models import Contact, Organization

HOSTILE = ['=HYPERLINK("http://evil.test","x")', "@SUM(1+1)", "+1", "-1", "\tcmd", "\r=1+1", "=1+1", "-2+3"]
HARMLESS = ["Alice", "", "'quoted already", "1+1", " =leading space", "a=b", "'", "''=x"]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_like_text_is_quoted_and_unquotes_to_itself(text: str) -> None:
    assert safe_cell(text) == "'" + text
    assert unsafe_cell(safe_cell(text)) == text


@pytest.mark.parametrize("text", HARMLESS)
def test_other_text_is_written_as_it_is(text: str) -> None:
    assert safe_cell(text) == text


def test_typed_values_stay_typed_and_other_objects_become_text() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    for value in (None, True, False, -5, -2.5, date(2026, 1, 2), when):
        assert safe_cell(value) is value
    assert safe_cell(["=x"]) == "['=x']"  # str() of a list starts with '[': not a formula

    class Sneaky:
        def __str__(self) -> str:
            return "=cmd|' /C calc'!A0"

    assert safe_cell(Sneaky()) == "'=cmd|' /C calc'!A0"


def test_import_takes_the_quote_away_only_where_export_put_it() -> None:
    assert unsafe_cell("'=1+1") == "=1+1"
    assert unsafe_cell("'\tx") == "\tx"
    assert unsafe_cell("'quoted") == "'quoted"  # a person's own apostrophe stays
    assert unsafe_cell("'") == "'" and unsafe_cell("") == ""


def _config() -> Config:
    return parse_config({"contact_fields": [{"name": "note", "type": "text"}, {"name": "seats", "type": "number"}]},
                        "test.toml", Path("."))


def _contacts() -> list[Contact]:
    org = Organization(name="-Evil Org", fields={})
    people = []
    for i, name in enumerate(HOSTILE):
        c = Contact(email=f"p{i}@example.test", name=name, type=None, state="active",
                    fields={"note": "@note", "seats": -5})
        c.organization = org
        people.append(c)
    return people


def test_contact_csv_holds_no_formula_and_round_trips_unchanged() -> None:
    cfg = _config()
    out = io.StringIO()
    write_csv(cfg, _contacts(), out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    for row in rows[1:]:
        assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row if cell != "-5"), row
    assert [r[1] for r in rows[1:]] == ["'" + n for n in HOSTILE]
    parsed = parse_csv(out.getvalue(), cfg)
    assert parsed.rejected == []
    assert [r.name for r in parsed.rows] == HOSTILE  # as they were, the tab and CR included
    assert {r.organization for r in parsed.rows} == {"-Evil Org"}
    assert {r.fields["note"] for r in parsed.rows} == {"@note"}
    assert {r.fields["seats"] for r in parsed.rows} == {-5}
    # a second export of what was imported is byte for byte the first one
    again = [Contact(email=r.email, name=r.name, type=None, state="active", fields=r.fields) for r in parsed.rows]
    for c in again:
        c.organization = Organization(name=parsed.rows[0].organization, fields={})
    second = io.StringIO()
    write_csv(cfg, again, second)
    assert second.getvalue() == out.getvalue()


def test_contact_xlsx_stores_text_never_a_formula(tmp_path: Path) -> None:
    cfg = _config()
    contacts = _contacts()
    contacts[0].name = "\x01=1+1"  # a control character XML cannot hold hides a formula behind it
    path = tmp_path / "contacts.xlsx"
    write_xlsx(cfg, contacts, str(path))
    ws = load_workbook(path).active
    cells = [cell for row in ws.iter_rows(min_row=2) for cell in row if cell.value is not None]
    assert cells and all(cell.data_type != "f" for cell in cells)
    names = [row[1].value for row in ws.iter_rows(min_row=2)]
    # XML reads a CR back as LF: the cell still starts with the quote
    assert names == ["'=1+1", *("'" + n.replace("\r", "\n") for n in HOSTILE[1:])]
    assert all(cell.data_type == "s" for row in ws.iter_rows(min_row=2) for cell in row[1:3])
    assert {row[7].value for row in ws.iter_rows(min_row=2)} == {-5}  # a number stays a number


def test_report_csv_quotes_names_of_queues_organizations_and_contracts() -> None:
    from maild.config import ContractConfig

    rows = [CaseRow(1, datetime(2026, 11, 16, 9, tzinfo=UTC), queue="=queue", organization="@org",
                    contract="+contract", stage="resolved", first_response_at=datetime(2026, 11, 16, 10, tzinfo=UTC),
                    resolved_at=datetime(2026, 11, 16, 11, tzinfo=UTC))]
    cfg = Config(contracts=[ContractConfig("+contract", calendar="24x7", rating=1)])  # type: ignore[call-arg]
    text = render_csv(build_report(rows, cfg, Period(date(2026, 11, 16), date(2026, 11, 23))))
    cells = [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]
    assert {"'=queue", "'@org", "'+contract"} <= set(cells)
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
