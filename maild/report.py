"""`maild report` (SPEC §13, issue 7 point 8): what the desk did in a period, for a manager.

Pure: plain case rows and the config in, a JSON-ready dict out (`build_report`), and renderers
of that dict as an aligned text table, CSV and a self-contained HTML page with SVG charts. The
CLI (maild.cli.report) reads the rows from the database.

What is counted, and when — each fact counts in the period it happened in:
- opened: `created_at` in the period; closed: `resolved_at` in the period (set when a case
  reaches resolved or closed; for a resolved/closed case without it, `updated_at`);
- first-response time (created_at -> first_response_at) counts for the responses given in the
  period, resolution time (created_at -> resolved) for the cases resolved in it; both in
  business time of the case's calendar (its contract's, else `[sla] calendar`, else 24x7);
- SLA, per clock (first_response, resolution): breached if the timer raised
  "<clock>:sla_breached" or the clock stopped after its due time; met if it stopped in time; a
  clock stopped while the case was pending (paused) was in time if business time was left on
  it; a still-running clock is not counted, unless it already broke (then at its due time).
The period is a range of UTC dates, both ends included.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Any

from maild.config import Config
from maild.domain.stages import DONE_STAGES
from maild.rules.calendar import ALWAYS, BusinessCalendar, calendars_by_name
from maild.spreadsheet import safe_cell

CLOCKS = ("first_response", "resolution")
MET, BREACHED = "met", "breached"
NO_QUEUE, NO_ORGANIZATION, NO_CONTRACT, ALL = "(no queue)", "(no organization)", "(no contract)", "(all)"
CSV_COLUMNS = ("section", "name", "opened", "closed", "count", "median_hours", "p90_hours",
               "met", "breached", "met_percent")


@dataclass(frozen=True)
class CaseRow:
    """The facts of one case a report needs (aware UTC datetimes)."""

    number: int
    created_at: datetime
    queue: str | None = None
    organization: str | None = None
    contract: str | None = None
    stage: str = "new"
    priority: str = "normal"
    type: str = "question"
    updated_at: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    first_response_due_at: datetime | None = None
    due_at: datetime | None = None
    sla_events_sent: Sequence[str] = ()
    sla_remaining: Mapping[str, float] = field(default_factory=dict)  # clock -> business seconds left, if paused

    @property
    def closed_at(self) -> datetime | None:
        if self.resolved_at is not None:
            return self.resolved_at
        return self.updated_at if self.stage in DONE_STAGES else None

    def stopped_at(self, clock: str) -> datetime | None:
        return self.first_response_at if clock == "first_response" else self.closed_at

    def due(self, clock: str) -> datetime | None:
        return self.first_response_due_at if clock == "first_response" else self.due_at


@dataclass(frozen=True)
class Period:
    """UTC dates `first` .. `last`, both included; as instants: [start, end)."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"the period ends ({self.last}) before it starts ({self.first})")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), tzinfo=UTC)

    def contains(self, moment: datetime | None) -> bool:
        return moment is not None and self.start <= moment < self.end


def default_period(today: date, days: int = 30) -> Period:
    """The last `days` days up to and including `today`."""
    return Period(today - timedelta(days=days - 1), today)


# --- computations -----------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (so the 50th
    of an even count is the mean of the middle two); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def calendar_for(cfg: Config, calendars: Mapping[str, BusinessCalendar], contract: str | None) -> BusinessCalendar:
    """The calendar a case's clocks run on: its contract's, else `[sla] calendar`, else 24x7."""
    found = cfg.contract(contract) if contract else None
    name = found.calendar if found is not None else cfg.sla.calendar
    return calendars.get(name) or calendars.get(ALWAYS) or BusinessCalendar.always()


def business_seconds(calendar: BusinessCalendar, start: datetime, end: datetime | None) -> float | None:
    """Business time from `start` to `end` in seconds; None while `end` has not happened."""
    if end is None:
        return None
    return calendar.elapsed(start, end).total_seconds()


