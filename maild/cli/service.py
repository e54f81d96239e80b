"""`maild run`, `maild check-config` and `maild db upgrade`: starting the desk and its database."""

from __future__ import annotations

import asyncio

import click

from maild.cli.common import config_option, load
from maild.config import Config


@click.command(help="Run the daemon: SMTP receiver, outbox sender.")
@config_option
def run(config_path: str | None) -> None:
    from maild.daemon import serve
    from maild.logs import configure_logging
    from maild.store.db import DatabaseUnavailable, SchemaBehind

    configure_logging()
    cfg = load(config_path)  # refuse to start on a bad file, listing every problem
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


@click.command("check-config", help="Validate the config file; print 'ok' or every problem.")
@config_option
@click.option("--connect", is_flag=True, help="Also log in to each IMAP mailbox and report the server's answer.")
def check_config(config_path: str | None, connect: bool) -> None:
    cfg = load(config_path)
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



@click.group(help="Database schema.")
def db() -> None:
    pass


@db.command("upgrade", help="Bring the database schema to the newest version.")
@config_option
def db_upgrade(config_path: str | None) -> None:
    from sqlalchemy.exc import DBAPIError

    from maild.store.db import DatabaseUnavailable, database_url, failure_reason, make_engine, upgrade_database, where

    cfg = load(config_path)
    try:
        engine = make_engine(database_url(cfg))
        upgrade_database(engine)
    except DatabaseUnavailable as e:
        raise click.ClickException(str(e)) from None
    except DBAPIError as e:
        what = f"cannot upgrade the database {where(cfg.database.url)}: {failure_reason(e)}"
        raise click.ClickException(what) from None
    click.echo("database is up to date")

