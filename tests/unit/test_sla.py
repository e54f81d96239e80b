"""Contracts and SLA clocks on real databases, with the clock injected (SPEC §8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from maild.casework import raise_due_sla_events, update_case
from maild.config import (
    AgentConfig,
    CalendarConfig,
    ContractConfig,
    SlaConfig,
    TeamConfig,
)
from maild.rules.commands import Command
from maild.store.contracts import ContractError, add_client, find_organization, move_client
from maild.store.models import Event
from tests.support.pipeline_desk import Desk, mail

FRIDAY_17 = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
WEEKDAYS = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
ALICE = AgentConfig("alice@example.com", "Alice", "manager")
BOB = AgentConfig("bob@example.com", "Bob", "agent")
CAROL = AgentConfig("carol@example.com", "Carol", "manager")


def contracts_desk(engine: Engine, tmp: Path, **sla: object) -> Desk:
    desk = Desk(
        engine, tmp,
        agents=[ALICE, BOB, CAROL],
        teams=[TeamConfig("support", ["alice@example.com", "bob@example.com"]),
               TeamConfig("billing", ["bob@example.com", "carol@example.com"])],
        calendars=[CalendarConfig("office", "UTC", WEEKDAYS, ["2026-12-24", "2026-12-25"])],
        contracts=[
            ContractConfig("VIP", team="billing", tag="vip", calendar="office", rating=10,
                           sla={"normal": {"first_response": "1h", "resolution": "4h"},
                                "high": {"first_response": "30m", "resolution": "2h",
                                         "incident": {"resolution": "1h"}}}),
            ContractConfig("Basic", team="support", calendar="24x7", rating=1,
                           sla={"normal": {"first_response": "8h", "resolution": "3d"}}),
        ],
        sla=SlaConfig(**sla) if sla else SlaConfig(),  # type: ignore[arg-type]
    )
    desk.now = FRIDAY_17
    return desk


def put_in_contract(desk: Desk, contract: str, domain: str) -> None:
    from maild.store.models import Organization, OrganizationDomain

    with desk.sessions() as s, s.begin():
        org = find_organization(s, domain)
        if org is None:
            org = Organization(name=domain, created_at=desk.now, fields={})
            org.domains.append(OrganizationDomain(domain=domain))
            s.add(org)
            s.flush()
        add_client(s, contract, org, None, desk.now)


def tick(desk: Desk) -> list[tuple[int, str, str]]:
    """Runs the SLA timer once; returns (case, kind, clock) of the events it raised."""
    with desk.sessions() as s, s.begin():
        before = s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0
        raise_due_sla_events(s, desk.rt)
        return [(e.case_number, e.kind, e.data.get("clock")) for e in
                s.scalars(select(Event).where(Event.id > before, Event.kind.like("sla_%")).order_by(Event.id))]


@pytest.fixture
def desk(engine: Engine, tmp_path: Path) -> Desk:
    return contracts_desk(engine, tmp_path)


def test_vip_case_takes_contract_team_tag_and_business_hours_due_dates(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    put_in_contract(desk, "Basic", "acme.test")  # the higher rating wins
    case = desk.case(desk.ingest(mail("Ann <ann@acme.test>", "Payment failed")).case_number)
    assert case.contract == "VIP" and case.queue == "billing" and [t.tag for t in case.tags] == ["vip"]
    assert case.first_response_due_at == datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # Friday 17:00 + 1 h
    assert case.due_at == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # + 4 business hours: Monday noon
    assert any(h.rule == "contract VIP" and h.field == "queue" for h in case.history)


def test_case_without_contract_uses_sla_defaults_or_none(engine: Engine, tmp_path: Path) -> None:
    plain = contracts_desk(engine, tmp_path)
    case = plain.case(plain.ingest(mail("joe@other.test", "Hi")).case_number)
    assert case.contract is None and case.due_at is None
    with_defaults = contracts_desk(engine, tmp_path, calendar="24x7",
                                   targets={"normal": {"first_response": "2h", "resolution": "1d"}})
    case = with_defaults.case(with_defaults.ingest(mail("joe2@other.test", "Hi")).case_number)
    assert case.due_at == with_defaults.now - timedelta(seconds=1) + timedelta(days=1)


def test_priority_and_type_pick_their_targets(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    import dataclasses

    from maild.config import RuleConfig
    desk.rt = dataclasses.replace(desk.rt, config=dataclasses.replace(desk.rt.config, rules=[
        RuleConfig("urgent incidents", when={"subject": "outage"}, then={"priority": "high", "type": "incident"})]))
    desk.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday 10:00
    case = desk.case(desk.ingest(mail("ann@acme.test", "Total outage")).case_number)
    assert case.first_response_due_at == datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    assert case.due_at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # the incident override: 1 h


def test_warning_and_breach_each_once_and_they_notify_managers(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    assert tick(desk) == []
    desk.now = datetime(2026, 11, 20, 17, 48, tzinfo=UTC)  # 80 % of the first hour
    assert tick(desk) == [(n, "sla_warning", "first_response")]
    desk.now = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    assert tick(desk) == [(n, "sla_breached", "first_response")]
    desk.now = datetime(2026, 11, 23, 11, 11, tzinfo=UTC)
    assert tick(desk) == []  # the weekend does not count: 80 % of 4 h is Monday 11:12
    desk.now = datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    raised = tick(desk)
    assert (n, "sla_warning", "resolution") in raised
    desk.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert (n, "sla_breached", "resolution") in tick(desk)
    assert tick(desk) == []  # never twice, as a restart would ask again
    breach_mails = [m for m in desk.outbox() if m.kind == "sla_breached"]
    assert [m.recipient for m in breach_mails] == ["carol@example.com"] * 2  # billing's manager, once a clock


def test_first_public_agent_answer_stops_the_first_response_clock(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    from maild.threading.tokens import make_token, reply_address

    token = reply_address("support@example.com", make_token(desk.rt.secret, n, "carol@example.com"))
    desk.now = datetime(2026, 11, 23, 9, 10, tzinfo=UTC)
    desk.ingest(mail("carol@example.com", f"Re: [#{n}]", "We are on it.", to=token), rcpts=(token,))
    case = desk.case(n)
    assert case.first_response_at == datetime(2026, 11, 23, 9, 10, tzinfo=UTC)
    desk.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert [r for r in tick(desk) if r[2] == "first_response"] == []


def test_pending_pauses_the_clock(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    desk.now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 09:00: resolution due 13:00
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    desk.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    with desk.sessions() as s, s.begin():
        from maild.store.models import Case

        _, errors = update_case(s, desk.rt, s.get(Case, n), [Command("stage", "pending", 0, "--stage pending")],
                                ALICE, via="cli")
        assert errors == []
    desk.now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a day later, still pending
    assert tick(desk) == []
    desk.ingest(mail("ann@acme.test", f"Re: [#{n}] Payment failed", "Any news?"))  # reopens
    case = desk.case(n)
    assert case.stage == "open" and case.sla_paused_at is None
    assert case.due_at == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 3 h were left


def test_moving_a_client_with_open_cases_is_refused(desk: Desk) -> None:
    put_in_contract(desk, "VIP", "acme.test")
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    with desk.sessions() as s, s.begin():
        org = find_organization(s, "acme.test")
        with pytest.raises(ContractError, match=rf"1 open case\(s\) \(#{n}\)"):
            move_client(s, "VIP", "Basic", org, None, desk.now)
    with desk.sessions() as s, s.begin():
        from maild.store.models import Case

        s.get(Case, n).stage = "closed"
    with desk.sessions() as s, s.begin():
        move_client(s, "VIP", "Basic", find_organization(s, "acme.test"), None, desk.now)
    case = desk.case(desk.ingest(mail("ann@acme.test", "Another")).case_number)
    assert case.contract == "Basic" and case.queue == "support"


def test_breach_can_raise_the_priority(engine: Engine, tmp_path: Path) -> None:
    desk = contracts_desk(engine, tmp_path, raise_priority_on_breach=True)
    put_in_contract(desk, "VIP", "acme.test")
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    desk.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    tick(desk)
    case = desk.case(n)
    assert case.priority == "high"
    assert any(h.field == "priority" and h.via == "timer" for h in case.history)
    assert not [m for m in desk.outbox() if m.recipient == "ann@acme.test" and m.kind != "case_created"]


def test_the_timer_runs_no_rules(engine: Engine, tmp_path: Path) -> None:
    """The timer's events and its priority raise go through casework.change_case with
    run_rules=False: rules have never acted on them, and the one sequence keeps it so (a rule
    on `event = sla_breached` still acts on nothing until that is decided on purpose)."""
    import dataclasses

    from maild.config import RuleConfig

    desk = contracts_desk(engine, tmp_path, raise_priority_on_breach=True)
    desk.rt = dataclasses.replace(desk.rt, config=dataclasses.replace(desk.rt.config, rules=[
        RuleConfig("breaches", when={"event": "sla_breached"}, then={"add_tags": ["breached"]}),
        RuleConfig("raised", when={"event": "priority_changed"}, then={"add_tags": ["raised"]})]))
    put_in_contract(desk, "VIP", "acme.test")
    n = desk.ingest(mail("ann@acme.test", "Payment failed")).case_number
    desk.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert (n, "sla_breached", "first_response") in tick(desk)
    case = desk.case(n)
    assert case.priority == "high"
    assert not {"breached", "raised"} & {t.tag for t in case.tags}