def sla_outcome(row: CaseRow, clock: str) -> tuple[str, datetime] | None:
    """("met" | "breached", when that was decided) for one clock of a case, or None if not counted."""
    stopped = row.stopped_at(clock)
    due = row.due(clock)
    flagged = f"{clock}:sla_breached" in (row.sla_events_sent or ())
    if stopped is None:
        return (BREACHED, due or row.created_at) if flagged else None
    if flagged:
        return BREACHED, stopped
    remaining = (row.sla_remaining or {}).get(clock)
    if remaining is not None:  # stopped while paused (pending): the due time on the case is stale
        return (MET if float(remaining) > 0 else BREACHED), stopped
    if due is None:
        return None
    return (MET if stopped <= due else BREACHED), stopped


def _stats(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "median_seconds": median(values), "p90_seconds": percentile(values, 90)}


def _tally(met: int, breached: int) -> dict[str, Any]:
    decided = met + breached
    return {"met": met, "breached": breached, "met_percent": round(100 * met / decided, 1) if decided else None}


def _sorted_counts(counts: dict[str | None, list[int]]) -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0] is None, (kv[0] or "").casefold()))
    return [{"name": name, "opened": o, "closed": c} for name, (o, c) in ordered]


def build_report(rows: Iterable[CaseRow], cfg: Config, period: Period,
                 calendars: Mapping[str, BusinessCalendar] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (durations in business seconds; a missing name is null)."""
    if calendars is None:
        calendars = calendars_by_name([c for c in cfg.calendars if c is not None])
    by_queue: dict[str | None, list[int]] = {}
    by_org: dict[str | None, list[int]] = {}
    times: dict[str, dict[str | None, list[float]]] = {clock: {} for clock in CLOCKS}
    sla: dict[str | None, dict[str, list[int]]] = {
        c.name: {clock: [0, 0] for clock in CLOCKS} for c in cfg.contracts if c is not None}
    opened = closed = 0
    for row in rows:
        is_opened, is_closed = period.contains(row.created_at), period.contains(row.closed_at)
        if is_opened or is_closed:
            opened += is_opened
            closed += is_closed
            for key, table in ((row.queue, by_queue), (row.organization, by_org)):
                counts = table.setdefault(key, [0, 0])
                counts[0] += is_opened
                counts[1] += is_closed
        calendar = calendar_for(cfg, calendars, row.contract)
        for clock in CLOCKS:
            stopped = row.stopped_at(clock)
            if period.contains(stopped):
                seconds = business_seconds(calendar, row.created_at, stopped)
                times[clock].setdefault(row.queue, []).append(seconds or 0.0)
            outcome = sla_outcome(row, clock)
            if outcome is not None and period.contains(outcome[1]):
                contract = cfg.contract(row.contract) if row.contract else None
                name = contract.name if contract is not None else row.contract
                sla.setdefault(name, {c: [0, 0] for c in CLOCKS})[clock][outcome[0] == BREACHED] += 1
    queues = sorted({*times["first_response"], *times["resolution"]},
                    key=lambda q: (q is None, (q or "").casefold()))
    configured = [c.name for c in sorted((c for c in cfg.contracts if c is not None), key=lambda c: -c.rating)]
    others = sorted((n for n in sla if n not in configured and n is not None), key=str.casefold)
    contracts = configured + others + ([None] if None in sla else [])
    overall = {clock: [sum(sla[n][clock][i] for n in contracts) for i in (0, 1)] for clock in CLOCKS}
    return {
        "period": {"from": period.first.isoformat(), "to": period.last.isoformat(), "timezone": "UTC"},
        "totals": {"opened": opened, "closed": closed},
        "by_queue": _sorted_counts(by_queue),
        "by_organization": _sorted_counts(by_org),
        "times": {
            "unit": "business seconds",
            **{clock: {"all": _stats([v for vs in times[clock].values() for v in vs]),
                       "by_queue": [{"name": q, **_stats(times[clock].get(q, []))} for q in queues]}
               for clock in CLOCKS},
        },
        "sla": {
            "all": {clock: _tally(*overall[clock]) for clock in CLOCKS}
            | {"total": _tally(sum(overall[c][0] for c in CLOCKS), sum(overall[c][1] for c in CLOCKS))},
            "by_contract": [
                {"contract": name, **{clock: _tally(*sla[name][clock]) for clock in CLOCKS},
                 "total": _tally(sum(sla[name][c][0] for c in CLOCKS), sum(sla[name][c][1] for c in CLOCKS))}
                for name in contracts],
        },
    }


# --- formatting helpers -----------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    """Business time for people: "45s", "12m", "3h 05m"; hours are not folded into days, because
    a business day is not 24 hours."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.2f}"


def _label(name: str | None, missing: str) -> str:
    return missing if name is None else str(name)


def _time_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(queue label, first-response stats, resolution stats), the overall line first."""
    t = report["times"]
    rows = [(ALL, t["first_response"]["all"], t["resolution"]["all"])]
    for fr, res in zip(t["first_response"]["by_queue"], t["resolution"]["by_queue"], strict=True):
        rows.append((_label(fr["name"], NO_QUEUE), fr, res))
    return rows


def _sla_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(_label(c["contract"], NO_CONTRACT), c) for c in report["sla"]["by_contract"]]
    return [*rows, (ALL, report["sla"]["all"])]


# --- text -------------------------------------------------------------------------------------

def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))

    out = [line(headers).rstrip(), "  " + "  ".join("-" * w for w in widths)]
    out += [line(r).rstrip() for r in rows] or ["  (none)"]
    return out


def render_text(report: dict[str, Any]) -> str:
    p, totals = report["period"], report["totals"]
    out = [f"maild report {p['from']} .. {p['to']} (UTC dates, inclusive)",
           f"Cases opened: {totals['opened']}   closed: {totals['closed']}", ""]
    for title, key, missing, what in (("Cases by queue", "by_queue", NO_QUEUE, "Queue"),
                                      ("Cases by organization", "by_organization", NO_ORGANIZATION, "Organization")):
        out.append(title)
        out += _text_table([what, "Opened", "Closed"],
                           [[_label(r["name"], missing), str(r["opened"]), str(r["closed"])] for r in report[key]],
                           [False, True, True])
        out.append("")
    out.append("Response times (business hours of each case's calendar)")
    out += _text_table(
        ["Queue", "Responses", "1st resp. median", "1st resp. p90", "Resolved", "Resolution median",
         "Resolution p90"],
        [[name, str(fr["count"]), format_duration(fr["median_seconds"]), format_duration(fr["p90_seconds"]),
          str(res["count"]), format_duration(res["median_seconds"]), format_duration(res["p90_seconds"])]
         for name, fr, res in _time_rows(report)],
        [False, True, True, True, True, True, True])
    out += ["", "SLA per contract (met / breached)"]
    out += _text_table(
        ["Contract", "1st resp. met", "breached", "met %", "Resolution met", "breached", "met %", "Total met %"],
        [[name, str(s["first_response"]["met"]), str(s["first_response"]["breached"]),
          _percent(s["first_response"]["met_percent"]), str(s["resolution"]["met"]),
          str(s["resolution"]["breached"]), _percent(s["resolution"]["met_percent"]),
          _percent(s["total"]["met_percent"])] for name, s in _sla_rows(report)],
        [False, True, True, True, True, True, True, True])
    return "\n".join(out) + "\n"


# --- CSV --------------------------------------------------------------------------------------

def render_csv(report: dict[str, Any]) -> str:
    """One CSV; `section` says what a row is, and only that section's columns are filled:
    totals / by_queue / by_organization (opened, closed); first_response_time / resolution_time
    per queue and "(all)" (count, median_hours, p90_hours in business hours); sla_first_response /
    sla_resolution / sla_total per contract and "(all)" (met, breached, met_percent)."""
    rows: list[dict[str, Any]] = [{"section": "totals", "name": ALL, **report["totals"]}]
    for section, key, missing in (("by_queue", "by_queue", NO_QUEUE),
                                  ("by_organization", "by_organization", NO_ORGANIZATION)):
        for r in report[key]:
            rows.append({"section": section, "name": _label(r["name"], missing),
                         "opened": r["opened"], "closed": r["closed"]})
    time_rows = _time_rows(report)
    for section, index in (("first_response_time", 1), ("resolution_time", 2)):
        for entry in time_rows:
            name, stats = entry[0], entry[index]
            rows.append({"section": section, "name": name, "count": stats["count"],
                         "median_hours": _hours(stats["median_seconds"]),
                         "p90_hours": _hours(stats["p90_seconds"])})
    sla_rows = _sla_rows(report)
    for section, clock in (("sla_first_response", "first_response"), ("sla_resolution", "resolution"),
                           ("sla_total", "total")):
        for name, s in sla_rows:
            tally = s[clock]
            rows.append({"section": section, "name": name, "met": tally["met"], "breached": tally["breached"],
                         "met_percent": "" if tally["met_percent"] is None else tally["met_percent"]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:  # names of queues, organizations and contracts are input (SPEC §7)
        writer.writerow({key: safe_cell(value) for key, value in row.items()})
    return buf.getvalue()


# --- HTML -------------------------------------------------------------------------------------

OPENED_COLOR, CLOSED_COLOR = "#4e79a7", "#59a14f"
MET_COLOR, BREACHED_COLOR, EMPTY_COLOR = "#59a14f", "#e15759", "#e6e8eb"
LABEL_WIDTH, BAR_WIDTH, VALUE_WIDTH = 190, 380, 240
CHART_WIDTH = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg(height: int, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
            f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="{_e(label)}" '
            'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="13">'
            f'<title>{_e(label)}</title>' + "".join(body) + "</svg>")


def _legend(y: int, items: Sequence[tuple[str, str]]) -> list[str]:
    out, x = [], LABEL_WIDTH
    for name, color in items:
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text x="{x + 18}" y="{y + 10}" fill="#444">{_e(name)}</text>')
        x += 30 + 8 * len(name)
    return out


def _queue_chart(report: dict[str, Any]) -> str:
    rows = report["by_queue"]
    if not rows:
        return '<p class="empty">No case was opened or closed in this period.</p>'
    top = max(max(r["opened"], r["closed"]) for r in rows) or 1
    bar, gap, group = 14, 3, 16
    body = _legend(4, [("opened", OPENED_COLOR), ("closed", CLOSED_COLOR)])
    y = 28
    for r in rows:
        name = _label(r["name"], NO_QUEUE)
        body.append(f'<text x="{LABEL_WIDTH - 10}" y="{y + bar + 2}" text-anchor="end" fill="#222">'
                    f'<title>{_e(name)}</title>{_e(_short(name))}</text>')
        for i, (what, color) in enumerate((("opened", OPENED_COLOR), ("closed", CLOSED_COLOR))):
            value = r[what]
            yy = y + i * (bar + gap)
            width = round(BAR_WIDTH * value / top, 1)
            body.append(f'<rect x="{LABEL_WIDTH}" y="{yy}" width="{max(width, 1.5)}" height="{bar}" rx="2" '
                        f'fill="{color}"><title>{_e(name)}: {value} {what}</title></rect>'
                        f'<text x="{LABEL_WIDTH + width + 6}" y="{yy + bar - 2}" fill="#444">{value}</text>')
        y += 2 * bar + gap + group
    return _svg(y, "Cases opened and closed per queue", body)


def _sla_chart(report: dict[str, Any]) -> str:
    contracts = report["sla"]["by_contract"]
    if not contracts:
        return '<p class="empty">No contract is configured and no SLA clock ended in this period.</p>'
    bar, gap, group = 16, 4, 18
    body = _legend(4, [("met", MET_COLOR), ("breached", BREACHED_COLOR)])
    y = 28
    for c in contracts:
        name = _label(c["contract"], NO_CONTRACT)
        body.append(f'<text x="{LABEL_WIDTH - 10}" y="{y + bar - 3}" text-anchor="end" fill="#222" '
                    f'font-weight="600"><title>{_e(name)}</title>{_e(_short(name))}</text>')
        for i, (clock, caption) in enumerate((("first_response", "first response"), ("resolution", "resolution"))):
            t = c[clock]
            yy = y + i * (bar + gap)
            body.append(f'<rect x="{LABEL_WIDTH}" y="{yy}" width="{BAR_WIDTH}" height="{bar}" rx="2" '
                        f'fill="{EMPTY_COLOR}"/>')
            decided = t["met"] + t["breached"]
            tip = f"{name}, {caption}: {t['met']} met, {t['breached']} breached"
            met_w = round(BAR_WIDTH * t["met"] / decided, 1) if decided else 0
            if t["met"]:
                body.append(f'<rect x="{LABEL_WIDTH}" y="{yy}" width="{met_w}" height="{bar}" rx="2" '
                            f'fill="{MET_COLOR}"><title>{_e(tip)}</title></rect>')
            if t["breached"]:
                body.append(f'<rect x="{LABEL_WIDTH + met_w}" y="{yy}" width="{round(BAR_WIDTH - met_w, 1)}" '
                            f'height="{bar}" rx="2" fill="{BREACHED_COLOR}"><title>{_e(tip)}</title></rect>')
            text = f"{t['met_percent']:g}% met ({t['met']}/{decided})" if decided else "no data"
            body.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 8}" y="{yy + bar - 3}" fill="#444" font-size="12">'
                        f'{caption}: {_e(text)}</text>')
        y += 2 * bar + gap + group
    return _svg(y + 4, "SLA met and breached per contract", body)


NUM = ' class="num"'


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool]) -> str:
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(f"<{tag}{NUM if n else ''}>{_e(v)}</{tag}>" for v, n in zip(values, numeric, strict=True))

    if not rows:
        return '<p class="empty">None in this period.</p>'
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', headers)}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f5f6f8}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 12px}
.sub{color:#666;margin:0 0 20px}
.kpis{display:flex;flex-wrap:wrap;gap:12px}
.kpi{background:#fff;border-radius:8px;padding:14px 18px;min-width:140px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi .v{font-size:26px;font-weight:650}.kpi .k{color:#666;font-size:13px}
.card{background:#fff;border-radius:8px;padding:16px;box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px;margin-top:12px}
th,td{padding:6px 10px;border-bottom:1px solid #e6e8eb;text-align:left}
th{color:#555;font-weight:600;background:#fafbfc}.num{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#777}.note{color:#777;font-size:12px;margin-top:28px}
"""


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: key figures, two SVG charts and the tables; every name escaped."""
    p, totals, sla_all = report["period"], report["totals"], report["sla"]["all"]
    t = report["times"]
    kpis = [("opened", totals["opened"]), ("closed", totals["closed"]),
            ("median first response", format_duration(t["first_response"]["all"]["median_seconds"])),
            ("median resolution", format_duration(t["resolution"]["all"]["median_seconds"])),
            ("SLA met", _percent(sla_all["total"]["met_percent"]))]
    kpi_html = "".join(f'<div class="kpi"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
                       for k, v in kpis)
    counts = {key: _html_table([what, "Opened", "Closed"],
                               [[_label(r["name"], missing), r["opened"], r["closed"]] for r in report[key]],
                               [False, True, True])
              for key, what, missing in (("by_queue", "Queue", NO_QUEUE),
                                         ("by_organization", "Organization", NO_ORGANIZATION))}
    times = _html_table(
        ["Queue", "Responses", "First response median", "p90", "Resolved", "Resolution median", "p90"],
        [[name, fr["count"], format_duration(fr["median_seconds"]), format_duration(fr["p90_seconds"]),
          res["count"], format_duration(res["median_seconds"]), format_duration(res["p90_seconds"])]
         for name, fr, res in _time_rows(report)],
        [False, True, True, True, True, True, True])
    sla = _html_table(
        ["Contract", "First response met", "breached", "met %", "Resolution met", "breached", "met %", "Total met %"],
        [[name, s["first_response"]["met"], s["first_response"]["breached"],
          _percent(s["first_response"]["met_percent"]), s["resolution"]["met"], s["resolution"]["breached"],
          _percent(s["resolution"]["met_percent"]), _percent(s["total"]["met_percent"])]
         for name, s in _sla_rows(report)],
        [False, True, True, True, True, True, True, True])
    title = f"Help desk report {p['from']} – {p['to']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="sub">UTC dates {_e(p['from'])} to {_e(p['to'])}, both included. Times are business hours of each case's
calendar.</p>
<section class="kpis">{kpi_html}</section>
<h2>Cases opened and closed per queue</h2>
<div class="card">{_queue_chart(report)}{counts['by_queue']}</div>
<h2>SLA per contract</h2>
<div class="card">{_sla_chart(report)}{sla}</div>
<h2>Response and resolution times</h2>
<div class="card">{times}</div>
<h2>Cases per organization</h2>
<div class="card">{counts['by_organization']}</div>
<p class="note">A first response counts in the period it was given, a resolution when the case was resolved, an SLA
clock when it stopped (or, if it broke while still running, when it broke). Generated by maild.</p>
</main>
</body>
</html>
"""


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {"text": render_text, "csv": render_csv, "html": render_html}
