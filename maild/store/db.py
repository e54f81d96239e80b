"""Engines and sessions: SQLite tuned for a durable single writer, PostgreSQL via psycopg 3.

Store functions never commit; the session's lifecycle belongs to the edge that owns the
transaction (the ingest writer, a CLI command). What only reads uses `read_only(engine)`, so
that on SQLite it takes no write lock and runs beside a writer (WAL's concurrent reads).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config
from maild.domain.errors import MaildError

# How long any wait on the database may last before the mail gets 451 and its sender retries:
# well inside the 60 s idle timeout of an SMTP session in DATA ([protection]
# smtp_idle_timeout_seconds) and RFC 5321's 10 minutes for the reply to DATA, and far longer
# than any healthy commit (milliseconds) or a CLI command's transaction.
SQLITE_BUSY_TIMEOUT_MS = 20_000
PG_STATEMENT_TIMEOUT_MS = 20_000
# A row or table lock held longer than this is a stuck transaction, not contention: give up
# sooner than the statement timeout, so a lock wait surfaces as "lock timeout" in the log.
PG_LOCK_TIMEOUT_MS = 10_000
# A server that does not answer a connection attempt within this is down (libpq waits forever).
PG_CONNECT_TIMEOUT_S = 10
# At start, a write (creating the schema of an empty database) that meets another writer's lock
# gives up after this: the operator hears at once, not after the busy timeout.
STARTUP_BUSY_TIMEOUT_MS = 3_000

SQLITE_WAL_CHECKPOINT_PAGES = 8000  # of 4 KB
# The WAL's size on disk: it grows to about one checkpoint's worth (~33 MB) while mail arrives,
# more only when a reader holds a checkpoint back; after the next checkpoint that empties it,
# SQLite cuts the file back to this. Not smaller: commits then overwrite the file in place
# instead of extending it (an extension is also an fsync of the file's size). Once the desk is
# quiet, IdleCheckpointer truncates the WAL to nothing.
SQLITE_JOURNAL_SIZE_LIMIT = SQLITE_WAL_CHECKPOINT_PAGES * 4096
SQLITE_IDLE_CHECKPOINT_SECONDS = 1.0
_READ_ONLY = "maild_read_only"
_BUSY_TIMEOUT = "maild_sqlite_busy_timeout_ms"


class DatabaseUnavailable(MaildError):
    """The database cannot be opened or used at all (its URL, its folder, its server, a lock):
    one line naming what and where, for a person to act on."""


def where(url: str) -> str:
    """A database's URL fit for a message: no password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return repr(url)


def failure_reason(e: BaseException) -> str:
    """The driver's words for a failure, on one line."""
    orig = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
    return "; ".join(line.strip() for line in str(orig).splitlines() if line.strip()) or type(orig).__name__


def database_url(cfg: Config) -> str:
    """The configured URL with a relative SQLite path made relative to the config file."""
    try:
        url = make_url(cfg.database.url)
    except (ArgumentError, ValueError) as e:
        raise DatabaseUnavailable(f"database.url {where(cfg.database.url)} is not a database URL: {e}") from None
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        path = cfg.path(url.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseUnavailable(f"cannot create the database folder {path.parent}: {e.strerror}") from None
        url = url.set(database=str(path))
    return url.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                      "check_same_thread": False}, **kwargs)
            _tune_sqlite(engine)
            return engine
        return create_engine(url, pool_pre_ping=True, connect_args=_postgres_connect_args(url), **kwargs)
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise DatabaseUnavailable(f"database.url {where(url)} cannot be used: {e}") from None


