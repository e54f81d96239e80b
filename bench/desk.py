"""`maild run` under benchmark: a throw-away database, a config, and row counts read from outside.

The database is fresh for every run (SQLite in a temp folder, or a PostgreSQL schema dropped
afterwards) so runs never see each other's rows. Progress is read by counting rows with a
read-only connection of our own rather than through `maild case list`, which would cost a
process start and a full listing on every poll.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from bench.proctree import TreeWatch, tree_cpu_seconds
from tests.support.daemon import Daemon

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STAFF_DOMAIN = "example.com"  # the agents and mailboxes of tests/support/daemon.py; customers are elsewhere

# Every new case acknowledged: the benchmark's few hundred senders write more often than the
# default rate limits (5 acknowledgements an hour per address) allow.
PROTECTION_TOML = "\n[protection]\nack_per_hour = 1000000\nauto_mail_per_day = 1000000\n"


def postgres_problem() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as e:
        return f"PostgreSQL at {PG_URL} is not reachable: {type(e).__name__}"
    return None


@dataclass
class Counts:
    messages: int
    cases: int
    outbox: int  # every mail maild queued
    acks: int  # queued to customers: only acknowledgements, since in a benchmark no agent answers
    pending: int
    failed: int


class Desk:
    """One maild on a fresh database, sending its mail to `outbound_port`. Its CPU and memory
    are those of its whole process tree (bench/proctree.py), read every `watch_interval` s."""

    def __init__(self, database: str, outbound_port: int, extra_toml: str = "", preload: int = 0,
                 max_bytes: int = 26_214_400, watch_interval: float = 0.25) -> None:
        self.database = database
        self.folder = Path(tempfile.mkdtemp(prefix="maild-bench-"))
        self.schema: str | None = None
        if database == "postgresql":
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
            with self._admin().begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = f"{PG_URL}?options=-csearch_path%3D{self.schema}"
        else:
            self.url = f"sqlite:///{self.folder}/maild.db"
        self.daemon = Daemon.with_config(self.folder, self.url, f"smtp://127.0.0.1:{outbound_port}",
                                         max_bytes=max_bytes, extra=PROTECTION_TOML + extra_toml)
        self._reader: Engine | None = None
        self._watch_interval = watch_interval
        self._watch: TreeWatch | None = None
        self.baseline = Counts(0, 0, 0, 0, 0, 0)
        if preload:
            from bench.preload import preload_database

            preload_database(self.url, preload)
            self.baseline = self.counts()

    @staticmethod
    def _admin() -> Engine:
        return create_engine(PG_URL)

    @property
    def smtp_port(self) -> int:
        return self.daemon.smtp_port

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def start(self) -> float:
        """Starts maild; returns the seconds until its SMTP port answered."""
        t0 = time.perf_counter()
        self.daemon.start()
        self._watch = TreeWatch(self.pid, self._watch_interval).start()
        return time.perf_counter() - t0

    @property
    def watch(self) -> TreeWatch:
        assert self._watch is not None, "maild is not started"
        return self._watch

    def cpu_seconds(self) -> float:
        """CPU of maild's process tree so far, children that exited included."""
        return tree_cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        """Resident set of maild's process tree now."""
        return self.watch.rss_mb()

    def peak_rss_mb(self) -> float:
        """Sum of each of maild's processes' VmHWM: an upper bound of the tree's peak."""
        return self.watch.peak_mb()

    def counts(self) -> Counts:
        if self._reader is None:
            if self.database == "postgresql":
                self._reader = create_engine(self.url)
            else:
                self._reader = create_engine(f"sqlite:///file:{self.folder}/maild.db?mode=ro&uri=true")
        with self._reader.connect() as conn:
            row = conn.execute(text(
                "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM cases), "
                "(SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox WHERE recipient NOT LIKE :staff), "
                "(SELECT count(*) FROM outbox WHERE status = 'pending'), "
                "(SELECT count(*) FROM outbox WHERE status = 'failed')"), {"staff": f"%@{STAFF_DOMAIN}"}).one()
        base = self.baseline
        return Counts(*(int(v) - b for v, b in zip(row, (base.messages, base.cases, base.outbox, base.acks,
                                                           base.pending, base.failed), strict=True)))

    def log_tail(self) -> str:
        return self.daemon.log()

    def close(self) -> None:
        """Stops maild, drops the schema and the temp folder."""
        try:
            if self._watch is not None:
                self._watch.stop()
            self.daemon.stop()
        finally:
            if self._reader is not None:
                self._reader.dispose()
            if self.schema is not None:
                admin = self._admin()
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
                admin.dispose()
            shutil.rmtree(self.folder, ignore_errors=True)
