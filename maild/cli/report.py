"""`maild report`: what the desk did in a period, as a table, CSV, JSON or an HTML page."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from maild.cli.common import config_option, engine, load_for_reading, print_json
from maild.domain.stages import DONE_STAGES
from maild.report import CaseRow, Period, build_report, default_period, render_csv, render_html, render_text

DATE = click.DateTime(formats=["%Y-%m-%d"])

HELP = """Cases opened and closed by queue and organization, median and p90
first-response and resolution times in business hours (overall and per
queue), and SLA met/breached per contract.

\b
The period is a range of UTC dates, both included (default: the last 30
days up to today). Each fact counts in the period it happened in: a case
when it was opened and when it was resolved, a first response when it was
given, an SLA clock when it stopped (or, if it broke while still running,
when it broke). Running clocks that have not broken are not counted.

\b
Output: an aligned table by default, or
  --json       one object, durations in business seconds;
  --csv        one CSV; its `section` column says what a row is:
               totals, by_queue, by_organization: opened, closed;
               first_response_time, resolution_time: count, median_hours,
                 p90_hours per queue and "(all)";
               sla_first_response, sla_resolution, sla_total: met,
                 breached, met_percent per contract and "(all)";
  --html FILE  a self-contained page with charts (with --csv or --json,
               those still go to stdout)."""


def load_rows(session: Session, period: Period) -> list[CaseRow]:
    """The cases that may count in `period` (a superset; build_report decides exactly)."""
    from maild.store.models import Case, Organization

    start, end = period.start, period.end
    query = (
        select(Case.number, Case.created_at, Case.queue, Organization.name, Case.contract, Case.stage,
               Case.priority, Case.type, Case.updated_at, Case.first_response_at, Case.resolved_at,
               Case.first_response_due_at, Case.due_at, Case.sla_events_sent, Case.sla_remaining)
        .outerjoin(Organization, Organization.id == Case.organization_id)
        .where(Case.created_at < end,
               or_(Case.created_at >= start, Case.first_response_at >= start, Case.resolved_at >= start,
                   Case.first_response_due_at >= start, Case.due_at >= start,
                   and_(Case.stage.in_(DONE_STAGES), Case.updated_at >= start)))
        .order_by(Case.number)
    )
    return [CaseRow(number=r[0], created_at=r[1], queue=r[2], organization=r[3], contract=r[4], stage=r[5],
                    priority=r[6], type=r[7], updated_at=r[8], first_response_at=r[9], resolved_at=r[10],
                    first_response_due_at=r[11], due_at=r[12], sla_events_sent=tuple(r[13] or ()),
                    sla_remaining=dict(r[14] or {}))
            for r in session.execute(query)]


def _period(first: datetime | None, last: datetime | None, today: date) -> Period:
    if first is None and last is None:
        return default_period(today)
    last_day = last.date() if last is not None else today
    first_day = first.date() if first is not None else default_period(last_day).first
    if last_day < first_day:
        raise click.BadParameter(f"--to {last_day} is before --from {first_day}", param_hint="--from/--to")
    return Period(first_day, last_day)


@click.command(help=HELP, short_help="Cases, response times and SLA for a period.")
@config_option
@click.option("--from", "first", type=DATE, default=None, metavar="YYYY-MM-DD",
              help="First UTC date, included; default: 29 days before --to.")
@click.option("--to", "last", type=DATE, default=None, metavar="YYYY-MM-DD",
              help="Last UTC date, included; default today.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV with a `section` column (see above).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object; durations in business seconds.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Write a self-contained HTML page with charts to FILE.")
def report(config_path: str | None, first: datetime | None, last: datetime | None, as_csv: bool, as_json: bool,
           html_file: str | None) -> None:
    from maild.rules.calendar import CalendarError, calendars_by_name
    from maild.runtime import utc_now

    if as_csv and as_json:
        raise click.UsageError("give at most one of --csv and --json")
    period = _period(first, last, utc_now().date())
    cfg = load_for_reading(config_path)
    try:
        calendars = calendars_by_name([c for c in cfg.calendars if c is not None])
    except CalendarError as e:
        raise click.ClickException(str(e)) from None
    with Session(engine(cfg, reading=True)) as session:
        rows = load_rows(session, period)
    data = build_report(rows, cfg, period, calendars)
    if html_file:
        try:
            Path(html_file).write_text(render_html(data), encoding="utf-8")
        except OSError as e:
            raise click.ClickException(f"cannot write {html_file}: {e.strerror or e}") from None
    if as_json:
        print_json(data)
    elif as_csv:
        click.echo(render_csv(data), nl=False)
    elif html_file:
        click.echo(f"report {period.first} .. {period.last} written to {html_file}")
    else:
        click.echo(render_text(data), nl=False)
