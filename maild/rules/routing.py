"""Routing rules from `[[rules]]` (SPEC §9): pure matching and planning, checked at load.

Rules run in file order on case_created and, for a rule that names an `event`, on that
event. Each matching rule's `then` becomes changes that the caller applies through
store.changes with the rule's name, so every action a rule takes is in the history under
it. `stop` ends the evaluation; actions taken by rules raise events that do not run rules
again (no chains, no loops).

`when` keys, all of which must hold (a list means any of its values):
  mailbox, from, from_domain, organization (name or domain), contract, type, tag, priority,
  event (default case_created), subject and body (regular expressions, case-insensitive).
`then` keys: team, assign, priority, type, add_tags, remove_tags, follow (agents),
  notify (agents or addresses), auto_reply (a template name), stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from maild.config import ADDRESS_RE, Config, RuleConfig
from maild.domain.case import Change, FieldChange, FollowChange, TagChange
from maild.domain.stages import PRIORITIES, TYPES

WHEN_LIST_KEYS = ("mailbox", "from", "from_domain", "organization", "contract", "type", "tag", "priority", "event")
WHEN_REGEX_KEYS = ("subject", "body")
EVENTS = ("case_created", "post_public", "post_internal", "stage_changed", "queue_changed", "assigned",
          "tags_changed", "attachment_added", "attachment_removed", "priority_changed", "due_changed",
          "sla_warning", "sla_breached", "closed")
THEN_KEYS = ("team", "assign", "priority", "type", "add_tags", "remove_tags", "follow", "notify", "auto_reply",
             "stop")


@dataclass(frozen=True)
class Facts:
    """What rules look at, gathered by the caller from the case and the mail."""

    event: str
    mailbox: str
    sender: str
    organization: tuple[str, ...] = ()  # its name and domains
    contracts: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    type: str = "question"
    tags: tuple[str, ...] = ()
    priority: str = "normal"


@dataclass(frozen=True)
class RuleActions:
    rule: str
    changes: list[Change]
    notify: list[str] = field(default_factory=list)
    auto_reply: str | None = None


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError


def check_rules(cfg: Config) -> list[str]:
    """Every problem of every rule, with its path, for check-config and reload."""
    problems: list[str] = []
    names: set[str] = set()
    teams = {t.name for t in cfg.teams if t is not None}
    for i, rule in enumerate(cfg.rules):
        if rule is None:
            continue
        where = f"rules[{i}] ({rule.name!r})"
        if rule.name in names:
            problems.append(f"{where}.name: another rule has this name; history names rules, so they must differ")
        names.add(rule.name)
        for key, value in rule.when.items():
            if key in WHEN_REGEX_KEYS:
                if not isinstance(value, str):
                    problems.append(f"{where}.when.{key}: expected a regular expression string, got {value!r}")
                    continue
                try:
                    re.compile(value)
                except re.error as e:
                    problems.append(f"{where}.when.{key}: not a regular expression: {e}")
            elif key in WHEN_LIST_KEYS:
                try:
                    values = _as_list(value)
                except TypeError:
                    problems.append(f"{where}.when.{key}: expected a string or a list of strings, got {value!r}")
                    continue
                if key == "event":
                    problems += [f"{where}.when.event: unknown event {v!r} (events: {', '.join(EVENTS)})"
                                 for v in values if v not in EVENTS]
                if key == "priority":
                    problems += [f"{where}.when.priority: unknown priority {v!r}" for v in values
                                 if v not in PRIORITIES]
                if key == "type":
                    problems += [f"{where}.when.type: unknown type {v!r}" for v in values if v not in TYPES]
            else:
                known = ", ".join(WHEN_LIST_KEYS + WHEN_REGEX_KEYS)
                problems.append(f"{where}.when.{key}: unknown condition (known: {known})")
        for key, value in rule.then.items():
            path = f"{where}.then.{key}"
            if key not in THEN_KEYS:
                problems.append(f"{path}: unknown action (known: {', '.join(THEN_KEYS)})")
            elif key == "stop":
                if not isinstance(value, bool):
                    problems.append(f"{path}: expected true or false, got {value!r}")
            elif key in ("add_tags", "remove_tags", "follow", "notify"):
                try:
                    values = _as_list(value)
                except TypeError:
                    problems.append(f"{path}: expected a string or a list of strings, got {value!r}")
                    continue
                if key == "follow":
                    problems += [f"{path}: {v!r} is not a configured agent" for v in values if cfg.agent(v) is None]
                if key == "notify":
                    problems += [f"{path}: {v!r} is not an email address" for v in values if not ADDRESS_RE.match(v)]
            elif not isinstance(value, str):
                problems.append(f"{path}: expected a string, got {value!r}")
            elif key == "team" and value not in teams:
                problems.append(f"{path}: team {value!r} is not defined in [[teams]]")
            elif key == "assign" and cfg.agent(value) is None:
                problems.append(f"{path}: {value!r} is not a configured agent")
            elif key == "priority" and value not in PRIORITIES:
                problems.append(f"{path}: unknown priority {value!r} (priorities: {', '.join(PRIORITIES)})")
            elif key == "type" and value not in TYPES:
                problems.append(f"{path}: unknown type {value!r} (types: {', '.join(TYPES)})")
    return problems


def rule_matches(rule: RuleConfig, facts: Facts) -> bool:
    when = rule.when
    if facts.event not in _as_list(when.get("event", "case_created")):
        return False
    checks: dict[str, tuple[str, ...]] = {
        "mailbox": (facts.mailbox,), "from": (facts.sender,), "from_domain": (facts.sender.rpartition("@")[2],),
        "organization": facts.organization, "contract": facts.contracts, "type": (facts.type,), "tag": facts.tags,
        "priority": (facts.priority,),
    }
    for key, have in checks.items():
        if key in when:
            wanted = {v.casefold() for v in _as_list(when[key])}
            if not any(h.casefold() in wanted for h in have):
                return False
    for key, text in (("subject", facts.subject), ("body", facts.body)):
        if key in when and not re.search(str(when[key]), text, re.IGNORECASE):
            return False
    return True


def plan_rules(rules: list[RuleConfig], facts: Facts) -> list[RuleActions]:
    """The actions of every matching rule, in file order, up to the first that says stop."""
    out: list[RuleActions] = []
    for rule in rules:
        if not rule_matches(rule, facts):
            continue
        then = rule.then
        changes: list[Change] = []
        for key in ("team", "assign", "priority", "type"):
            if key in then:
                target = {"team": "queue", "assign": "assignee"}.get(key, key)
                value = str(then[key]).lower() if key == "assign" else str(then[key])
                changes.append(FieldChange(target, value))
        add = tuple(t.lower() for t in _as_list(then.get("add_tags", [])))
        remove = tuple(t.lower() for t in _as_list(then.get("remove_tags", [])))
        if add or remove:
            changes.append(TagChange(add, remove))
        changes += [FollowChange(a.lower(), True) for a in _as_list(then.get("follow", []))]
        auto_reply = then.get("auto_reply")
        out.append(RuleActions(rule=rule.name, changes=changes, notify=_as_list(then.get("notify", [])),
                               auto_reply=str(auto_reply) if auto_reply else None))
        if then.get("stop") is True:
            break
    return out
