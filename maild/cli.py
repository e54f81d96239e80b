"""The `maild` command: a thin click layer over the library; errors a person can act on."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from maild.config import Config, ConfigError, load_config

F = TypeVar("F", bound=Callable[..., Any])


def config_option(f: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), envvar="MAILD_CONFIG",
        default=None, help="TOML config file (default: $MAILD_CONFIG, else the embedded defaults).",
    )(f)


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as e:
        for p in e.problems:
            click.echo(p, err=True)
        raise SystemExit(1) from None


def _load_for_reading(config_path: str | None) -> Config:
    """For commands that only read the database: a file that is broken elsewhere (say, a rule
    being edited) still names the database, so the desk can be looked at while it is fixed.
    The problems are printed as warnings; nothing is written with such a config."""
    try:
        return load_config(config_path)
    except ConfigError as e:
        from maild.config import salvage_database_config

        cfg = salvage_database_config(config_path) if config_path else None
        if cfg is None:
            for p in e.problems:
                click.echo(p, err=True)
            raise SystemExit(1) from None
        click.echo(f"warning: {config_path} has problems; reading the database it names "
                   f"({len(e.problems)} problem(s), see 'maild check-config')", err=True)
        return cfg


def _engine(cfg: Config, *, reading: bool = False) -> Engine:
    """The configured database with its schema checked; `reading`: for a command that only
    reads, which then takes no write lock (on SQLite it runs beside the daemon's writer)."""
    from maild.store.db import DatabaseUnavailable, SchemaBehind, database_url, make_engine, prepare_database, read_only

    try:
        engine = make_engine(database_url(cfg))
        prepare_database(engine)
    except (DatabaseUnavailable, SchemaBehind) as e:
        raise click.ClickException(str(e)) from None
    return read_only(engine) if reading else engine


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None, default=str))


# Command groups of their own modules, imported only when named: every `maild` run would
# otherwise load the CRM, contracts and reports (~0.3 s of a `maild case list`).
_ELSEWHERE = {"contract": ("maild.cli_contracts", "contract"), "contact": ("maild.cli_crm", "contact"),
              "org": ("maild.cli_crm", "org"), "report": ("maild.cli_report", "report")}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _ELSEWHERE and cmd_name not in self.commands:
            module, attr = _ELSEWHERE[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr))
        return super().get_command(ctx, cmd_name)


# SPEC §11: what maild writes (database, WAL, raw mails, attachments, outbox Maildir with its
# reply tokens) is never world-readable, whatever umask the shell or service manager gave us.
UMASK = 0o027


def restrict_umask() -> None:
    """Adds the bits of UMASK to the process's umask (a stricter one, e.g. 077, is kept)."""
    os.umask(os.umask(UMASK) | UMASK)


@click.group(cls=_Commands, help="maild: an email-first help desk. See README.md.")
def main() -> None:
    restrict_umask()  # before any subcommand opens a file; parse workers inherit it


@main.command(help="Run the daemon: SMTP receiver, outbox sender.")
@config_option
def run(config_path: str | None) -> None:
    from maild.daemon import serve
    from maild.logs import configure_logging
    from maild.store.db import DatabaseUnavailable, SchemaBehind

    configure_logging()
    cfg = _load(config_path)  # refuse to start on a bad file, listing every problem
    _check_data_dir(cfg)
    try:
        asyncio.run(serve(config_path))
    except (SchemaBehind, DatabaseUnavailable) as e:
        raise click.ClickException(f"cannot start: {e}") from None
    except OSError as e:  # a folder maild cannot write, a port taken: what, then where
        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        raise click.ClickException(f"cannot start: {what}") from None


