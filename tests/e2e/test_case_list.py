"""`maild case list`: the queue order of SPEC §8 and its filters, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from maild.ingest.pipeline import update_case
from maild.rules.commands import Command
from maild.store.models import Case
from tests.conftest import Database
from tests.support.daemon import write_config
from tests.support.pipeline_desk import mail
from tests.unit.test_sla import ALICE, contracts_desk, put_in_contract

CONTRACTS_TOML = '''
[[calendars]]
name = "office"
timezone = "UTC"
hours = { mon = "09:00-18:00", tue = "09:00-18:00", wed = "09:00-18:00", thu = "09:00-18:00", fri = "09:00-18:00" }

[[contracts]]
name = "VIP"
team = "billing"
tag = "vip"
calendar = "office"
rating = 10
[contracts.sla]
normal = { first_response = "1h", resolution = "4h" }

[[contracts]]
name = "Basic"
team = "support"
rating = 1
[contracts.sla]
normal = { first_response = "8h", resolution = "3d" }
'''


def cli_cases(cfg: Path, *args: str) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "maild", "case", "list", "--json", "--config", str(cfg), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_open_cases_come_by_rating_priority_and_due_date(engine: Engine, database: Database, tmp_path: Path) -> None:
    desk = contracts_desk(engine, tmp_path)
    put_in_contract(desk, "VIP", "acme.test")
    put_in_contract(desk, "Basic", "globex.test")
    basic_old = desk.ingest(mail("a@globex.test", "Basic, early")).case_number
    basic_urgent = desk.ingest(mail("b@globex.test", "Basic, urgent")).case_number
    vip = desk.ingest(mail("c@acme.test", "VIP")).case_number
    none = desk.ingest(mail("d@other.test", "No contract")).case_number
    closed = desk.ingest(mail("e@acme.test", "Closed VIP")).case_number
    with desk.sessions() as s, s.begin():
        update_case(s, desk.rt, s.get(Case, basic_urgent), [Command("priority", "urgent", 0, "")], ALICE, via="cli")
        update_case(s, desk.rt, s.get(Case, closed), [Command("close", "done", 0, "")], ALICE, via="cli")
    cfg = write_config(tmp_path, db_url=database.url, outbound_url="smtp://127.0.0.1:1", smtp_port=2525,
                       extra=CONTRACTS_TOML)
    order = [c["number"] for c in cli_cases(cfg)]
    assert order == [vip, basic_urgent, basic_old, none, closed]
    assert [c["number"] for c in cli_cases(cfg, "--open")] == [vip, basic_urgent, basic_old, none]
    assert [c["number"] for c in cli_cases(cfg, "--contract", "VIP")] == [vip, closed]
    assert [c["number"] for c in cli_cases(cfg, "--organization", "acme.test", "--open")] == [vip]
    assert [c["number"] for c in cli_cases(cfg, "--tag", "vip", "--stage", "closed")] == [closed]
    assert [c["number"] for c in cli_cases(cfg, "--queue", "billing", "--open")] == [vip]
    assert cli_cases(cfg, "--assignee", "none", "--overdue") != []  # the clock is real: these are long due
    assert datetime.fromisoformat(cli_cases(cfg, "--contract", "VIP")[0]["due_at"]).hour == 12
