"""SLA targets and clocks (SPEC §8): which contract a case takes, when its first response and
resolution are due in business time, and when to warn (80 %) and call a breach (100 %).

Pure: the caller passes the case's facts and a clock; due times are stored on the case, so
timers are data and survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from maild.config import Config, ContractConfig

CLOCKS = ("first_response", "resolution")
WARN_AT = 0.8
PRIORITY_KEYS = ("low", "normal", "high", "urgent")
TYPE_KEYS = ("question", "incident", "problem")


@dataclass(frozen=True)
class SlaTargets:
    calendar: str
    first_response: timedelta | None
    resolution: timedelta | None


def _targets_table(table: dict[str, dict[str, object]], priority: str, case_type: str) -> dict[str, object]:
    base = dict(table.get(priority) or table.get("normal") or {})
    override = base.pop(case_type, None)
    for t in TYPE_KEYS:
        base.pop(t, None)
    if isinstance(override, dict):
        base.update(override)
    return base


def targets_for(cfg: Config, contract: ContractConfig | None, priority: str, case_type: str) -> SlaTargets | None:
    """The case's targets: its contract's, else `[sla]`'s; None when neither sets any."""
    from maild.rules.calendar import parse_duration

    table = contract.sla if contract is not None else cfg.sla.targets
    calendar = contract.calendar if contract is not None else cfg.sla.calendar
    values = _targets_table(table, priority, case_type)
    first = values.get("first_response")
    resolution = values.get("resolution")
    if first is None and resolution is None:
        return None
    return SlaTargets(calendar=calendar, first_response=parse_duration(str(first)) if first else None,
                      resolution=parse_duration(str(resolution)) if resolution else None)


def check_sla_config(cfg: Config) -> list[str]:
    if not (cfg.calendars or cfg.contracts or cfg.sla.targets) and cfg.sla.calendar == "24x7":
        return []
    from maild.rules.calendar import CalendarError, calendars_by_name, parse_duration

    problems: list[str] = []
    names = {"24x7"}
    for i, cal in enumerate(cfg.calendars):
        if cal is None:
            continue
        try:
            calendars_by_name([cal])
        except CalendarError as e:
            problems.append(f"calendars[{i}]: {e}")
        names.add(cal.name)
    teams = {t.name for t in cfg.teams if t is not None}

    def check_table(path: str, table: dict[str, dict[str, object]]) -> None:
        for priority, values in table.items():
            if priority not in PRIORITY_KEYS:
                problems.append(f"{path}.{priority}: not a priority ({', '.join(PRIORITY_KEYS)})")
                continue
            if not isinstance(values, dict):
                problems.append(f"{path}.{priority}: expected a table like {{ first_response = \"1h\" }}")
                continue
            for key, value in values.items():
                if key in TYPE_KEYS and isinstance(value, dict):
                    for k2, v2 in value.items():
                        if k2 not in CLOCKS:
                            problems.append(f"{path}.{priority}.{key}.{k2}: unknown target ({', '.join(CLOCKS)})")
                        else:
                            _check_duration(f"{path}.{priority}.{key}.{k2}", v2)
                elif key not in CLOCKS:
                    problems.append(f"{path}.{priority}.{key}: unknown target ({', '.join(CLOCKS)} or a case type)")
                else:
                    _check_duration(f"{path}.{priority}.{key}", value)

    def _check_duration(path: str, value: object) -> None:
        try:
            parse_duration(str(value))
        except ValueError as e:
            problems.append(f"{path}: {e}")

    seen: set[str] = set()
    for i, c in enumerate(cfg.contracts):
        if c is None:
            continue
        path = f"contracts[{i}] ({c.name!r})"
        if c.name.casefold() in seen:
            problems.append(f"{path}.name: another contract has this name")
        seen.add(c.name.casefold())
        if c.calendar not in names:
            problems.append(f"{path}.calendar: calendar {c.calendar!r} is not defined in [[calendars]] (or 24x7)")
        if c.team is not None and c.team not in teams:
            problems.append(f"{path}.team: team {c.team!r} is not defined in [[teams]]")
        if c.agent is not None and cfg.agent(c.agent) is None:
            problems.append(f"{path}.agent: {c.agent!r} is not a configured agent")
        check_table(f"{path}.sla", c.sla)
    if cfg.sla.calendar not in names:
        problems.append(f"sla.calendar: calendar {cfg.sla.calendar!r} is not defined in [[calendars]] (or 24x7)")
    check_table("sla.targets", cfg.sla.targets)
    return problems


@dataclass(frozen=True)
class Clocks:
    first_response_due_at: datetime | None
    due_at: datetime | None
    first_response_warn_at: datetime | None
    resolution_warn_at: datetime | None


def start_clocks(targets: SlaTargets, start: datetime, calendars: dict) -> Clocks:  # type: ignore[type-arg]
    """Due and warning times of a new case, in the contract's business calendar."""
    cal = calendars[targets.calendar]

    def at(fraction: float, target: timedelta | None) -> datetime | None:
        return cal.add(start, target * fraction) if target is not None else None

    return Clocks(first_response_due_at=at(1.0, targets.first_response), due_at=at(1.0, targets.resolution),
                  first_response_warn_at=at(WARN_AT, targets.first_response),
                  resolution_warn_at=at(WARN_AT, targets.resolution))
