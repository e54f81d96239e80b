"""What the pipeline needs besides the database session, built once from a validated config."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from maild.config import Config
from maild.notify.render import TemplateRenderer
from maild.rules.calendar import calendars_by_name
from maild.rules.senders import TxtLookup, dns_txt_lookup
from maild.store.blobs import BlobStore, DryRunBlobStore
from maild.threading.tokens import BOUNCE_LOCAL, load_or_create_secret


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    config: Config
    secret: bytes
    raw_store: BlobStore
    attachment_store: BlobStore
    renderer: TemplateRenderer
    txt_lookup: TxtLookup  # DNS TXT for DKIM keys
    calendars: dict[str, Any]  # name -> rules.calendar.BusinessCalendar, "24x7" included
    clock: Callable[[], datetime] = utc_now

    @cached_property
    def mailbox_addresses(self) -> frozenset[str]:
        return frozenset(m.address.lower() for m in self.config.mailboxes)

    @cached_property
    def accepted_addresses(self) -> frozenset[str]:
        """What SMTP RCPT takes (with `+tag` forms): the mailboxes and the VERP return path
        `bounces@` of each mailbox domain, where bounces of maild's own mail come back."""
        domains = {a.partition("@")[2] for a in self.mailbox_addresses}
        return self.mailbox_addresses | {f"{BOUNCE_LOCAL}@{d}" for d in domains}

    @cached_property
    def agent_addresses(self) -> frozenset[str]:
        return frozenset(a.email.lower() for a in self.config.agents)


def build_runtime(config: Config, clock: Callable[[], datetime] = utc_now, *, dry_run: bool = False) -> Runtime:
    """`dry_run`: write no file (no blobs, no new secret), for `maild inspect`."""
    data = config.data_dir
    templates = config.path(config.templates_dir) if config.templates_dir else None
    secret_path = config.path(config.server.secret_file)
    if dry_run:
        secret = secret_path.read_bytes().strip() if secret_path.exists() else secrets.token_hex(32).encode()
    else:
        secret = load_or_create_secret(secret_path)
    store = DryRunBlobStore if dry_run else BlobStore
    return Runtime(
        config=config,
        secret=secret,
        raw_store=store(data / "raw"),
        attachment_store=store(data / "attachments"),
        renderer=TemplateRenderer(templates),
        txt_lookup=dns_txt_lookup(config.auth.dns_servers),
        calendars=calendars_by_name([c for c in config.calendars if c is not None]),
        clock=clock,
    )
