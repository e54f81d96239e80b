"""The ingest pipeline in-process with a clock the test moves: for storage tests that need a
real database but no sockets (the daemon's own tests use tests.support.daemon)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from maild.config import AgentConfig, Config, MailboxConfig, TeamConfig
from maild.domain.outcome import Outcome
from maild.ingest.committer import deliveries_for
from maild.ingest.parse import parse_message
from maild.ingest.pipeline import ingest_message
from maild.notify.outgoing import build_mail
from maild.runtime import Runtime, build_runtime
from maild.store.db import make_sessionmaker
from maild.store.models import Case, OutboxMail
from tests.support import mails

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def mail(frm: str, subject: str, body: str = "Hello", *, to: str = "support@example.com",
         msgid: str | None = None, headers: dict[str, str] | None = None) -> bytes:
    """tests.support.mails.mail with the desk's defaults: to the support mailbox, and no Message-ID
    unless one is given (so the same content is the same mail, deduplicated by its bytes)."""
    return mails.mail(frm, to, subject, body, msgid=msgid or False, headers=headers)


class Desk:
    """The pipeline with a clock we move, on one database."""

    def __init__(self, engine: Engine, tmp: Path, **overrides: object):
        cfg = Config(
            mailboxes=[MailboxConfig("support@example.com", "support"),
                       MailboxConfig("billing@example.com", "billing")],
            teams=[TeamConfig("support"), TeamConfig("billing")],  # no team mail: outbox holds customer mail
            agents=[AgentConfig("alice@example.com", "Alice", "manager")],
            base_dir=tmp,
        )
        cfg = dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]
        self.now = T0
        self.rt: Runtime = build_runtime(cfg, clock=lambda: self.now)
        self.sessions = make_sessionmaker(engine)

    def ingest(self, raw: bytes, rcpts: tuple[str, ...] = ("support@example.com",),
               mail_from: str | None = "x@client.test") -> Outcome:
        msg = parse_message(raw)
        (delivery,) = deliveries_for(self.rt, list(rcpts), mail_from, "smtp")
        with self.sessions() as s, s.begin():
            out = ingest_message(s, msg, delivery, self.rt)
        self.now += timedelta(seconds=1)
        return out

    def q(self, fn: Callable[[Session], object]) -> object:
        with self.sessions() as s:
            return fn(s)

    def case(self, n: int) -> Case:
        with self.sessions() as s:
            c = s.get(Case, n)
            assert c is not None
            _ = (c.requester, c.organization, c.participants, [p.contact for p in c.participants], c.tags,
                 c.posts, [p.attachments for p in c.posts], c.history)
            return c

    def outbox(self) -> list[OutboxMail]:
        """The outbox rows, each with `raw` as the outbox worker builds it (the commit stores data)."""
        with self.sessions() as s:
            rows = list(s.scalars(select(OutboxMail).order_by(OutboxMail.id)))
        for row in rows:
            if row.raw is None:
                row.raw = build_mail(row, self.rt.renderer, self.rt.attachment_store)
        return rows
