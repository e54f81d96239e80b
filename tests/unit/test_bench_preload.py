"""The benchmark's preloaded desk must take new mail like any other, on both databases."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from bench.preload import preload_database
from maild.store.db import make_engine
from maild.store.models import Case
from tests.conftest import Database
from tests.support.pipeline_desk import Desk, mail


def test_a_preloaded_database_takes_new_cases_contacts_and_organizations(database: Database,
                                                                          tmp_path: Path) -> None:
    counts = preload_database(database.url, 200)
    engine = make_engine(database.url)
    try:
        desk = Desk(engine, tmp_path)
        out = desk.ingest(mail("Nadia Horvat <nadia@newcomer.test>", "Our invoices are missing",
                               msgid="first@newcomer.test"))
        assert out.case_number == counts["cases"] + 1
        case = desk.case(out.case_number)
        assert case.requester.email == "nadia@newcomer.test"
        assert case.organization is not None and case.organization.name == "newcomer.test"
        assert desk.q(lambda s: s.scalar(select(func.count()).select_from(Case))) == counts["cases"] + 1
    finally:
        engine.dispose()
