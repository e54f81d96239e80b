"""CSV import of contacts: every row checked, every rejection named with its row and reason, fast.

Row numbers are what a spreadsheet shows: the header is row 1, the first contact row 2.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maild.config import Config, parse_config
from maild.crm.csvio import CsvError, check_required, decode, import_rows, parse_csv
from maild.store.db import make_engine, upgrade_database
from maild.store.models import Contact, ContactTag, Organization

FIELDS = {
    "contact_fields": [
        {"name": "plan", "type": "choice", "choices": ["free", "pro", "enterprise"]},
        {"name": "joined", "type": "date"},
        {"name": "seats", "type": "number"},
        {"name": "newsletter", "type": "bool"},
    ],
}
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def config(**extra: object) -> Config:
    return parse_config({**FIELDS, **extra}, "test.toml", Path("."))


def rejected(text: str, cfg: Config | None = None) -> list[tuple[int, str]]:
    return parse_csv(text, cfg or config()).rejected


def test_utf8_with_and_without_bom_reads_the_same() -> None:
    text = "email,name\nzoe@acme.test,Zoë Müller\n"
    assert decode(b"\xef\xbb\xbf" + text.encode()) == decode(text.encode()) == text
    rows = parse_csv(decode(b"\xef\xbb\xbf" + text.encode()), config()).rows
    assert [(r.row, r.email, r.name) for r in rows] == [(2, "zoe@acme.test", "Zoë Müller")]


def test_windows_1251_needs_its_encoding_and_a_wrong_guess_names_the_byte() -> None:
    data = "email;name\nivan@firma.test;Иван Петров\n".encode("windows-1251")
    rows = parse_csv(decode(data, "windows-1251"), config()).rows  # Excel's Russian export: ';'
    assert [(r.email, r.name) for r in rows] == [("ivan@firma.test", "Иван Петров")]
    with pytest.raises(CsvError) as e:
        decode(data)
    offset = data.index("И".encode("windows-1251"))
    assert str(e.value).startswith(f"the file is not valid utf-8 at byte {offset} (line 2")
    assert "--encoding" in str(e.value)
    with pytest.raises(CsvError, match="unknown encoding 'klingon'"):
        decode(data, "klingon")


def test_a_bom_then_bad_utf8_counts_the_offset_in_the_file() -> None:
    with pytest.raises(CsvError, match="at byte 9 "):
        decode(b"\xef\xbb\xbfemail\n\xff")


def test_bad_values_are_rejected_with_row_field_value_and_why() -> None:
    text = ("Email,Name,Plan,Joined,Seats,Newsletter,Type,Tags\n"
            "ok@acme.test,Ok,pro,2024-01-31,5,yes,customer,vip:red;beta\n"
            "not-an-address,Bad,,,,,,\n"
            "date@acme.test,,,2024-02-30,,,,\n"
            "choice@acme.test,,gold,,,,,\n"
            "type@acme.test,,,,,,reseller,\n"
            "many@acme.test,,gold,yesterday,lots,perhaps,,\n"
            "color@acme.test,,,,,,,vip:not a color\n"
            ",No email,,,,,,\n")
    parsed = parse_csv(text, config())
    assert [r.email for r in parsed.rows] == ["ok@acme.test"]
    ok = parsed.rows[0]
    assert (ok.fields, ok.type, ok.tags) == ({"plan": "pro", "joined": "2024-01-31", "seats": 5, "newsletter": True},
                                             "customer", [("vip", "red"), ("beta", None)])
    assert parsed.rejected == [
        (3, "'not-an-address' is not an email address"),
        (4, "field 'joined': '2024-02-30' is not a date (write YYYY-MM-DD)"),
        (5, "field 'plan': 'gold' is not one of free, pro, enterprise"),
        (6, "type 'reseller' is not one of customer, partner, internal"),
        (7, "field 'plan': 'gold' is not one of free, pro, enterprise; field 'joined': 'yesterday' is not a date "
            "(write YYYY-MM-DD); field 'seats': 'lots' is not a number; field 'newsletter': 'perhaps' is not true "
            "or false"),
        (8, "tag 'vip': 'not a color' is not a color (a name like 'red', or #rgb / #rrggbb)"),
        (9, "no email"),
    ]


def test_a_later_row_with_the_same_email_in_any_case_is_a_duplicate() -> None:
    text = "email,joined\nJane@Acme.test,\nbob@acme.test,bad\njane@acme.TEST,\nBOB@acme.test,2024-01-01\n"
    assert rejected(text) == [(3, "field 'joined': 'bad' is not a date (write YYYY-MM-DD)"),
                              (4, "duplicate of row 2 (jane@acme.test)"),
                              (5, "duplicate of row 3 (bob@acme.test)")]


def test_a_required_field_must_be_in_the_row_or_already_on_the_contact() -> None:
    cfg = parse_config({"contact_fields": [{"name": "region", "type": "text", "required": True}]}, "t", Path("."))
    rows = parse_csv("email,region\nnew@acme.test,\nset@acme.test,EMEA\n", cfg).rows
    assert check_required(rows[0], None, cfg.contact_fields) == "field 'region' is required"
    assert check_required(rows[0], {"region": "APAC"}, cfg.contact_fields) is None
    assert check_required(rows[1], None, cfg.contact_fields) is None


def test_unknown_columns_warn_once_and_the_email_column_is_required() -> None:
    parsed = parse_csv("email,Phone,phone 2\na@acme.test,1,2\nb@acme.test,3,4\n", config())
    assert len(parsed.rows) == 2 and parsed.rejected == []
    assert len(parsed.warnings) == 1 and "'Phone', 'phone 2'" in parsed.warnings[0]
    with pytest.raises(CsvError, match="no email column"):
        parse_csv("name,plan\nJane,pro\n", config())
    with pytest.raises(CsvError, match="column 'email' twice"):
        parse_csv("email,E-Mail\n", config())


def test_row_numbers_are_file_lines_past_blank_lines_and_quoted_newlines() -> None:
    text = 'email,name\n\na@acme.test,"two\nlines"\nbad,x\n'
    assert rejected(text) == [(5, "'bad' is not an email address")]


def ten_thousand_rows() -> tuple[str, list[int]]:
    """10,000 contacts; every 200th row is bad in one of five ways. Returns the text and bad rows."""
    lines = ["email,name,organization,plan,joined,seats,tags"]
    bad = []
    for i in range(10_000):
        email, plan, joined, org = f"user{i}@company{i % 300}.test", "pro", "2024-05-17", ""
        kind = i // 200 % 5 if i % 200 == 199 else None
        if kind == 0:
            email = f"user{i}.company{i % 300}.test"
        elif kind == 1:
            joined = "2024-02-31"
        elif kind == 2:
            plan = "platinum"
        elif kind == 3:
            email = f"USER{i - 1}@company{(i - 1) % 300}.test"
        elif kind == 4:
            org = "gmail.com"
        if kind is not None:
            bad.append(i + 2)
        if i % 1000 == 0:
            org = "Big Group"
        lines.append(f"{email},User {i},{org},{plan},{joined},{i % 50},customer;tier{i % 7}:#0a0")
    return "\n".join(lines) + "\n", bad


def test_ten_thousand_rows_import_in_seconds_with_exactly_the_bad_rows_reported(tmp_path: Path) -> None:
    text, bad = ten_thousand_rows()
    assert len(bad) == 50
    cfg = config()
    engine = make_engine(f"sqlite:///{tmp_path}/m.db")
    upgrade_database(engine)
    started = time.monotonic()
    parsed = parse_csv(text, cfg)
    with Session(engine) as session, session.begin():
        result = import_rows(session, cfg, parsed, NOW)
    elapsed = time.monotonic() - started
    assert [r for r, _ in result.rejected] == bad
    reasons = dict(result.rejected)
    assert reasons[201] == "'user199.company199.test' is not an email address"
    assert reasons[401] == "field 'joined': '2024-02-31' is not a date (write YYYY-MM-DD)"
    assert reasons[601] == "field 'plan': 'platinum' is not one of free, pro, enterprise"
    assert reasons[801] == "duplicate of row 800 (user798@company198.test)"
    assert reasons[1001] == "organization 'gmail.com' is a free-mail domain, not an organization"
    assert (result.created, result.updated) == (9_950, 0)
    assert elapsed < 10, f"import took {elapsed:.1f}s"
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 9_950
        assert session.scalar(select(func.count()).select_from(ContactTag)) == 2 * 9_950
        assert session.scalar(select(func.count()).select_from(Organization)) == 301  # 300 domains + Big Group
        big = session.scalars(select(Contact).where(Contact.email == "user1000@company100.test")).one()
        assert big.organization.name == "Big Group" and big.fields == {"plan": "pro", "joined": "2024-05-17",
                                                                         "seats": 0}
    again = parse_csv(text.replace(",pro,", ",enterprise,"), cfg)
    with Session(engine) as session, session.begin():
        second = import_rows(session, cfg, again, NOW)
    assert (second.created, second.updated, len(second.rejected)) == (0, 9_950, 50)
    engine.dispose()
