"""Intake under faults, as a sending MTA meets them: a stop in the middle of DATA, inserts
that fail, two daemons on one PostgreSQL database, a full disk. Every mail either gets its
250 and is stored once, or gets 421/451/452 and is not stored (or is a duplicate of what was
stored when the sender retries); the daemon's log holds no Python traceback."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from maild.store.db import make_engine
from tests.conftest import IN_CI, PG_ADMIN_URL, Database, postgres_problem, require
from tests.support.daemon import Daemon
from tests.support.faults import break_inserts, mend_inserts
from tests.support.mails import mail
from tests.support.sink import Sink

SUPPORT = "support@example.com"


def with_workers(d: Daemon, workers: int) -> Daemon:
    """The daemon serving SMTP itself (0) or in parse worker processes."""
    assert d.config is not None
    cfg = d.config.read_text()
    d.config.write_text(cfg.replace("max_message_bytes =", f"parse_processes = {workers}\nmax_message_bytes =", 1))
    return d


def assert_clean_log(d: Daemon) -> None:
    log = d.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert "Future exception was never retrieved" not in log, log[-4000:]
    assert "never awaited" not in log, log[-4000:]


class RawSession:
    """An SMTP client on a plain socket, so that a test can stop half-way through DATA."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stream = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")

    def reply(self) -> bytes:
        """The last line of the next reply; b"" when the server closed the connection."""
        while True:
            try:
                line = self.stream.readline()
            except ConnectionError:
                return b""
            if len(line) < 4 or line[3:4] != b"-":
                return line.rstrip(b"\r\n")

    def command(self, line: str) -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def begin_mail(self, sender: str, data: bytes) -> None:
        """EHLO … DATA and the first half of the mail."""
        assert self.command("EHLO client.test").startswith(b"250")
        assert self.command(f"MAIL FROM:<{sender}>").startswith(b"250")
        assert self.command(f"RCPT TO:<{SUPPORT}>").startswith(b"250")
        assert self.command("DATA").startswith(b"354")
        self.rest = data[len(data) // 2:] + b".\r\n"
        self.sock.sendall(data[:len(data) // 2])

    def end_mail(self) -> bytes:
        try:
            self.sock.sendall(self.rest)
        except OSError:
            return b""
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def code(reply: bytes) -> int | None:
    return int(reply[:3]) if reply[:3].isdigit() else None


def subjects(d: Daemon) -> Counter[str]:
    return Counter(c["subject"] for c in d.cases())


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_in_the_middle_of_data_answers_every_mail_it_stores(sink: Sink, tmp_path: Path,
                                                                    workers: int) -> None:
    d = with_workers(Daemon.with_config(tmp_path, f"sqlite:///{tmp_path}/maild.db",
                                        f"smtp://127.0.0.1:{sink.port}"), workers)
    d.start()
    sessions: list[RawSession] = []
    try:
        idle = RawSession(d.smtp_port)
        assert idle.command("EHLO client.test").startswith(b"250")
        finishing = {f"Mid-DATA {i}": RawSession(d.smtp_port) for i in range(4)}
        for subject, s in finishing.items():
            s.begin_mail("jane@acme.test", mail("jane@acme.test", SUPPORT, subject, "It jams.\n" * 200))
        cut = RawSession(d.smtp_port)  # its DATA never ends in time
        cut.begin_mail("bob@acme.test", mail("bob@acme.test", SUPPORT, "Never finished", "Slow.\n" * 200))
        sessions = [idle, *finishing.values(), cut]
        time.sleep(0.3)  # the DATA halves are read

        assert d.proc is not None
        os.killpg(d.proc.pid, signal.SIGTERM)
        assert code(idle.reply()) == 421  # no mail in flight: told at once, and closed
        time.sleep(0.5)
        replies = {subject: s.end_mail() for subject, s in finishing.items()}
        cut_reply = cut.reply()  # cut after the grace, before anything of it was stored
        assert d.proc.wait(30) == 0
    finally:
        for s in sessions:
            s.close()
        d.stop()
    assert {subject: code(r) for subject, r in replies.items()} == dict.fromkeys(finishing, 250), replies
    assert code(cut_reply) in (421, None), cut_reply
    assert subjects(d) == Counter(list(finishing))  # the answered mail once each, the cut one not at all
    assert_clean_log(d)
    assert "still arriving at stop" in d.log_path.read_text()


@pytest.mark.parametrize("workers", [0, 2])
def test_failing_inserts_answer_451_to_each_mail_without_a_traceback(database: Database, sink: Sink,
                                                                      tmp_path: Path, workers: int) -> None:
    d = with_workers(Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}"), workers)
    d.start()
    engine = make_engine(database.url)
    mails = [mail(f"user{i}@acme.test", SUPPORT, f"Broken {i}", "Printer on fire.") for i in range(12)]

    def send(raw: bytes) -> int:
        try:
            d.send(raw, "x@acme.test", [SUPPORT])
        except smtplib.SMTPDataError as e:
            return e.smtp_code
        return 250

    try:
        break_inserts(engine, "posts", "disk on fire")
        with ThreadPoolExecutor(12) as pool:  # several mails in one group commit, all failing
            assert list(pool.map(send, mails)) == [451] * len(mails)
        mend_inserts(engine, "posts")
        with ThreadPoolExecutor(12) as pool:  # the senders retry, and the writer is still there
            assert list(pool.map(send, mails)) == [250] * len(mails)
        assert subjects(d) == Counter(f"Broken {i}" for i in range(12))
    finally:
        engine.dispose()
        assert d.stop() == 0
    assert_clean_log(d)


def test_two_daemons_on_one_postgresql_database_store_each_mail_once(sink: Sink, tmp_path: Path) -> None:
    """The same mails to both at once (an MTA that retried on the other MX) and different mails
    from the same senders: no mail hears 451 for another's conflict, none is stored twice."""
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    daemons = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            daemons.append(Daemon.with_config(tmp_path / name, url, f"smtp://127.0.0.1:{sink.port}"))
            daemons[-1].start()
        senders = [f"customer{i}@acme.test" for i in range(6)]  # contacts both daemons create at once
        shared = [mail(senders[i % 6], SUPPORT, f"Shared {i}", "Sent to both.") for i in range(60)]
        own = {d: [mail(senders[i % 6], SUPPORT, f"Only {name} {i}", "Sent once.") for i in range(60)]
               for d, name in zip(daemons, "ab", strict=True)}
        sends = [(d, raw) for raw in shared for d in daemons] + [(d, raw) for d in daemons for raw in own[d]]
        sends.sort(key=lambda s: hash(s[1]))  # interleaved

        def send(job: tuple[Daemon, bytes]) -> int:
            try:
                job[0].send(job[1], "x@acme.test", [SUPPORT])
            except smtplib.SMTPDataError as e:
                return e.smtp_code
            return 250

        with ThreadPoolExecutor(16) as pool:  # within [protection] max_smtp_sessions_per_client
            codes = Counter(pool.map(send, sends))
        assert codes == Counter({250: len(sends)})
        stored = subjects(daemons[0])
        expected = [f"Shared {i}" for i in range(60)] + [f"Only {n} {i}" for n in "ab" for i in range(60)]
        assert stored == Counter(expected)  # each mail once, whichever daemon stored it
        with admin.connect() as conn:
            contacts = conn.execute(text(f'SELECT email FROM "{schema}".contacts')).scalars().all()
        assert Counter(contacts)["customer0@acme.test"] == 1
    finally:
        for d in daemons:
            assert d.stop() == 0
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    for d in daemons:
        assert_clean_log(d)


def _may_mount() -> bool:
    """Root with CAP_SYS_ADMIN: a tmpfs mount should work, so under CI its failure is one."""
    try:
        caps = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapEff"))
    except (OSError, StopIteration):
        return False
    return os.geteuid() == 0 and bool(int(caps.split()[1], 16) & (1 << 21))


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted afterwards."""
    path.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
        problem = r.stderr.strip() if r.returncode else None
    except FileNotFoundError:
        problem = "no mount command"
    if problem is not None:
        reason = f"cannot mount a tmpfs for a full disk: {problem}"
        if IN_CI and _may_mount():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder: Path) -> Path:
    """Writes a file until the disk is full; returns it."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        for chunk in (1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
                    f.flush()
    return filler


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_answers_452_and_recovers_when_space_is_back(database: Database, sink: Sink, tmp_path: Path,
                                                                 workers: int) -> None:
    with small_disk(tmp_path / "data", "32m") as data:  # room for a mail spooled to disk (4 MB and more)
        url = f"sqlite:///{data}/maild.db" if database.kind == "sqlite" else database.url
        d = with_workers(Daemon.with_config(tmp_path, url, f"smtp://127.0.0.1:{sink.port}", max_bytes=20_000_000),
                         workers)
        d.start()
        try:
            d.send(mail("jane@acme.test", SUPPORT, "Before", "Room enough."), "jane@acme.test", [SUPPORT])
            filler = fill(data)
            mails = {"Large": mail("ann@acme.test", SUPPORT, "Large", "A long report line.\n" * 8000),
                     "Spooled": mail("bob@acme.test", SUPPORT, "Spooled", "A very long log line.\n" * 205_000),
                     **{f"Small {i}": mail(f"c{i}@acme.test", SUPPORT, f"Small {i}", "Short.") for i in range(3)}}

            def send(raw: bytes) -> int:
                try:
                    d.send(raw, "x@acme.test", [SUPPORT])
                except smtplib.SMTPDataError as e:
                    return e.smtp_code
                return 250

            while_full = {subject: send(raw) for subject, raw in mails.items()}
            assert while_full["Large"] == 452 and while_full["Spooled"] == 452, while_full
            assert set(while_full.values()) <= {250, 452}, while_full  # never 451: the sender learns why
            filler.unlink()
            after = {subject: send(raw) for subject, raw in mails.items() if while_full[subject] != 250}
            assert set(after.values()) == {250}, after
            assert subjects(d) == Counter(["Before", *mails])
            replies = [250, *while_full.values(), *after.values()]
        finally:
            assert d.stop() == 0
            if database.kind == "sqlite":
                with contextlib.closing(sqlite3.connect(data / "maild.db")) as conn:
                    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    log = d.log_path.read_text()
    # once per incident: a run of 452s, which a mail stored ends
    incidents = sum(1 for before, now in itertools.pairwise(replies) if (before, now) == (250, 452))
    assert log.count("disk full: mail answered 452") == incidents, log[-4000:]
    assert log.count("disk space back") == incidents
    assert_clean_log(d)
