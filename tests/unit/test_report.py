"""`maild report`'s computations (maild.report): percentiles, business durations, SLA outcomes,
grouping by period, and the renderers — on plain rows, no database."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import pytest

from maild.config import CalendarConfig, Config, ContractConfig, SlaConfig
from maild.report import (
    BREACHED,
    MET,
    CaseRow,
    Period,
    build_report,
    business_seconds,
    calendar_for,
    default_period,
    format_duration,
    median,
    percentile,
    render_csv,
    render_html,
    render_text,
    sla_outcome,
)
from maild.rules.calendar import calendars_by_name

WEEKDAYS = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
HOUR = 3600.0


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def config(**overrides: object) -> Config:
    base = {
        "calendars": [CalendarConfig("office", "UTC", WEEKDAYS, ["2026-12-24"])],
        "contracts": [ContractConfig("Basic", calendar="24x7", rating=1),
                      ContractConfig("VIP", calendar="office", rating=10)],
    }
    return Config(**(base | overrides))  # type: ignore[arg-type]


# --- percentiles ------------------------------------------------------------------------------

def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 50) is None and percentile([], 90) is None and median([]) is None


def test_median_of_odd_and_even_counts() -> None:
    assert median([7.0]) == 7.0
    assert median([3.0, 1.0, 2.0]) == 2.0  # unsorted input
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5  # even: the mean of the middle two
    assert median([10.0, 20.0]) == 15.0


def test_p90_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([5.0], 90) == 5.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0


def test_percentile_outside_0_100_is_refused() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- business durations -----------------------------------------------------------------------

def test_business_hours_across_a_weekend() -> None:
    office = calendars_by_name(config().calendars)["office"]
    friday_17, monday_10 = utc(2026, 11, 20, 17), utc(2026, 11, 23, 10)
    assert business_seconds(office, friday_17, monday_10) == 2 * HOUR  # Fri 17-18 and Mon 9-10
    assert business_seconds(office, utc(2026, 11, 21, 10), utc(2026, 11, 22, 20)) == 0.0  # all weekend
    assert business_seconds(office, friday_17, None) is None
    # a holiday closes the day: Wed 23 Dec 17:00 -> Fri 25 Dec 10:00 is Wed 1 h + Fri 1 h
    assert business_seconds(office, utc(2026, 12, 23, 17), utc(2026, 12, 25, 10)) == 2 * HOUR


def test_a_case_runs_on_its_contracts_calendar_else_sla_else_24x7() -> None:
    cfg = config()
    cals = calendars_by_name(cfg.calendars)
    assert calendar_for(cfg, cals, "VIP").name == "office"
    assert calendar_for(cfg, cals, "vip").name == "office"  # contract names as the config matches them
    assert calendar_for(cfg, cals, "Basic").name == "24x7"
    assert calendar_for(cfg, cals, None).name == "24x7"
    assert calendar_for(cfg, cals, "Gone").name == "24x7"  # a contract no longer configured
    with_sla = config(sla=SlaConfig(calendar="office"))
    assert calendar_for(with_sla, cals, None).name == "office"
    assert calendar_for(with_sla, cals, "Basic").name == "24x7"


# --- SLA outcomes -----------------------------------------------------------------------------

CREATED = utc(2026, 11, 16, 9)
DUE_FR, DUE_RES = utc(2026, 11, 16, 10), utc(2026, 11, 16, 13)


def row(**kw: object) -> CaseRow:
    base: dict[str, object] = {"number": 1, "created_at": CREATED, "first_response_due_at": DUE_FR,
                               "due_at": DUE_RES}
    return CaseRow(**(base | kw))  # type: ignore[arg-type]


def test_a_clock_stopped_in_time_is_met_and_late_is_breached() -> None:
    on_time = row(first_response_at=DUE_FR, resolved_at=DUE_RES - timedelta(minutes=1), stage="resolved")
    assert sla_outcome(on_time, "first_response") == (MET, DUE_FR)  # exactly at the due time is in time
    assert sla_outcome(on_time, "resolution") == (MET, DUE_RES - timedelta(minutes=1))
    late = row(first_response_at=DUE_FR + timedelta(seconds=1), resolved_at=DUE_RES + timedelta(hours=1))
    assert sla_outcome(late, "first_response") == (BREACHED, DUE_FR + timedelta(seconds=1))
    assert sla_outcome(late, "resolution") == (BREACHED, DUE_RES + timedelta(hours=1))


def test_a_breach_event_counts_even_if_the_clock_stopped_in_time_or_still_runs() -> None:
    flagged = row(first_response_at=DUE_FR - timedelta(minutes=5), sla_events_sent=["first_response:sla_breached",
                                                                                     "resolution:sla_breached"])
    assert sla_outcome(flagged, "first_response") == (BREACHED, DUE_FR - timedelta(minutes=5))
    assert sla_outcome(flagged, "resolution") == (BREACHED, DUE_RES)  # still running: counted when it broke


def test_running_clocks_and_clocks_without_targets_are_not_counted() -> None:
    running = row(sla_events_sent=["first_response:sla_warning"])
    assert sla_outcome(running, "first_response") is None and sla_outcome(running, "resolution") is None
    no_targets = row(first_response_due_at=None, due_at=None, first_response_at=DUE_FR, resolved_at=DUE_RES)
    assert sla_outcome(no_targets, "first_response") is None and sla_outcome(no_targets, "resolution") is None


def test_a_case_resolved_while_pending_is_judged_by_the_time_it_had_left() -> None:
    # paused (pending) with 2 h left, resolved the next day: the due time on the case is stale
    paused = row(resolved_at=utc(2026, 11, 17, 15), stage="resolved", sla_remaining={"resolution": 2 * HOUR})
    assert sla_outcome(paused, "resolution") == (MET, utc(2026, 11, 17, 15))
    out_of_time = row(resolved_at=utc(2026, 11, 17, 15), stage="resolved", sla_remaining={"resolution": 0.0})
    assert sla_outcome(out_of_time, "resolution") == (BREACHED, utc(2026, 11, 17, 15))


def test_a_closed_case_without_resolved_at_closes_at_its_last_update() -> None:
    closed = row(stage="closed", updated_at=DUE_RES + timedelta(hours=2))
    assert closed.closed_at == DUE_RES + timedelta(hours=2)
    assert sla_outcome(closed, "resolution") == (BREACHED, DUE_RES + timedelta(hours=2))
    assert row(stage="open", updated_at=DUE_RES).closed_at is None


# --- periods and the whole report -------------------------------------------------------------

def test_period_is_utc_dates_inclusive() -> None:
    p = Period(date(2026, 11, 16), date(2026, 11, 22))
    assert p.contains(utc(2026, 11, 16, 0)) and p.contains(utc(2026, 11, 22, 23, 59, 59))
    assert not p.contains(utc(2026, 11, 23, 0)) and not p.contains(utc(2026, 11, 15, 23, 59)) and not p.contains(None)
    d = default_period(date(2026, 11, 30))
    assert (d.first, d.last) == (date(2026, 11, 1), date(2026, 11, 30))  # 30 days with today
    with pytest.raises(ValueError):
        Period(date(2026, 11, 2), date(2026, 11, 1))


def sample_rows() -> list[CaseRow]:
    return [
        # VIP (office hours): answered in 30 min, resolved in 2 business hours
        CaseRow(1, utc(2026, 11, 16, 9), queue="billing", organization="Big & Co", contract="VIP",
                stage="resolved", first_response_at=utc(2026, 11, 16, 9, 30), resolved_at=utc(2026, 11, 16, 11),
                first_response_due_at=utc(2026, 11, 16, 10), due_at=utc(2026, 11, 16, 13)),
        # VIP on Friday 17:00: answered Monday 09:30 (1.5 business hours, late), resolved Monday 10:00 (2 h)
        CaseRow(2, utc(2026, 11, 20, 17), queue="billing", organization="Big & Co", contract="VIP",
                stage="closed", first_response_at=utc(2026, 11, 23, 9, 30), resolved_at=utc(2026, 11, 23, 10),
                first_response_due_at=utc(2026, 11, 20, 18), due_at=utc(2026, 11, 23, 12)),
        # no contract, 24x7: resolved after 6 h, no SLA
        CaseRow(3, utc(2026, 11, 19, 10), queue="support", stage="resolved", resolved_at=utc(2026, 11, 19, 16)),
        # opened before the period, closed in it
        CaseRow(4, utc(2026, 11, 10, 10), queue="support", organization="Small", contract="Basic", stage="resolved",
                first_response_at=utc(2026, 11, 10, 11), resolved_at=utc(2026, 11, 17, 10),
                first_response_due_at=utc(2026, 11, 10, 12), due_at=utc(2026, 11, 11, 10)),
        # opened in the period, still open, no first response
        CaseRow(5, utc(2026, 11, 18, 12), queue=None, organization="Small", contract="Basic", stage="new",
                first_response_due_at=utc(2026, 11, 18, 14), due_at=utc(2026, 11, 19, 12)),
        # wholly outside the period
        CaseRow(6, utc(2026, 12, 1, 10), queue="support", contract="VIP", stage="resolved",
                first_response_at=utc(2026, 12, 1, 10, 5), resolved_at=utc(2026, 12, 1, 11),
                first_response_due_at=utc(2026, 12, 1, 11), due_at=utc(2026, 12, 1, 14)),
    ]


PERIOD = Period(date(2026, 11, 16), date(2026, 11, 23))


def test_report_counts_opened_and_closed_by_queue_and_organization() -> None:
    report = build_report(sample_rows(), config(), PERIOD)
    assert report["period"] == {"from": "2026-11-16", "to": "2026-11-23", "timezone": "UTC"}
    assert report["totals"] == {"opened": 4, "closed": 4}
    assert report["by_queue"] == [{"name": "billing", "opened": 2, "closed": 2},
                                  {"name": "support", "opened": 1, "closed": 2},
                                  {"name": None, "opened": 1, "closed": 0}]
    assert report["by_organization"] == [{"name": "Big & Co", "opened": 2, "closed": 2},
                                         {"name": "Small", "opened": 1, "closed": 1},
                                         {"name": None, "opened": 1, "closed": 1}]


def test_report_times_in_business_hours_overall_and_per_queue() -> None:
    times = build_report(sample_rows(), config(), PERIOD)["times"]
    fr, res = times["first_response"], times["resolution"]
    # responses given in the period: #1 (0.5 h) and #2 (1.5 business hours); #4's was before it
    assert fr["all"] == {"count": 2, "median_seconds": 1 * HOUR, "p90_seconds": pytest.approx(1.4 * HOUR)}
    assert fr["by_queue"] == [{"name": "billing", "count": 2, "median_seconds": HOUR,
                               "p90_seconds": pytest.approx(1.4 * HOUR)},
                              {"name": "support", "count": 0, "median_seconds": None, "p90_seconds": None}]
    # resolutions: #1 2 h, #2 2 h (Fri 17-18 + Mon 9-10), #3 6 h, #4 7 days on 24x7
    assert res["all"]["count"] == 4
    assert res["all"]["median_seconds"] == 4 * HOUR
    assert res["all"]["p90_seconds"] == pytest.approx((6 + 0.7 * 162) * HOUR)
    assert [(q["name"], q["count"], q["median_seconds"]) for q in res["by_queue"]] == [
        ("billing", 2, 2 * HOUR), ("support", 2, (6 + 168) / 2 * HOUR)]


def test_report_sla_per_contract_with_percentages() -> None:
    sla = build_report(sample_rows(), config(), PERIOD)["sla"]
    by_name = {c["contract"]: c for c in sla["by_contract"]}
    assert [c["contract"] for c in sla["by_contract"]] == ["VIP", "Basic"]  # configured, by rating
    assert by_name["VIP"]["first_response"] == {"met": 1, "breached": 1, "met_percent": 50.0}
    assert by_name["VIP"]["resolution"] == {"met": 2, "breached": 0, "met_percent": 100.0}
    assert by_name["VIP"]["total"] == {"met": 3, "breached": 1, "met_percent": 75.0}
    # #4: first response before the period (not counted), resolved late in it; #5 still running
    assert by_name["Basic"]["first_response"] == {"met": 0, "breached": 0, "met_percent": None}
    assert by_name["Basic"]["resolution"] == {"met": 0, "breached": 1, "met_percent": 0.0}
    assert sla["all"]["total"] == {"met": 3, "breached": 2, "met_percent": 60.0}


def test_cases_of_unknown_contracts_and_of_none_get_their_own_rows() -> None:
    rows = [CaseRow(1, utc(2026, 11, 16, 9), contract="Old", first_response_at=utc(2026, 11, 16, 10),
                    first_response_due_at=utc(2026, 11, 16, 9, 30)),
            CaseRow(2, utc(2026, 11, 16, 9), first_response_at=utc(2026, 11, 16, 10),
                    first_response_due_at=utc(2026, 11, 16, 12)),
            CaseRow(3, utc(2026, 11, 16, 9), contract="vip", first_response_at=utc(2026, 11, 16, 10),
                    first_response_due_at=utc(2026, 11, 16, 12))]
    by_contract = build_report(rows, config(), PERIOD)["sla"]["by_contract"]
    assert [(c["contract"], c["first_response"]["met"], c["first_response"]["breached"]) for c in by_contract] == [
        ("VIP", 1, 0), ("Basic", 0, 0), ("Old", 0, 1), (None, 1, 0)]


# --- renderers --------------------------------------------------------------------------------

def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(42) == "42s"
    assert format_duration(30 * 60) == "30m"
    assert format_duration(4 * HOUR) == "4h"
    assert format_duration(26 * HOUR + 5 * 60) == "26h 05m"  # no days: a business day is not 24 h


def test_text_table_is_aligned() -> None:
    text = render_text(build_report(sample_rows(), config(), PERIOD))
    assert "Cases opened: 4   closed: 4" in text
    lines = text.splitlines()
    header = lines.index("Cases by queue") + 1
    table = lines[header:header + 5]
    assert table[0].split() == ["Queue", "Opened", "Closed"]
    assert len({len(line) for line in table}) == 1  # right-aligned numbers end in one column
    assert table[2].split() == ["billing", "2", "2"] and table[4].split() == ["(no", "queue)", "1", "0"]
    assert any(line.split()[:4] == ["VIP", "1", "1", "50%"] for line in lines)


def test_csv_has_a_section_column_and_parses() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(build_report(sample_rows(), config(), PERIOD)))))
    assert {r["section"] for r in rows} == {"totals", "by_queue", "by_organization", "first_response_time",
                                            "resolution_time", "sla_first_response", "sla_resolution", "sla_total"}
    billing = next(r for r in rows if r["section"] == "by_queue" and r["name"] == "billing")
    assert (billing["opened"], billing["closed"], billing["met"]) == ("2", "2", "")
    overall = next(r for r in rows if r["section"] == "resolution_time" and r["name"] == "(all)")
    assert (overall["count"], overall["median_hours"]) == ("4", "4.00")
    vip = next(r for r in rows if r["section"] == "sla_first_response" and r["name"] == "VIP")
    assert (vip["met"], vip["breached"], vip["met_percent"]) == ("1", "1", "50.0")


class _Balance(HTMLParser):
    VOID = frozenset({"meta", "br", "img", "link", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unexpected </{tag}>")


def test_html_is_balanced_self_contained_and_escapes_every_name() -> None:
    rows = [*sample_rows(), CaseRow(9, utc(2026, 11, 17, 9), queue="<script>alert(1)</script>",
                                    organization='"Evil" <Org>', contract="<Acme & Co>")]
    cfg = config(contracts=[*config().contracts, ContractConfig("<Acme & Co>", calendar="24x7")])
    page = render_html(build_report(rows, cfg, PERIOD))
    parser = _Balance()
    parser.feed(page)
    assert parser.problems == [] and parser.stack == []
    assert page.count("<svg") == 2
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "&lt;Acme &amp; Co&gt;" in page and "<Acme" not in page
    assert "&quot;Evil&quot; &lt;Org&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_report_is_json_ready() -> None:
    report = build_report(sample_rows(), config(), PERIOD)
    assert json.loads(json.dumps(report)) == report
