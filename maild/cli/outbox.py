"""`maild outbox list`: outgoing mail and why a mail failed."""

from __future__ import annotations

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.cli.common import config_option, engine, load_for_reading, print_json


@click.group(help="Outgoing mail.")
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

    cfg = load_for_reading(config_path)
    with Session(engine(cfg, reading=True)) as session:
        q = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
        if status:
            q = q.where(OutboxMail.status == status)
        mails = [outbox_data(m) for m in session.scalars(q)]
    if as_json:
        print_json(mails)
        return
    for m in mails:
        case = f"#{m['case']}" if m["case"] else "-"
        click.echo(f"{m['created_at'][:19]} {m['status']:<8} {case:<7} {m['kind']:<14} {m['recipient']}"
                   + (f"  ({m['attempts']} attempts: {m['last_error']})" if m["last_error"] else ""))
