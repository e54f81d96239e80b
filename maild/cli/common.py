"""What every `maild` command module shares: the --config option, loading the config with
errors a person can act on, the database engine, and JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from maild.config import Config
from maild.config_checks import load_checked_config
from maild.domain.errors import ConfigError

__all__ = ["config_option", "engine", "load", "load_for_reading", "print_json"]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(f: F) -> F:
    """--config FILE, else $MAILD_CONFIG, else the embedded defaults."""
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), envvar="MAILD_CONFIG",
        default=None, help="TOML config file (default: $MAILD_CONFIG, else the embedded defaults).",
    )(f)


def load(config_path: str | None) -> Config:
    """The config with the features' checks, or every problem of the file on stderr and exit 1:
    nothing runs on a bad file."""
    try:
        return load_checked_config(config_path)
    except ConfigError as e:
        for p in e.problems:
            click.echo(p, err=True)
        raise SystemExit(1) from None


def load_for_reading(config_path: str | None) -> Config:
    """For commands that only read the database: a file that is broken elsewhere (say, a rule
    being edited) still names the database, so the desk can be looked at while it is fixed.
    The problems are printed as warnings; nothing is written with such a config."""
    try:
        return load_checked_config(config_path)
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


def engine(cfg: Config, *, reading: bool = False) -> Engine:
    """The configured database with its schema checked; `reading`: for a command that only
    reads, which then takes no write lock (on SQLite it runs beside the daemon's writer)."""
    from maild.store.db import DatabaseUnavailable, SchemaBehind, database_url, make_engine, prepare_database, read_only

    try:
        db = make_engine(database_url(cfg))
        prepare_database(db)
    except (DatabaseUnavailable, SchemaBehind) as e:
        raise click.ClickException(str(e)) from None
    return read_only(db) if reading else db


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None, default=str))

