"""`maild case …`, `maild message raw` and `maild inspect`: looking at and changing cases."""

from __future__ import annotations

import sys

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.cli.common import config_option, engine, load, load_for_reading, print_json


@click.command(help="Show what maild would do with mail files, storing and sending nothing.")
@config_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
def inspect(config_path: str | None, files: tuple[str, ...], as_json: bool) -> None:
    from pathlib import Path

    from maild.inspect import inspect_file
    from maild.logs import configure_logging

    configure_logging("WARNING")  # what the pipeline logs goes to stderr; stdout is the answer
    cfg = load(config_path)
    db = engine(cfg)
    for name in files:
        result = inspect_file(cfg, db, Path(name))
        if as_json:
            print_json(result)
            continue
        click.echo(f"{name}:")
        for key, value in result.items():
            if key != "file":
                click.echo(f"  {key}: {value}")



@click.group(help="Cases.")
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

    from maild.domain.stages import OPEN_STAGES
    from maild.store.models import Case, CaseTag
    from maild.store.views import case_summary, queue_order

    cfg = load_for_reading(config_path)
    with Session(engine(cfg, reading=True)) as session:
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
        print_json(cases)
        return
    for c in cases:
        due = (c["due_at"] or "")[:16]
        click.echo(f"#{c['number']:<6} {c['stage']:<9} {c['priority']:<7} {c['queue'] or '-':<10} "
                   f"{c['contract'] or '-':<10} {due:<16} {c['requester']['email']:<28} {c['subject']}")



@case.command("show", help="Show one case with its posts and history.")
@config_option
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def case_show(config_path: str | None, number: int, as_json: bool) -> None:
    from maild.store.models import Case
    from maild.store.views import case_detail

    cfg = load_for_reading(config_path)
    with Session(engine(cfg, reading=True)) as session:
        c = session.get(Case, number)
        if c is None:
            raise click.ClickException(f"no case #{number}")
        data = case_detail(c)
    if as_json:
        print_json(data)
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

    from maild.casework import update_case
    from maild.config import AgentConfig
    from maild.rules.commands import Command
    from maild.runtime import build_runtime
    from maild.store.models import Case

    cfg = load(config_path)
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
    db = engine(cfg)
    with Session(db) as session, session.begin():
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


@click.group(help="Stored mails.")
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

    cfg = load_for_reading(config_path)
    wanted = message_id.strip().strip("<>")
    with Session(engine(cfg, reading=True)) as session:
        sha256 = session.scalar(select(Message.sha256).where(Message.message_id == wanted).order_by(Message.id))
        if sha256 is None:
            raise click.ClickException(f"no stored mail has the Message-ID <{wanted}>")
        try:
            raw = raw_message(session, build_runtime(cfg, dry_run=True).raw_store, sha256)
        except KeyError:
            raise click.ClickException(f"the raw bytes of <{wanted}> (sha256 {sha256}) are missing") from None
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
