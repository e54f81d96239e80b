"""Contacts and organizations through `maild contact …` / `maild org …` against real databases
(SQLite and PostgreSQL), as an admin uses them: import, segments, export, show, notes, tags.
No daemon runs and no mail is sent; cases and last-mail dates are written straight to the
database where a test needs them."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.store.db import make_engine
from maild.store.models import Case, Contact
from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.unit.test_csv_import import ten_thousand_rows

CRM_TOML = """
[[contact_fields]]
name = "plan"
type = "choice"
choices = ["free", "pro", "enterprise"]

[[contact_fields]]
name = "joined"
type = "date"

[[contact_fields]]
name = "seats"
type = "number"

[[org_fields]]
name = "tier"
type = "choice"
choices = ["gold", "silver"]

[[segments]]
name = "pro-customers"
filters = { type = "customer", field = { plan = "pro" } }

[[segments]]
name = "busy"
filters = { open_cases_min = 2 }
"""

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def desk(database: Database, folder: Path) -> Daemon:
    return Daemon.with_config(folder, database.url, "maildir://outbox", extra=CRM_TOML)


def add_case(database: Database, email: str, subject: str, stage: str = "open") -> int:
    """A case row as mail would have left it (requester and organization), without sending mail."""
    engine = make_engine(database.url)
    try:
        with Session(engine) as s, s.begin():
            contact = s.scalars(select(Contact).where(Contact.email == email)).one()
            case = Case(subject=subject, mailbox="support@example.com", stage=stage, requester_id=contact.id,
                        organization_id=contact.organization_id, created_at=NOW, updated_at=NOW)
            s.add(case)
            s.flush()
            return case.number
    finally:
        engine.dispose()


def set_last_mail(database: Database, email: str, when: datetime) -> None:
    engine = make_engine(database.url)
    try:
        with Session(engine) as s, s.begin():
            s.scalars(select(Contact).where(Contact.email == email)).one().last_mail_at = when
    finally:
        engine.dispose()


def emails(d: Daemon, *args: str) -> list[str]:
    return [c["email"] for c in d.cli_json("contact", "list", *args)]


FIRST = ("Email,Name,Organization,Type,Tags,plan,joined,seats,Phone\n"
         "jane@acme.test,Jane Roe,Acme Inc,customer,vip:red;beta,pro,2024-01-15,10,+1 555\n"
         "bob@acme.test,Bob,,partner,,free,,,\n"
         "ann@beta.test,Ann,,customer,vip,pro,,3,\n"
         "zed@gmail.com,Zed,,,,enterprise,,,\n"
         "not-an-email,X,,,,,,,\n"
         "eve@acme.test,Eve,,,,,2024-02-30,,\n"
         "JANE@acme.test,Jane again,,,,,,,\n"
         "kim@acme.test,Kim,,customer,,gold,,,\n")


def test_import_segments_and_export(database: Database, tmp_path: Path) -> None:
    d = desk(database, tmp_path)
    (tmp_path / "first.csv").write_bytes(b"\xef\xbb\xbf" + FIRST.encode())
    r = d.cli("contact", "import", str(tmp_path / "first.csv"))
    assert r.stdout.splitlines() == [
        "created 4, updated 0, rejected 4",
        "row 6: 'not-an-email' is not an email address",
        "row 7: field 'joined': '2024-02-30' is not a date (write YYYY-MM-DD)",
        "row 8: duplicate of row 2 (jane@acme.test)",
        "row 9: field 'plan': 'gold' is not one of free, pro, enterprise",
        "new organizations: Acme Inc",
    ]
    assert r.stderr.count("warning: ignoring unknown column(s) 'Phone'") == 1

    jane = d.cli_json("contact", "show", "jane@acme.test")
    assert jane["organization"]["name"] == "Acme Inc" and jane["type"] == "customer"
    assert jane["fields"] == {"plan": "pro", "joined": "2024-01-15", "seats": 10}
    assert jane["tags"] == [{"tag": "beta", "color": None}, {"tag": "vip", "color": "red"}]
    assert d.cli_json("contact", "show", "bob@acme.test")["organization"]["name"] == "acme.test"  # from the domain
    assert d.cli_json("contact", "show", "zed@gmail.com")["organization"] is None  # free mail

    # An Excel export in windows-1251 (';'-separated) updates by email in any case.
    (tmp_path / "ru.csv").write_bytes("email;name;plan\nBOB@ACME.TEST;Боб Иванов;pro\n".encode("windows-1251"))
    bad = d.cli("contact", "import", str(tmp_path / "ru.csv"), check=False)
    assert bad.returncode == 1 and "not valid utf-8 at byte 30 (line 2" in bad.stderr
    r = d.cli_json("contact", "import", str(tmp_path / "ru.csv"), "--encoding", "windows-1251")
    assert (r["created"], r["updated"], r["rejected"]) == (0, 1, [])
    assert d.cli_json("contact", "show", "bob@acme.test")["name"] == "Боб Иванов"

    # --strict: one bad row, nothing committed, exit 1.
    (tmp_path / "strict.csv").write_text("email,name\nnew@acme.test,New\nbroken,B\n")
    r = d.cli("contact", "import", str(tmp_path / "strict.csv"), "--strict", check=False)
    assert r.returncode == 1 and "row 3: 'broken' is not an email address" in r.stdout
    assert "new@acme.test" not in emails(d)

    number = add_case(database, "jane@acme.test", "Printer on fire")
    add_case(database, "jane@acme.test", "Toner")
    add_case(database, "ann@beta.test", "Old", stage="closed")
    set_last_mail(database, "ann@beta.test", datetime(2024, 6, 1, tzinfo=UTC))
    set_last_mail(database, "jane@acme.test", datetime(2025, 2, 1, tzinfo=UTC))

    assert emails(d) == ["ann@beta.test", "bob@acme.test", "jane@acme.test", "zed@gmail.com"]
    assert emails(d, "--org", "acme.test") == ["bob@acme.test"]
    assert emails(d, "--org", "acme inc") == ["jane@acme.test"]
    assert emails(d, "--tag", "vip") == ["ann@beta.test", "jane@acme.test"]
    assert emails(d, "--field", "plan=PRO", "--field", "seats=3") == ["ann@beta.test"]
    assert emails(d, "--type", "partner") == ["bob@acme.test"]
    assert emails(d, "--last-mail-before", "2025-01-01") == ["ann@beta.test"]
    assert emails(d, "--last-mail-after", "2025-01-01") == ["jane@acme.test"]
    assert emails(d, "--open-cases-min", "1") == ["jane@acme.test"]
    assert emails(d, "--segment", "pro-customers") == ["ann@beta.test", "jane@acme.test"]
    assert emails(d, "--segment", "pro-customers", "--tag", "beta") == ["jane@acme.test"]
    assert emails(d, "--segment", "busy") == ["jane@acme.test"]
    assert d.cli_json("contact", "list", "--org", "Acme Inc")[0]["open_cases"] == 2
    r = d.cli("contact", "list", "--segment", "nope", check=False)
    assert r.returncode == 1 and "no segment 'nope' (segments: pro-customers, busy)" in r.stderr
    r = d.cli("contact", "list", "--field", "plan=gold", check=False)
    assert r.returncode == 1 and "field 'plan': 'gold' is not one of free, pro, enterprise" in r.stderr
    shown = d.cli_json("contact", "show", "jane@acme.test")
    assert shown["cases"][0]["number"] == number
    assert {c["subject"]: c["stage"] for c in shown["cases"]} == {"Printer on fire": "open", "Toner": "open"}

    listed = list(csv.reader(io.StringIO(d.cli("contact", "list", "--tag", "vip", "--csv").stdout)))
    assert listed[0] == ["email", "name", "organization", "type", "state", "tags", "plan", "joined", "seats"]
    assert listed[2] == ["jane@acme.test", "Jane Roe", "Acme Inc", "customer", "active", "beta; vip:red", "pro",
                         "2024-01-15", "10"]
    assert d.cli("contact", "export", "--format", "csv", "--org", "acme.test").stdout.splitlines()[1] == \
        "bob@acme.test,Боб Иванов,acme.test,partner,active,,pro,,"

    out = tmp_path / "contacts.xlsx"
    d.cli("contact", "export", "--format", "xlsx", "--output", str(out), "--segment", "pro-customers")
    ws = load_workbook(out).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == ("email", "name", "organization", "type", "state", "tags", "plan", "joined", "seats")
    assert rows[1][:7] == ("ann@beta.test", "Ann", "beta.test", "customer", "active", "vip", "pro")
    assert rows[1][8] == 3 and rows[2][7] == datetime(2024, 1, 15) and len(rows) == 3

    # The exported CSV imports back unchanged: the format round-trips.
    out_csv = tmp_path / "all.csv"
    d.cli("contact", "export", "--format", "csv", "--output", str(out_csv))
    r = d.cli_json("contact", "import", str(out_csv))
    assert (r["created"], r["updated"], r["rejected"], r["warnings"]) == (0, 4, [], [])
    assert d.cli_json("contact", "show", "jane@acme.test")["tags"] == jane["tags"]


def test_contacts_and_organizations_by_hand(database: Database, tmp_path: Path) -> None:
    d = desk(database, tmp_path)
    d.cli("org", "add", "Acme Inc", "--domain", "acme.test", "--domain", "acme.io", "--type", "customer",
          "--field", "tier", "gold")
    r = d.cli("org", "add", "Other", "--domain", "ACME.io", check=False)
    assert r.returncode == 1 and "domain acme.io already belongs to organization 'Acme Inc'" in r.stderr
    r = d.cli("org", "add", "Mail", "--domain", "gmail.com", check=False)
    assert r.returncode == 1 and "gmail.com is a free-mail domain" in r.stderr
    r = d.cli("org", "add", "Bad", "--field", "tier", "bronze", check=False)
    assert r.returncode == 1 and "field 'tier': 'bronze' is not one of gold, silver" in r.stderr
    d.cli("org", "add", "Globex", "--domain", "globex.test")

    d.cli("contact", "add", "Jane@Acme.IO", "--name", "Jane", "--field", "plan", "pro", "--tag", "vip:#f00",
          "--tag", "beta")
    r = d.cli("contact", "add", "jane@acme.io", check=False)
    assert r.returncode == 1 and "contact jane@acme.io already exists" in r.stderr
    r = d.cli("contact", "add", "joe@acme.test", "--field", "joined", "last week", check=False)
    assert r.returncode == 1 and "field 'joined': 'last week' is not a date (write YYYY-MM-DD)" in r.stderr
    r = d.cli("contact", "add", "joe@acme.test", "--type", "vendor", check=False)
    assert r.returncode == 1 and "type 'vendor' is not one of customer, partner, internal" in r.stderr
    d.cli("contact", "add", "lone@newco.test", "--org", "Globex", "--type", "partner")
    assert d.cli_json("contact", "show", "lone@newco.test")["organization"]["name"] == "Globex"

    # Tags: colors, recoloring, removing; '-tag' is a word, not an option.
    assert d.cli("contact", "tag", "jane@acme.io", "-beta", "+vip:green", "+new").stdout.strip() == \
        "jane@acme.io: -beta +vip:green +new"
    r = d.cli("contact", "tag", "jane@acme.io", "-gone", check=False)
    assert r.returncode == 1 and "has no tag 'gone'" in r.stderr
    r = d.cli("contact", "tag", "jane@acme.io", "+x:not-a-color", check=False)
    assert r.returncode == 1 and "'not-a-color' is not a color" in r.stderr

    d.cli("contact", "note", "jane@acme.io", "Prefers phone calls", "--author", "alice@example.com")
    d.cli("contact", "note", "jane@acme.io", "Renewal in May", "--author", "bob@example.com")
    number = add_case(database, "jane@acme.io", "Invoice missing")
    jane = d.cli_json("contact", "show", "jane@acme.io")
    assert jane["tags"] == [{"tag": "new", "color": None}, {"tag": "vip", "color": "green"}]
    assert [(n["author"], n["body"]) for n in jane["notes"]] == [("alice@example.com", "Prefers phone calls"),
                                                                 ("bob@example.com", "Renewal in May")]
    assert jane["cases"] == [{"number": number, "subject": "Invoice missing", "stage": "open", "role": "requester"}]
    text = d.cli("contact", "show", "jane@acme.io").stdout
    assert "vip (green)" in text and "Prefers phone calls" in text and f"#{number}" in text

    acme = d.cli_json("org", "show", "acme.test")
    assert (acme["name"], acme["type"], acme["fields"]) == ("Acme Inc", "customer", {"tier": "gold"})
    assert acme["domains"] == ["acme.test", "acme.io"] and [c["email"] for c in acme["contacts"]] == ["jane@acme.io"]
    assert [c["number"] for c in acme["open_cases"]] == [number]

    # Moving a contact; changing its state and fields; every value checked.
    d.cli("contact", "set", "jane@acme.io", "--org", "globex.test", "--state", "inactive", "--field", "seats", "7",
          "--field", "plan", "")
    jane = d.cli_json("contact", "show", "jane@acme.io")
    assert (jane["organization"]["name"], jane["state"], jane["fields"]) == ("Globex", "inactive", {"seats": 7})
    assert d.cli_json("org", "show", "Acme Inc")["contacts"] == []
    r = d.cli("contact", "set", "jane@acme.io", "--field", "seats", "many", check=False)
    assert r.returncode == 1 and "field 'seats': 'many' is not a number" in r.stderr
    r = d.cli("contact", "set", "jane@acme.io", "--org", "nowhere.test", check=False)
    assert r.returncode == 1 and "no organization 'nowhere.test'" in r.stderr
    d.cli("contact", "set", "jane@acme.io", "--org", "none")
    assert d.cli_json("contact", "show", "jane@acme.io")["organization"] is None

    # Domains move between organizations only once released.
    r = d.cli("org", "add-domain", "Globex", "acme.io", check=False)
    assert r.returncode == 1 and "already belongs to organization 'Acme Inc'" in r.stderr
    d.cli("org", "remove-domain", "Acme Inc", "acme.io")
    d.cli("org", "add-domain", "Globex", "acme.io")
    r = d.cli("org", "remove-domain", "Acme Inc", "nope.test", check=False)
    assert r.returncode == 1 and "nope.test is not a domain of 'Acme Inc' (its domains: acme.test)" in r.stderr
    d.cli("org", "set", "globex.test", "--name", "Globex Corp", "--field", "tier", "silver")
    r = d.cli("org", "set", "Globex Corp", "--name", "acme inc", check=False)
    assert r.returncode == 1 and "organization 'acme inc' already exists" in r.stderr
    listed = {o["name"]: o for o in d.cli_json("org", "list")}
    assert listed["Globex Corp"]["domains"] == ["globex.test", "acme.io"]
    assert listed["Globex Corp"]["fields"] == {"tier": "silver"} and listed["Globex Corp"]["contacts"] == 1
    assert listed["Acme Inc"]["open_cases"] == 1
    d.cli("contact", "add", "new@acme.io")  # a new address of the moved domain joins its new organization
    assert d.cli_json("contact", "show", "new@acme.io")["organization"]["name"] == "Globex Corp"


def test_ten_thousand_rows_through_the_cli(database: Database, tmp_path: Path) -> None:
    d = Daemon.with_config(tmp_path, database.url, "maildir://outbox",
                           extra='[[contact_fields]]\nname = "plan"\ntype = "choice"\n'
                                 'choices = ["free", "pro", "enterprise"]\n'
                                 '[[contact_fields]]\nname = "joined"\ntype = "date"\n'
                                 '[[contact_fields]]\nname = "seats"\ntype = "number"\n')
    text, bad = ten_thousand_rows()
    (tmp_path / "big.csv").write_text(text)
    d.cli("db", "upgrade")
    started = time.monotonic()
    r = d.cli("contact", "import", str(tmp_path / "big.csv"), "--json")
    elapsed = time.monotonic() - started
    result = json.loads(r.stdout)
    assert (result["created"], result["updated"]) == (9_950, 0)
    assert [x["row"] for x in result["rejected"]] == bad
    assert elapsed < 20, f"the import took {elapsed:.1f}s"