def _check_data_dir(cfg: Config) -> None:
    """Every mail's raw bytes go under data_dir: a folder that takes no files (read-only, not
    ours) would show only at the first mail, as 451 to every sender; the start refuses it."""
    import tempfile
    from pathlib import Path

    folder = Path(cfg.data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise click.ClickException(f"cannot start: the data folder {folder}: {e.strerror or e}") from None


@main.command("check-config", help="Validate the config file; print 'ok' or every problem.")
@config_option
@click.option("--connect", is_flag=True, help="Also log in to each IMAP mailbox and report the server's answer.")
def check_config(config_path: str | None, connect: bool) -> None:
    cfg = _load(config_path)
    from maild.notify.samples import render_all_templates

    problems = render_all_templates(cfg)
    if connect:
        from maild.ingest.imap import MailboxUnavailable, probe_mailbox

        for m in cfg.mailboxes:
            if m.imap is None:
                continue
            try:
                click.echo(f"{m.address}: imap {m.imap.host}:{m.imap.port}: {probe_mailbox(cfg, m)}")
            except (MailboxUnavailable, OSError) as e:
                problems.append(f"{m.address}: imap {m.imap.host}:{m.imap.port}: {e}")
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise SystemExit(1)
    click.echo("ok")


@main.command(help="Show what maild would do with mail files, storing and sending nothing.")
@config_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
def inspect(config_path: str | None, files: tuple[str, ...], as_json: bool) -> None:
    from pathlib import Path

    from maild.inspect import inspect_file
    from maild.logs import configure_logging

    configure_logging("WARNING")  # what the pipeline logs goes to stderr; stdout is the answer
    cfg = _load(config_path)
    engine = _engine(cfg)
    for name in files:
        result = inspect_file(cfg, engine, Path(name))
        if as_json:
            _print_json(result)
            continue
        click.echo(f"{name}:")
        for key, value in result.items():
            if key != "file":
                click.echo(f"  {key}: {value}")


@main.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Bring the database schema to the newest version.")
@config_option
def db_upgrade(config_path: str | None) -> None:
    from sqlalchemy.exc import DBAPIError

    from maild.store.db import DatabaseUnavailable, database_url, failure_reason, make_engine, upgrade_database, where

    cfg = _load(config_path)
    try:
        engine = make_engine(database_url(cfg))
        upgrade_database(engine)
    except DatabaseUnavailable as e:
        raise click.ClickException(str(e)) from None
    except DBAPIError as e:
        what = f"cannot upgrade the database {where(cfg.database.url)}: {failure_reason(e)}"
        raise click.ClickException(what) from None
    click.echo("database is up to date")


@main.group(help="Cases.")
def case() -> None:
    pass


@case.command("list", help="List cases: open ones first, by contract rating, priority and due date.")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
@click.option("--stage", help="Only cases in this stage.")
@click.option("--open", "only_open", is_flag=True, help="Only new, open and pending cases.")
@click.option("--queue", help="Only this team's cases.")
@click.option("--assignee", help="Only cases assigned to this agent ('none': unassigned).")
@click.option("--organization", help="Only cases of this organization (name or domain).")
@click.option("--contract", help="Only cases under this contract.")
@click.option("--tag", help="Only cases with this tag.")
@click.option("--overdue", is_flag=True, help="Only open cases past a due date.")
def case_list(config_path: str | None, as_json: bool, stage: str | None, only_open: bool, queue: str | None,
              assignee: str | None, organization: str | None, contract: str | None, tag: str | None,
              overdue: bool) -> None:
    from datetime import UTC, datetime

    from maild.rules.commands import OPEN_STAGES
    from maild.store.models import Case, CaseTag
    from maild.store.views import case_summary, queue_order

    cfg = _load_for_reading(config_path)
    with Session(_engine(cfg, reading=True)) as session:
        q = select(Case)
        if stage:
            q = q.where(Case.stage == stage)
        if only_open or overdue:
            q = q.where(Case.stage.in_(OPEN_STAGES))
        if queue:
            q = q.where(Case.queue == queue)
        if assignee:
            q = q.where(Case.assignee.is_(None) if assignee == "none" else Case.assignee == assignee.lower())
        if organization:
            from maild.store.contracts import find_organization

            org = find_organization(session, organization)
            q = q.where(Case.organization_id == (org.id if org else -1))
        if contract:
            q = q.where(Case.contract == contract)
        if tag:
            q = q.where(Case.number.in_(select(CaseTag.case_number).where(CaseTag.tag == tag.lower())))
        if overdue:
            now = datetime.now(UTC)
            q = q.where(((Case.due_at <= now) & Case.resolved_at.is_(None))
                        | ((Case.first_response_due_at <= now) & Case.first_response_at.is_(None)))
        cases = [case_summary(c) for c in queue_order(list(session.scalars(q)), cfg)]
    if as_json:
        _print_json(cases)
        return
    for c in cases:
        due = (c["due_at"] or "")[:16]
        click.echo(f"#{c['number']:<6} {c['stage']:<9} {c['priority']:<7} {c['queue'] or '-':<10} "
                   f"{c['contract'] or '-':<10} {due:<16} {c['requester']['email']:<28} {c['subject']}")



@main.group(help="Stored mails.")
def message() -> None:
    pass


@message.command("raw", help="Write a stored mail's raw bytes, exactly as received, to stdout; by its "
                             "Message-ID (a post's message_id in `case show`).")
@config_option
@click.argument("message_id")
def message_raw(config_path: str | None, message_id: str) -> None:
    from maild.runtime import build_runtime
    from maild.store.models import Message
    from maild.store.raw_messages import raw_message

    cfg = _load_for_reading(config_path)
    wanted = message_id.strip().strip("<>")
    with Session(_engine(cfg, reading=True)) as session:
        sha256 = session.scalar(select(Message.sha256).where(Message.message_id == wanted).order_by(Message.id))
        if sha256 is None:
            raise click.ClickException(f"no stored mail has the Message-ID <{wanted}>")
        try:
            raw = raw_message(session, build_runtime(cfg, dry_run=True).raw_store, sha256)
        except KeyError:
            raise click.ClickException(f"the raw bytes of <{wanted}> (sha256 {sha256}) are missing") from None
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()

@case.command("show", help="Show one case with its posts and history.")
@config_option
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def case_show(config_path: str | None, number: int, as_json: bool) -> None:
    from maild.store.models import Case
    from maild.store.views import case_detail

    cfg = _load_for_reading(config_path)
    with Session(_engine(cfg, reading=True)) as session:
        c = session.get(Case, number)
        if c is None:
            raise click.ClickException(f"no case #{number}")
        data = case_detail(c)
    if as_json:
        _print_json(data)
        return
    click.echo(f"#{data['number']} {data['subject']}")
    for key in ("stage", "queue", "assignee", "priority", "type", "organization", "created_at"):
        click.echo(f"  {key}: {data[key]}")
    click.echo(f"  requester: {data['requester']['name']} <{data['requester']['email']}>")
    tags = ", ".join(data["tags"]) or "-"
    click.echo(f"  tags: {tags}")
    for p in data["posts"]:
        click.echo(f"\n--- {p['created_at'][:19]} {p['author']} ({p['visibility']}, {p['source']})")
        click.echo(p["body"])
        for a in p["attachments"]:
            click.echo(f"    [attachment] {a['filename']} ({a['size']} bytes, sha256 {a['sha256'][:12]}…)")
    if data["history"]:
        click.echo("\nHistory:")
        for h in data["history"]:
            how = f"rule {h['rule']!r}" if h["rule"] else h["via"]
            change = f"{h['field']}: {h['old'] or '-'} → {h['new'] or '-'}"
            click.echo(f"  {h['at'][:19]}  {change}  by {h['actor']} ({how})")


@case.command("update", help="Change a case as an admin: same checks, history and notifications as mail commands.")
@config_option
@click.argument("number", type=int)
@click.option("--stage", help="new, open, pending, resolved or closed")
@click.option("--queue", help="a team")
@click.option("--assign", help="an agent's email or name; 'none' unassigns")
@click.option("--tag", "tags", multiple=True, help="+tag adds, -tag removes (repeatable)")
@click.option("--priority", help="low, normal, high or urgent")
@click.option("--type", "case_type", help="question, incident or problem")
@click.option("--field", "fields", multiple=True, nargs=2, metavar="NAME VALUE", help="a custom field (repeatable)")
@click.option("--close", "close_reason", help="close with this reason")
@click.option("--postpone", help="Nh, Nd, Nw, Nm or YYYY-MM-DD")
@click.option("--remove-attachment", "remove", multiple=True, metavar="SHA256|NAME", help="take an attachment off")
@click.option("--as", "as_agent", help="the configured agent to act as (default: an admin)")
def case_update(config_path: str | None, number: int, stage: str | None, queue: str | None, assign: str | None,
                tags: tuple[str, ...], priority: str | None, case_type: str | None, fields: tuple[tuple[str, str], ...],
                close_reason: str | None, postpone: str | None, remove: tuple[str, ...], as_agent: str | None) -> None:
    import getpass

    from maild.config import AgentConfig
    from maild.ingest.pipeline import update_case
    from maild.rules.commands import Command
    from maild.runtime import build_runtime
    from maild.store.models import Case

    cfg = _load(config_path)
    if as_agent:
        actor = cfg.agent(as_agent)
        if actor is None:
            raise click.ClickException(f"--as {as_agent}: not a configured agent")
    else:
        actor = AgentConfig(email=f"{getpass.getuser()}@cli", name="admin", role="manager")
    wanted = [("stage", stage), ("queue", queue), ("priority", priority), ("type", case_type),
              ("postpone", postpone)]
    commands = [Command(n, v, 0, f"--{n} {v}") for n, v in wanted if v is not None]
    if assign is not None:
        commands.append(Command("unassign", "", 0, "--assign none") if assign.lower() == "none"
                        else Command("assign", assign, 0, f"--assign {assign}"))
    if tags:
        commands.append(Command("tag", " ".join(tags), 0, "--tag " + " --tag ".join(tags)))
    commands += [Command("field", f"{k} {v}", 0, f"--field {k} {v}") for k, v in fields]
    if close_reason is not None:
        commands.append(Command("close", close_reason, 0, f"--close {close_reason}"))
    if not commands and not remove:
        raise click.UsageError("nothing to change: give at least one option")
    rt = build_runtime(cfg)
    engine = _engine(cfg)
    with Session(engine) as session, session.begin():
        c = session.get(Case, number)
        if c is None:
            raise click.ClickException(f"no case #{number}")
        events, errors = update_case(session, rt, c, commands, actor, via="cli", remove_attachments=list(remove))
        if errors:
            session.rollback()
            for e in errors:
                click.echo(e, err=True)
            raise SystemExit(1)
    click.echo(f"case #{number}: " + (", ".join(events) if events else "nothing changed"))


@main.group(help="Outgoing mail.")
def outbox() -> None:
    pass


@outbox.command("list", help="List outgoing mail, newest first; failures show their last error.")
@config_option
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
def outbox_list(config_path: str | None, status: str | None, limit: int, as_json: bool) -> None:
    from maild.store.models import OutboxMail
    from maild.store.views import outbox_data

    cfg = _load_for_reading(config_path)
    with Session(_engine(cfg, reading=True)) as session:
        q = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
        if status:
            q = q.where(OutboxMail.status == status)
        mails = [outbox_data(m) for m in session.scalars(q)]
    if as_json:
        _print_json(mails)
        return
    for m in mails:
        case = f"#{m['case']}" if m["case"] else "-"
        click.echo(f"{m['created_at'][:19]} {m['status']:<8} {case:<7} {m['kind']:<14} {m['recipient']}"
                   + (f"  ({m['attempts']} attempts: {m['last_error']})" if m["last_error"] else ""))
