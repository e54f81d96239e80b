"""Shared fixtures: real databases (SQLite and PostgreSQL), a real SMTP sink, a real daemon.

A test that needs a server that is absent skips with the reason; under CI=true it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis  # noqa: F401  imported before any test: see below
import pytest
from sqlalchemy import Engine, create_engine, text

from maild.store.db import make_engine, upgrade_database
from tests.support.sink import Sink, bad_mails
from tests.support.wire_check import maildir_problems

# hypothesis's pytest plugin imports hypothesis only at the end of the run; by then a test that
# met a RecursionError (deep MIME nesting) has left CPython 3.11's AST compiler in a state where
# pytest's assertion rewriting of that import fails ("AST constructor recursion depth mismatch")
# and the whole run exits non-zero. Importing it first avoids that.

PG_ADMIN_URL = os.environ.get("MAILD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EML_DIR = Path(__file__).parent / "eml"


def require(condition: bool, reason: str) -> None:
    """Skip when a needed server is absent; fail instead under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)")
    pytest.skip(reason)


def _postgres_available() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as e:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {type(e).__name__}"


_PG_PROBLEM: list[str | None] = []


def postgres_problem() -> str | None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_postgres_available())
    return _PG_PROBLEM[0]


@dataclass
class Database:
    kind: str  # sqlite | postgresql
    url: str  # what a maild config's [database] url gets


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of each kind; on PostgreSQL a schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path}/maild.db")
        return
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database("postgresql", f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    eng = make_engine(database.url)
    upgrade_database(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    yield s
    s.stop()
    _fail_on_bad_mail(bad_mails([s]))


def _fail_on_bad_mail(report: list[str]) -> None:
    if report:
        pytest.fail(f"maild sent {len(report)} mail(s) that a strict relay would refuse or garble "
                    "(issue 20 §3; tests/support/wire_check.py):\n" + "\n".join(report), pytrace=False)


@pytest.fixture(autouse=True)
def _outgoing_mail_is_wire_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test (and its fixtures: this is torn down last): every mail any sink caught
    during it, whoever made the sink, and every mail maild wrote into a Maildir in the test's
    tmp_path, must be fit to travel byte by byte."""
    yield
    report = bad_mails()
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp, Path) and tmp.is_dir():
        report += maildir_problems(tmp)
    _fail_on_bad_mail(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A mail caught after the last test's teardown (a sink of a wider scope) fails the run too."""
    report = bad_mails()
    if report:
        print("\nmaild sent mail that a strict relay would refuse or garble (issue 20 §3):\n" + "\n".join(report))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def load_eml(name: str) -> bytes:
    """A fixture as it travels on the wire: CRLF line endings."""
    raw = (EML_DIR / name).read_bytes()
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