def _postgres_connect_args(url: str) -> dict[str, Any]:
    """Statement and lock timeouts on every connection (libpq `options`, no round trip), before
    any the URL sets itself (the later -c wins), and a connect timeout unless the URL has one."""
    query = make_url(url).query
    own = f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} -c lock_timeout={PG_LOCK_TIMEOUT_MS}"
    theirs = query.get("options")
    theirs = " ".join(theirs) if isinstance(theirs, tuple) else theirs
    args: dict[str, Any] = {"options": f"{own} {theirs}" if theirs else own}
    if "connect_timeout" not in query:
        args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return args


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool) for work that only reads: on SQLite its transactions begin
    DEFERRED, so they take no write lock, never wait for a writer, and see the last commit."""
    return engine.execution_options(**{_READ_ONLY: True})


def _tune_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE so SAVEPOINTs and writers work.

    pysqlite's own transaction handling breaks SAVEPOINT and upgrades read locks late
    (SQLITE_BUSY mid-transaction); taking the write lock at BEGIN avoids both. Readers
    (`read_only`) begin DEFERRED: a read never upgrades, and WAL lets it run beside the writer.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        # Checkpoint every ~32 MB of WAL instead of 4 MB: pages every commit touches again (index
        # leaves, the outbox's rows) are copied into the database file once per checkpoint,
        # and in the writer's commit. 8 interleaved pairs of `bench smtp --rate 100000`:
        # 219 against 204 msgs/s on average (6 won) for the same ~148 % of a core.
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_CHECKPOINT_PAGES}")
        cur.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        busy = options.get(_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS)
        info = conn.connection.info  # the DBAPI connection's, kept across pool checkouts
        if info.get(_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS) != busy:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(busy)}")
            info[_BUSY_TIMEOUT] = busy
        conn.exec_driver_sql("BEGIN" if options.get(_READ_ONLY) else "BEGIN IMMEDIATE")

    path = engine.url.database
    if path and path != ":memory:" and not engine.url.query.get("mode"):
        checkpointer = IdleCheckpointer(path)

        @event.listens_for(engine, "commit")
        def _on_commit(_conn: Any) -> None:
            checkpointer.committed()


class IdleCheckpointer:
    """After SQLITE_IDLE_CHECKPOINT_SECONDS without a commit, copies the WAL into the database
    and truncates it to zero bytes, so that a quiet daemon holds no WAL and a burst's peak does
    not stay on disk. Under load the checkpoints stay as they are (every
    SQLITE_WAL_CHECKPOINT_PAGES, for speed): this never waits for the writer or a reader.

    A thread runs only between a commit and the checkpoint after it; it opens its own
    connection (never one of the engine's, which may be gone by then)."""

    def __init__(self, path: str, quiet_seconds: float = SQLITE_IDLE_CHECKPOINT_SECONDS, max_tries: int = 10):
        self.path = path
        self.quiet_seconds = quiet_seconds
        self.max_tries = max_tries
        self._lock = threading.Lock()
        self._last_commit = 0.0
        self._running = False

    def committed(self) -> None:
        with self._lock:
            self._last_commit = time.monotonic()
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="maild-wal-checkpoint", daemon=True).start()

    def _run(self) -> None:
        tries = 0
        while True:
            with self._lock:
                seen = self._last_commit
            quiet = time.monotonic() - seen
            if quiet < self.quiet_seconds:
                time.sleep(self.quiet_seconds - quiet)
                continue
            done = checkpoint_wal(self.path)
            tries += 1
            with self._lock:
                if self._last_commit == seen and (done or tries >= self.max_tries):
                    self._running = False
                    return
            if not done:
                time.sleep(self.quiet_seconds)


def checkpoint_wal(path: str) -> bool:
    """Copies the WAL into the database file and truncates it, if no reader or writer is in the
    way right now (it waits for none): True when the WAL is empty afterwards."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=0, isolation_level=None)
    except sqlite3.Error:  # the file is gone (a test's folder) or unreadable: nothing to do
        return True
    try:
        busy, frames, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames <= 0:
            return True  # not in WAL mode, or an empty WAL
        if busy or copied < frames:
            return False  # a reader still uses an older snapshot
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy
    except sqlite3.Error:  # locked right now: the next quiet second tries again
        return False
    finally:
        con.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def upgrade_database(engine: Engine) -> None:
    """Brings the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    acfg = AlembicConfig()
    acfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # rewriting a big table may take longer than a mail's statement
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        acfg.attributes["connection"] = conn
        command.upgrade(acfg, "head")


# The newest revision under migrations/versions (a test keeps the two equal): every CLI
# command checks the schema, and asking Alembic costs ~0.4 s of imports and file reads.
SCHEMA_HEAD = "0004"


def schema_is_current(engine: Engine) -> bool:
    with read_only(engine).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [SCHEMA_HEAD]


class SchemaBehind(MaildError):
    """The database has an older schema; a person runs `maild db upgrade` deliberately."""


def prepare_database(engine: Engine) -> None:
    """Creates the schema in an empty database; refuses to run on an outdated one.

    Only reads when the schema is there (a writer elsewhere holding the lock does not delay
    the start); a failure is DatabaseUnavailable or SchemaBehind, one line each.
    """
    url = engine.url.render_as_string(hide_password=True)
    try:
        with read_only(engine).connect() as conn:
            empty = not inspect(conn).get_table_names()
        if empty:
            upgrade_database(engine.execution_options(**{_BUSY_TIMEOUT: STARTUP_BUSY_TIMEOUT_MS}))
        elif not schema_is_current(engine):
            raise SchemaBehind(f"the database at {url} has an older schema: run 'maild db upgrade' first")
    except DBAPIError as e:
        raise DatabaseUnavailable(f"the database {url}: {failure_reason(e)}{_sqlite_hint(engine)}") from None


def _sqlite_hint(engine: Engine) -> str:
    """Why SQLite could not open a file it can read: its folder takes no new files (the -wal
    and -shm files SQLite needs beside the database), which SQLite's own words do not say."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        return ""
    folder = Path(path).resolve().parent
    if folder.is_dir() and not os.access(folder, os.W_OK):
        return f" (the folder {folder} is not writable; SQLite needs to create files beside the database)"
    return ""
