"""The database and the disk under faults (issue 19 §5, §7, §8): a writer elsewhere holding the
SQLite lock delays neither the start nor a reading command; a start that cannot work says why
in one line and exits non-zero; a stuck PostgreSQL lock costs a 451 within the lock timeout,
not a hung session; the WAL does not keep a burst's size on disk.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from maild.store.db import (
    PG_LOCK_TIMEOUT_MS,
    PG_STATEMENT_TIMEOUT_MS,
    SQLITE_WAL_CHECKPOINT_PAGES,
    make_engine,
    prepare_database,
)
from tests.conftest import Database
from tests.support.daemon import Daemon, write_config
from tests.support.mails import mail, wait_until
from tests.support.sink import free_port


def no_traceback(d: Daemon) -> None:
    log = d.log_path.read_text(errors="replace") if d.log_path.exists() else ""
    assert "Traceback" not in log, log[-3000:]


def run_maild(folder: Path, config: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """`maild run` expected to refuse: its result and how long it took to say so."""
    env = {k: v for k, v in os.environ.items() if k != "MAILD_CONFIG"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "maild", "run", "--config", str(config)], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def one_line_refusal(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@contextlib.contextmanager
def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer in the middle of a transaction, as `sqlite3` or a backup would be."""
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_writer_holding_the_sqlite_lock_delays_neither_the_start_nor_a_reading_command(tmp_path: Path) -> None:
    db_path = tmp_path / "maild.db"
    d = Daemon.with_config(tmp_path, db_url=f"sqlite:///{db_path}", outbound_url="maildir://out")
    d.start()
    d.send(mail("jane@acme.test", "support@example.com", "Printer on fire", "It smokes."),
           "jane@acme.test", ["support@example.com"])
    d.stop()

    with write_lock(db_path) as holder:
        holder.execute("UPDATE cases SET subject = subject")
        t0 = time.monotonic()
        d.start(timeout=15)
        started = time.monotonic() - t0
        t0 = time.monotonic()
        cases = d.cases()
        listed = time.monotonic() - t0
        shown = d.case(cases[0]["number"])
        assert d.cli("outbox", "list").returncode == 0

        # A mail arriving now waits for the lock (a CLI command's transaction is short), then 250.
        answers: list[object] = []
        sender = threading.Thread(target=lambda: answers.append(d.send(
            mail("bob@acme.test", "support@example.com", "Scanner jams", "Again."),
            "bob@acme.test", ["support@example.com"])))
        sender.start()
        time.sleep(1.0)
    sender.join(30)
    try:
        assert started < 10, f"the start waited {started:.1f}s on another's write lock"
        assert listed < 5, f"case list waited {listed:.1f}s on another's write lock"
        assert [c["subject"] for c in cases] == ["Printer on fire"] and shown["subject"] == "Printer on fire"
        assert answers == [{}]
        assert sorted(c["subject"] for c in d.cases()) == ["Printer on fire", "Scanner jams"]
    finally:
        d.stop()
    no_traceback(d)


def test_a_start_that_must_write_behind_a_held_lock_gives_up_in_seconds(tmp_path: Path) -> None:
    """An empty database needs its schema written: with the lock held elsewhere the start
    fails fast, in one line naming the database, instead of after the busy timeout."""
    db_path = tmp_path / "maild.db"
    config = write_config(tmp_path, db_url=f"sqlite:///{db_path}", outbound_url="maildir://out",
                          smtp_port=free_port())
    with write_lock(db_path) as holder:
        holder.execute("CREATE TABLE someone_elses (x)")
        r, took = run_maild(tmp_path, config)
    line = one_line_refusal(r)
    assert took < 10, f"{took:.1f}s"
    assert "database is locked" in line and str(db_path) in line, line


