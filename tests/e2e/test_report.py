"""`maild report` on real databases: cases made through the pipeline at controlled times, then
the CLI run as an admin runs it (table, --csv, --json, --html)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import Engine

from maild.casework import raise_due_sla_events
from maild.config import load_config
from maild.ingest.pipeline import update_case
from maild.rules.commands import Command
from maild.store.contracts import add_client
from maild.store.models import Case, Organization, OrganizationDomain
from maild.threading.tokens import make_token, reply_address
from tests.conftest import Database
from tests.support.daemon import write_config
from tests.support.pipeline_desk import Desk, mail

ACME = "<Acme & Co>"  # a contract name that must be escaped in HTML
CONTRACTS_TOML = textwrap.dedent("""
    [[calendars]]
    name = "office"
    timezone = "UTC"
    hours = { mon = "09:00-18:00", tue = "09:00-18:00", wed = "09:00-18:00", thu = "09:00-18:00", fri = "09:00-18:00" }

    [[contracts]]
    name = "VIP"
    team = "billing"
    calendar = "office"
    rating = 10
    [contracts.sla]
    normal = { first_response = "1h", resolution = "4h" }

    [[contracts]]
    name = "<Acme & Co>"
    team = "support"
    calendar = "24x7"
    rating = 5
    [contracts.sla]
    normal = { first_response = "2h", resolution = "1d" }
    """)
PERIOD = ("--from", "2026-11-16", "--to", "2026-11-23")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


class ReportDesk:
    """A Desk with the config the CLI will read, and the moves a support team makes."""

    def __init__(self, engine: Engine, tmp: Path, database: Database):
        self.config_path = write_config(tmp, db_url=database.url, outbound_url="maildir:///dev/null",
                                        smtp_port=2525, extra=CONTRACTS_TOML)
        cfg = load_config(self.config_path)
        self.desk = Desk(engine, tmp, agents=cfg.agents, teams=cfg.teams, calendars=cfg.calendars,
                         contracts=cfg.contracts)
        self.tmp = tmp

    def organization(self, name: str, domain: str, contract: str) -> None:
        with self.desk.sessions() as s, s.begin():
            org = Organization(name=name, created_at=self.desk.now, fields={})
            org.domains.append(OrganizationDomain(domain=domain))
            s.add(org)
            s.flush()
            add_client(s, contract, org, None, self.desk.now)

    def opened(self, when: datetime, frm: str, subject: str, to: str = "support@example.com") -> int:
        self.desk.now = when
        out = self.desk.ingest(mail(frm, subject, msgid=f"{uuid.uuid4().hex}@client.test", to=to), rcpts=(to,))
        assert out.case_number is not None
        return out.case_number

    def answered(self, n: int, when: datetime, agent: str) -> None:
        token = reply_address("support@example.com", make_token(self.desk.rt.secret, n, agent))
        self.desk.now = when
        self.desk.ingest(mail(agent, f"Re: [#{n}]", "We are on it.", to=token,
                              msgid=f"{uuid.uuid4().hex}@example.com"), rcpts=(token,))
        assert self.desk.case(n).first_response_at == when

    def resolved(self, n: int, when: datetime) -> None:
        self.desk.now = when
        with self.desk.sessions() as s, s.begin():
            case = s.get(Case, n)
            _, errors = update_case(s, self.desk.rt, case, [Command("stage", "resolved", 0, "--stage resolved")],
                                    self.desk.rt.config.agents[0], via="cli")
            assert errors == []
        assert self.desk.case(n).resolved_at == when

    def tick(self, when: datetime) -> None:
        self.desk.now = when
        with self.desk.sessions() as s, s.begin():
            raise_due_sla_events(s, self.desk.rt)

    def maild(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "maild", "report", "--config", str(self.config_path), *args],
                           cwd=self.tmp, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r


@pytest.fixture
def week(engine: Engine, tmp_path: Path, database: Database) -> ReportDesk:
    """A week of the desk, Mon 16 – Mon 23 Nov 2026 (VIP on office hours, <Acme & Co> 24x7):

    #F  <Acme & Co>  opened Tue 10 Nov 10:00, resolved Tue 17 Nov 10:00 (168 h; resolution late)
    #A  VIP          Mon 16 09:00, answered 09:30 (30 m, met), resolved 11:00 (2 h, met)
    #C  <Acme & Co>  Tue 17 10:00, answered 11:00 (1 h, met), unresolved; breach raised Wed 10:00
    #D  <Acme & Co>  Wed 18 12:00, nothing since: its clocks run, not counted
    #E  no contract  Thu 19 10:00 to billing@ from gmail (no organization), resolved 16:00 by fields (6 h)
    #B  VIP          Fri 20 17:00, answered Mon 23 09:30 (1.5 business hours, late), resolved 10:00 (2 h, met)
    #G  VIP          Tue 24 09:00: after the period
    """
    d = ReportDesk(engine, tmp_path, database)
    d.organization("VIP Corp", "vip.test", "VIP")
    d.organization("Acme & <Sons>", "acme.test", ACME)
    f = d.opened(at(10, 10), "kim@acme.test", "Old trouble")
    a = d.opened(at(16, 9), "ann@vip.test", "Invoice wrong")
    d.answered(a, at(16, 9, 30), "carol@example.com")
    d.resolved(a, at(16, 11))
    c = d.opened(at(17, 10), "joe@acme.test", "Printer on fire")
    d.resolved(f, at(17, 10))
    d.answered(c, at(17, 11), "alice@example.com")
    d.tick(at(18, 10))
    assert "resolution:sla_breached" in d.desk.case(c).sla_events_sent
    d.opened(at(18, 12), "joe@acme.test", "Another thing")
    e = d.opened(at(19, 10), "pat@gmail.com", "Refund?", to="billing@example.com")
    with d.desk.sessions() as s, s.begin():
        case = s.get(Case, e)
        case.stage, case.resolved_at, case.updated_at = "resolved", at(19, 16), at(19, 16)
    b = d.opened(at(20, 17), "ben@vip.test", "Late on Friday")
    d.answered(b, at(23, 9, 30), "carol@example.com")
    d.resolved(b, at(23, 10))
    d.opened(at(24, 9), "ann@vip.test", "Next week")
    assert [d.desk.case(n).queue for n in (a, b, c, e, f)] == ["billing", "billing", "support", "billing", "support"]
    return d


def test_report_table(week: ReportDesk) -> None:
    out = week.maild(*PERIOD).stdout
    lines = out.splitlines()
    assert lines[0] == "maild report 2026-11-16 .. 2026-11-23 (UTC dates, inclusive)"
    assert "Cases opened: 5   closed: 4" in out  # #A #B #C #D #E opened; #A #B #E #F closed

    def row(first: str) -> list[str]:
        return next(line.split() for line in lines if line.split()[:1] == [first])

    assert row("billing")[:3] == ["billing", "3", "3"] and row("support")[:3] == ["support", "2", "1"]
    orgs = lines[lines.index("Cases by organization") + 3: lines.index("Cases by organization") + 6]
    assert [line.strip().rsplit(None, 2) for line in orgs] == [["VIP Corp", "2", "2"], ["Acme & <Sons>", "2", "1"],
                                                               ["(no organization)", "1", "1"]]
    times = lines[lines.index("Response times (business hours of each case's calendar)") + 3:][:3]
    # first responses: 30 m, 1 h, 1.5 h; resolutions: 2 h, 2 h, 6 h, 168 h
    assert times[0].split() == ["(all)", "3", "1h", "1h", "24m", "4", "4h", "119h", "24m"]
    assert times[1].split() == ["billing", "2", "1h", "1h", "24m", "3", "2h", "5h", "12m"]
    assert times[2].split() == ["support", "1", "1h", "1h", "1", "168h", "168h"]
    sla = lines[lines.index("SLA per contract (met / breached)") + 3:][:3]
    assert sla[0].split() == ["VIP", "1", "1", "50%", "2", "0", "100%", "75%"]
    assert sla[1].split() == ["<Acme", "&", "Co>", "1", "0", "100%", "0", "2", "0%", "33.3%"]
    assert sla[2].split() == ["(all)", "2", "1", "66.7%", "2", "2", "50%", "57.1%"]


def test_report_json(week: ReportDesk) -> None:
    data = json.loads(week.maild(*PERIOD, "--json").stdout)
    assert data["period"] == {"from": "2026-11-16", "to": "2026-11-23", "timezone": "UTC"}
    assert data["totals"] == {"opened": 5, "closed": 4}
    assert data["by_queue"] == [{"name": "billing", "opened": 3, "closed": 3},
                                {"name": "support", "opened": 2, "closed": 1}]
    assert data["by_organization"][-1] == {"name": None, "opened": 1, "closed": 1}
    fr, res = data["times"]["first_response"], data["times"]["resolution"]
    assert fr["all"] == {"count": 3, "median_seconds": 3600.0, "p90_seconds": pytest.approx(1.4 * 3600)}
    assert res["all"]["count"] == 4 and res["all"]["median_seconds"] == 4 * 3600.0
    assert [(q["name"], q["count"], q["median_seconds"]) for q in res["by_queue"]] == [
        ("billing", 3, 2 * 3600.0), ("support", 1, 168 * 3600.0)]
    contracts = {c["contract"]: c for c in data["sla"]["by_contract"]}
    assert list(contracts) == ["VIP", ACME]
    assert contracts["VIP"]["first_response"] == {"met": 1, "breached": 1, "met_percent": 50.0}
    assert contracts[ACME]["resolution"] == {"met": 0, "breached": 2, "met_percent": 0.0}
    assert data["sla"]["all"]["total"] == {"met": 4, "breached": 3, "met_percent": 57.1}


def test_report_csv(week: ReportDesk) -> None:
    rows = list(csv.DictReader(io.StringIO(week.maild(*PERIOD, "--csv").stdout)))
    assert list(rows[0]) == ["section", "name", "opened", "closed", "count", "median_hours", "p90_hours", "met",
                             "breached", "met_percent"]
    by = {(r["section"], r["name"]): r for r in rows}
    assert (by["totals", "(all)"]["opened"], by["totals", "(all)"]["closed"]) == ("5", "4")
    assert (by["by_queue", "billing"]["opened"], by["by_queue", "billing"]["closed"]) == ("3", "3")
    assert by["by_organization", "Acme & <Sons>"]["opened"] == "2"
    assert (by["first_response_time", "(all)"]["median_hours"], by["first_response_time", "(all)"]["p90_hours"]) \
        == ("1.00", "1.40")
    assert by["resolution_time", "support"]["median_hours"] == "168.00"
    acme = by["sla_total", ACME]
    assert (acme["met"], acme["breached"], acme["met_percent"]) == ("1", "2", "33.3")


class _Page(HTMLParser):
    VOID = frozenset({"meta", "br", "img", "link", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k, _ in attrs):
            self.problems.append(f"external or active content: <{tag}>")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unexpected </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_html(week: ReportDesk, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    r = week.maild(*PERIOD, "--html", str(target))
    assert str(target) in r.stdout
    page = target.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.problems == [] and parser.stack == []
    assert page.startswith("<!DOCTYPE html>") and parser.tags.count("svg") == 2
    assert "&lt;Acme &amp; Co&gt;" in page and "<Acme" not in page
    assert "Acme &amp; &lt;Sons&gt;" in page and "VIP" in page
    text = "".join(parser.text)
    assert ACME in text and "Acme & <Sons>" in text  # the names a reader sees, unescaped
    # --html with --json: the page is written and the JSON still goes to stdout
    target.unlink()
    both = week.maild(*PERIOD, "--json", "--html", str(target))
    assert json.loads(both.stdout)["totals"]["opened"] == 5 and target.exists()


def test_report_default_period_and_bad_options(week: ReportDesk) -> None:
    data = json.loads(week.maild("--json").stdout)  # the last 30 days up to today, whatever today is
    assert set(data) == {"period", "totals", "by_queue", "by_organization", "times", "sla"}
    bad = subprocess.run([sys.executable, "-m", "maild", "report", "--config", str(week.config_path),
                          "--from", "2026-11-23", "--to", "2026-11-16"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "before --from" in bad.stderr
    both = subprocess.run([sys.executable, "-m", "maild", "report", "--config", str(week.config_path), "--csv",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "at most one of --csv and --json" in both.stderr