@contextlib.contextmanager
def folder_to_freeze(path: Path) -> Iterator[Callable[[], None]]:
    """A folder, and how to make it read-only later: root writes through any mode bits, so as
    root it is a tmpfs of its own, remounted read-only; otherwise its mode is taken away."""
    path.mkdir()
    if os.geteuid() != 0:
        try:
            yield lambda: [p.chmod(0o555) for p in [path, *path.rglob("*")] if p.is_dir()]
        finally:
            for p in [path, *path.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only folder needs a tmpfs of its own when running as root: {mounted.stderr.strip()}")
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_data_folder_is_one_line_and_a_non_zero_exit(tmp_path: Path, database: Database) -> None:
    folder = tmp_path / "desk"
    with folder_to_freeze(folder) as freeze:
        url = f"sqlite:///{folder}/maild.db" if database.kind == "sqlite" else database.url
        d = Daemon.with_config(folder, db_url=url, outbound_url="maildir://out")
        d.start()
        d.send(mail("jane@acme.test", "support@example.com", "Printer", "It smokes."),
               "jane@acme.test", ["support@example.com"])
        d.stop()
        no_traceback(d)
        freeze()
        r, took = run_maild(folder, d.config)
    line = one_line_refusal(r)
    assert took < 15 and line.startswith("Error: cannot start:"), line
    assert str(folder / "data") in line and ("Read-only" in line or "Permission denied" in line), line


def test_a_read_only_folder_of_the_sqlite_database_is_named(tmp_path: Path) -> None:
    """The data folder writable, the database's folder not: SQLite's "unable to open database
    file" comes with the folder to fix."""
    folder = tmp_path / "db"
    with folder_to_freeze(folder) as freeze:
        db_path = folder / "maild.db"
        prepare_database(engine := make_engine(f"sqlite:///{db_path}"))
        engine.dispose()
        freeze()
        config = write_config(tmp_path, db_url=f"sqlite:///{db_path}", outbound_url="maildir://out",
                              smtp_port=free_port())
        r, _ = run_maild(tmp_path, config)
    line = one_line_refusal(r)
    assert str(db_path) in line and f"the folder {folder} is not writable" in line, line


def test_startup_refusals_are_one_line_each(tmp_path: Path) -> None:
    """A PostgreSQL that refuses connections, a URL that is no URL, a database that does not
    exist, a schema behind: each one line saying what and where, exit code 1, fast."""
    port = free_port()  # nothing listens there
    for name, url, words in [
        ("refused", f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", "Connection refused"),
        ("not-a-url", "postgresql+psycopg://postgres@127.0.0.1:notaport/test", "is not a database URL"),
        ("no-such-folder", "sqlite:////proc/no/such/folder/maild.db", "cannot create the database folder"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, db_url=url, outbound_url="maildir://out", smtp_port=free_port())
        r, took = run_maild(folder, config)
        line = one_line_refusal(r)
        assert words in line and took < 15, (name, line)
        assert r.returncode == 1, name

    folder = tmp_path / "behind"
    folder.mkdir()
    db_path = folder / "maild.db"
    prepare_database(engine := make_engine(f"sqlite:///{db_path}"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    config = write_config(folder, db_url=f"sqlite:///{db_path}", outbound_url="maildir://out", smtp_port=free_port())
    line = one_line_refusal(run_maild(folder, config)[0])
    assert "older schema" in line and "maild db upgrade" in line and str(db_path) in line, line


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_postgresql_connections_carry_statement_and_lock_timeouts(database: Database) -> None:
    """Ours, next to what the URL asks for itself (the test schema's search_path)."""
    engine = make_engine(database.url)
    try:
        with engine.connect() as conn:
            got = [conn.execute(text(f"SHOW {name}")).scalar()
                   for name in ("statement_timeout", "lock_timeout", "search_path")]
    finally:
        engine.dispose()
    assert got[:2] == [f"{PG_STATEMENT_TIMEOUT_MS // 1000}s", f"{PG_LOCK_TIMEOUT_MS // 1000}s"]
    assert got[2] == database.url.rsplit("search_path%3D", 1)[1]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_table_locked_for_good_costs_a_451_within_the_lock_timeout(tmp_path: Path, database: Database) -> None:
    d = Daemon.with_config(tmp_path, db_url=database.url, outbound_url="maildir://out")
    d.start()
    first = mail("jane@acme.test", "support@example.com", "Printer", "It smokes.")
    second = mail("bob@acme.test", "support@example.com", "Scanner", "It jams.")
    assert d.send(first, "jane@acme.test", ["support@example.com"]) == {}
    # A person's psql session, holding the table while they go for lunch (no timeouts of ours).
    locker = create_engine(database.url)
    try:
        with locker.connect() as conn:
            conn.execute(text("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE"))
            t0 = time.monotonic()
            with pytest.raises(smtplib.SMTPDataError) as refused:
                d.send(second, "bob@acme.test", ["support@example.com"])
            took = time.monotonic() - t0
            conn.rollback()
        assert refused.value.smtp_code == 451, refused.value
        assert took < PG_LOCK_TIMEOUT_MS / 1000 + 5, f"the 451 came after {took:.1f}s"
        assert d.send(second, "bob@acme.test", ["support@example.com"]) == {}  # the sender's retry
        assert sorted(c["subject"] for c in d.cases()) == ["Printer", "Scanner"]
    finally:
        locker.dispose()
        d.stop()
    no_traceback(d)


def test_the_wal_does_not_keep_a_bursts_size(tmp_path: Path) -> None:
    """A few hundred mails in a burst: the WAL grows at most to about one checkpoint's worth
    while they arrive, and once the desk is quiet it is back to (almost) nothing."""
    db_path = tmp_path / "maild.db"
    wal = tmp_path / "maild.db-wal"
    d = Daemon.with_config(tmp_path, db_url=f"sqlite:///{db_path}", outbound_url="maildir://out")
    d.start()
    peak = [0]
    sending = threading.Event()
    sending.set()

    def watch() -> None:
        while sending.is_set():
            with contextlib.suppress(OSError):
                peak[0] = max(peak[0], wal.stat().st_size)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    body = "The printer on floor 3 shows error 0x4F and then smokes.\n" * 200
    try:
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=60) as s:
            for i in range(300):
                frm = f"customer{i % 40}@acme.test"
                raw = mail(frm, "support@example.com", f"Issue {i}", body)
                assert s.sendmail(frm, ["support@example.com"], raw) == {}
        wait_until(lambda: not wal.exists() or wal.stat().st_size <= 1024 * 1024, 15, interval=0.2)
        quiet = wal.stat().st_size if wal.exists() else 0
    finally:
        sending.clear()
        watcher.join()
        d.stop()
    print(f"WAL peak {peak[0] / 1e6:.1f} MB during 300 mails, {quiet / 1e6:.2f} MB once quiet")
    assert peak[0] > 4 * 1024 * 1024, "the burst was too small to show anything"
    assert peak[0] < SQLITE_WAL_CHECKPOINT_PAGES * 4096 + 16 * 1024 * 1024
    assert quiet <= 1024 * 1024
    with sqlite3.connect(db_path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    no_traceback(d)
