"""Routing rules (SPEC §9): every problem of a `[[rules]]` table found at load with its path,
matching on the facts of a case, and planning the changes of the matching rules in file order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from maild.config import Config, RuleConfig, parse_config
from maild.config_checks import check_features, load_checked_config
from maild.domain.case import FieldChange, FollowChange, TagChange
from maild.domain.errors import ConfigError
from maild.rules.routing import Facts, check_rules, plan_rules, rule_matches

SOURCE = "test.toml"


def base(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid config with two teams and two agents, plus the given rules."""
    return {
        "mailboxes": [{"address": "support@example.com", "team": "support"},
                      {"address": "billing@example.com", "team": "billing"}],
        "teams": [{"name": "support", "agents": ["alice@example.com"]},
                  {"name": "billing", "agents": ["bob@example.com"]}],
        "agents": [{"email": "alice@example.com", "name": "Alice"},
                   {"email": "bob@example.com", "name": "Bob", "role": "manager"}],
        "rules": rules,
    }


def load(rules: list[dict[str, Any]]) -> Config:
    return parse_config(base(rules), SOURCE, Path("/etc/maild"), check_features)


def problems(rules: list[dict[str, Any]]) -> list[str]:
    """The problems parse_config reports, without the "test.toml: " each one starts with."""
    with pytest.raises(ConfigError) as e:
        load(rules)
    assert all(p.startswith(f"{SOURCE}: ") for p in e.value.problems), e.value.problems
    return [p.removeprefix(f"{SOURCE}: ") for p in e.value.problems]


def one_problem(rule: dict[str, Any], path: str) -> str:
    """The single problem of a config with this one rule; it must be at `path`."""
    found = problems([rule])
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: "), found
    return found[0]


# --- check_rules -------------------------------------------------------------------------

EVERY_KEY_RULE = {
    "name": "everything",
    "when": {"mailbox": "support@example.com", "from": ["jane@acme.test", "joe@acme.test"],
             "from_domain": "acme.test", "organization": "Acme", "contract": "gold", "type": "incident",
             "tag": ["vip", "printer"], "priority": ["high", "urgent"], "event": ["case_created", "post_public"],
             "subject": r"print(er|ing)\b", "body": "on fire"},
    "then": {"team": "billing", "assign": "ALICE@example.com", "priority": "urgent", "type": "problem",
             "add_tags": ["acme"], "remove_tags": "spam", "follow": ["bob@example.com"],
             "notify": ["alice@example.com", "boss@acme.test"], "auto_reply": "case_created", "stop": True},
}


def test_a_valid_config_using_every_key_has_no_problems() -> None:
    cfg = load([EVERY_KEY_RULE, {"name": "empty"}])
    assert check_rules(cfg) == []
    assert [r.name for r in cfg.rules] == ["everything", "empty"]
    assert cfg.rules[0].when["subject"] == r"print(er|ing)\b"
    assert cfg.rules[1] == RuleConfig(name="empty", when={}, then={})


def test_the_example_of_the_spec_loads_from_a_file(tmp_path: Path) -> None:
    p = tmp_path / "maild.toml"
    p.write_text("""
[[mailboxes]]
address = "support@example.com"
team = "support"
[[teams]]
name = "support"
[[teams]]
name = "billing"
[[rules]]
name = "acme to billing"
when = { from_domain = "acme.test" }
then = { team = "billing", priority = "high", add_tags = ["acme"] }
""")
    cfg = load_checked_config(p)
    assert check_rules(cfg) == []
    assert cfg.rules == [RuleConfig(name="acme to billing", when={"from_domain": "acme.test"},
                                    then={"team": "billing", "priority": "high", "add_tags": ["acme"]})]


def test_an_unknown_when_key_is_reported_with_its_path() -> None:
    p = one_problem({"name": "r", "when": {"colour": "red"}}, "rules[0] ('r').when.colour")
    assert "unknown condition" in p
    assert "from_domain" in p  # names the known ones


def test_an_unknown_then_key_is_reported_with_its_path() -> None:
    p = one_problem({"name": "r", "then": {"escalate": True}}, "rules[0] ('r').then.escalate")
    assert "unknown action" in p
    assert "add_tags" in p


@pytest.mark.parametrize("key", ["subject", "body"])
def test_a_bad_regex_is_reported_with_the_regex_error(key: str) -> None:
    p = one_problem({"name": "r", "when": {key: "(unclosed"}}, f"rules[0] ('r').when.{key}")
    assert p.endswith(f"not a regular expression: {_regex_error('(unclosed')}")


def test_an_unknown_team_is_reported() -> None:
    p = one_problem({"name": "r", "then": {"team": "sales"}}, "rules[0] ('r').then.team")
    assert "'sales'" in p and "[[teams]]" in p


def test_an_unknown_agent_to_assign_is_reported() -> None:
    p = one_problem({"name": "r", "then": {"assign": "carol@example.com"}}, "rules[0] ('r').then.assign")
    assert "'carol@example.com' is not a configured agent" in p


def test_agents_are_found_whatever_the_case_of_their_address() -> None:
    assert check_rules(load([{"name": "r", "then": {"assign": "Bob@Example.COM", "follow": "ALICE@example.com"}}]))\
        == []


def test_each_unknown_agent_to_follow_is_reported_and_known_ones_are_not() -> None:
    found = problems([{"name": "r", "then": {"follow": ["alice@example.com", "carol@example.com", "dan@x.test"]}}])
    assert found == ["rules[0] ('r').then.follow: 'carol@example.com' is not a configured agent",
                     "rules[0] ('r').then.follow: 'dan@x.test' is not a configured agent"]


@pytest.mark.parametrize(("section", "key", "value", "reason"), [
    ("then", "priority", "critical", "unknown priority 'critical'"),
    ("then", "type", "bug", "unknown type 'bug'"),
    ("when", "priority", ["high", "critical"], "unknown priority 'critical'"),
    ("when", "type", "bug", "unknown type 'bug'"),
    ("when", "event", "case_deleted", "unknown event 'case_deleted'"),
    ("when", "event", ["case_created", "post_publik"], "unknown event 'post_publik'"),
])
def test_unknown_priorities_types_and_events_are_reported(section: str, key: str, value: object,
                                                          reason: str) -> None:
    p = one_problem({"name": "r", section: {key: value}}, f"rules[0] ('r').{section}.{key}")
    assert reason in p


def test_duplicate_rule_names_are_reported_at_the_second() -> None:
    found = problems([{"name": "same"}, {"name": "other"}, {"name": "same"}])
    assert len(found) == 1, found
    assert found[0].startswith("rules[2] ('same').name: ")


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("when", "from_domain", 5, "expected a string or a list of strings"),
    ("when", "tag", ["vip", 3], "expected a string or a list of strings"),
    ("when", "subject", ["a", "b"], "expected a regular expression string"),
    ("then", "stop", "yes", "expected true or false"),
    ("then", "add_tags", [1, 2], "expected a string or a list of strings"),
    ("then", "notify", {"to": "x"}, "expected a string or a list of strings"),
    ("then", "follow", 7, "expected a string or a list of strings"),
    ("then", "team", ["support"], "expected a string"),
    ("then", "assign", 1, "expected a string"),
    ("then", "auto_reply", True, "expected a string"),
])
def test_values_of_the_wrong_type_are_reported(section: str, key: str, value: object, expected: str) -> None:
    p = one_problem({"name": "r", section: {key: value}}, f"rules[0] ('r').{section}.{key}")
    assert expected in p


def test_a_rule_that_is_not_a_table_or_lacks_a_name_is_reported() -> None:
    found = problems([{"when": {"from_domain": "acme.test"}}, {"name": 5}, {"name": "r", "when": "acme"},
                      {"name": "s", "if": {}}])
    assert "rules[0].name: missing (required)" in found
    assert any(p.startswith("rules[1].name: expected a string") for p in found), found
    assert any(p.startswith("rules[2].when: expected a table") for p in found), found
    assert any(p.startswith("rules[3].if: unknown key") for p in found), found


def test_every_problem_is_reported_at_once_in_order() -> None:
    found = problems([
        {"name": "a", "when": {"colour": "red", "subject": "("}, "then": {"team": "sales"}},
        {"name": "b", "then": {"assign": "carol@example.com", "priority": "critical"}},
    ])
    assert [p.split(":")[0] for p in found] == [
        "rules[0] ('a').when.colour", "rules[0] ('a').when.subject", "rules[0] ('a').then.team",
        "rules[1] ('b').then.assign", "rules[1] ('b').then.priority"]


def test_check_rules_gives_the_same_problems_for_a_config_built_in_code() -> None:
    cfg = Config(rules=[RuleConfig(name="to sales", then={"team": "sales"}),
                        RuleConfig(name="to sales", when={"from_domain": "acme.test"})])
    assert check_rules(cfg) == [
        "rules[0] ('to sales').then.team: team 'sales' is not defined in [[teams]]",
        "rules[1] ('to sales').name: another rule has this name; history names rules, so they must differ"]


def test_the_config_error_message_names_the_file_the_rule_and_its_name() -> None:
    with pytest.raises(ConfigError) as e:
        load([{"name": "acme to billing", "when": {"from_domain": "acme.test"}, "then": {"team": "finance"}}])
    message = str(e.value)
    assert message.startswith("test.toml: ")
    assert "rules[0]" in message
    assert "acme to billing" in message
    assert "then.team" in message and "finance" in message


def test_a_bad_rule_in_a_file_fails_load_config_with_the_file_name(tmp_path: Path) -> None:
    p = tmp_path / "maild.toml"
    p.write_text('[[rules]]\nname = "vip"\nwhen = { subject = "[unclosed" }\n')
    with pytest.raises(ConfigError) as e:
        load_checked_config(p)
    assert e.value.problems == [f"{p}: rules[0] ('vip').when.subject: not a regular expression: "
                                f"{_regex_error('[unclosed')}"]


def _regex_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        return str(e)
    raise AssertionError(f"{pattern!r} compiles")


# --- rule_matches ------------------------------------------------------------------------

def facts(**kw: Any) -> Facts:
    values: dict[str, Any] = {
        "event": "case_created", "mailbox": "support@example.com", "sender": "Jane.Doe@Acme.TEST",
        "organization": ("Acme Corp", "acme.test", "acme.example"), "contracts": ("gold",),
        "subject": "Printer on fire", "body": "It still BURNS.\nSecond line.", "type": "incident",
        "tags": ("vip", "printer"), "priority": "high",
    }
    values.update(kw)
    return Facts(**values)


def rule(when: dict[str, object] | None = None, then: dict[str, object] | None = None, name: str = "r") -> RuleConfig:
    return RuleConfig(name=name, when=when or {}, then=then or {})


def matches(when: dict[str, object], **kw: Any) -> bool:
    return rule_matches(rule(when), facts(**kw))


def test_a_rule_without_conditions_matches_every_new_case() -> None:
    assert matches({})
    assert matches({}, sender="", organization=(), tags=(), subject="", body="")


@pytest.mark.parametrize("wanted", ["acme.test", "ACME.test", ["other.test", "Acme.Test"]])
def test_from_domain_matches_case_insensitively(wanted: object) -> None:
    assert matches({"from_domain": wanted})


@pytest.mark.parametrize("wanted", ["other.test", "test", "doe@acme.test", "sub.acme.test", ["a.test", "b.test"]])
def test_from_domain_is_the_whole_domain_of_the_sender(wanted: object) -> None:
    assert not matches({"from_domain": wanted})


def test_from_matches_the_whole_address_case_insensitively() -> None:
    assert matches({"from": "jane.doe@acme.test"})
    assert matches({"from": ["joe@acme.test", "JANE.DOE@acme.test"]})
    assert not matches({"from": "jane@acme.test"})
    assert not matches({"from": "acme.test"})


def test_mailbox_matches_the_mailbox_the_mail_came_to() -> None:
    assert matches({"mailbox": "support@example.com"})
    assert matches({"mailbox": ["billing@example.com", "Support@Example.com"]})
    assert not matches({"mailbox": "billing@example.com"})


@pytest.mark.parametrize("wanted", ["Acme Corp", "acme corp", "acme.test", "ACME.EXAMPLE", ["Globex", "acme.test"]])
def test_organization_matches_by_name_or_by_any_of_its_domains(wanted: object) -> None:
    assert matches({"organization": wanted})


def test_organization_does_not_match_another_or_no_organization() -> None:
    assert not matches({"organization": "Globex"})
    assert not matches({"organization": "Acme"})  # the whole name, not a part
    assert not matches({"organization": "acme.test"}, organization=())


def test_contract_matches_any_contract_of_the_case() -> None:
    assert matches({"contract": "GOLD"})
    assert not matches({"contract": "gold"}, contracts=())


def test_tag_matches_when_the_case_has_any_of_the_tags() -> None:
    assert matches({"tag": "printer"})
    assert matches({"tag": ["spam", "VIP"]})
    assert not matches({"tag": "spam"})
    assert not matches({"tag": "vip"}, tags=())


def test_priority_and_type_match_the_case() -> None:
    assert matches({"priority": "high"})
    assert matches({"priority": ["urgent", "high"]})
    assert not matches({"priority": "high"}, priority="normal")
    assert matches({"type": "incident"})
    assert not matches({"type": ["question", "problem"]})


@pytest.mark.parametrize(("when", "expected"), [
    ({"subject": "printer"}, True),  # a part of the subject, any case
    ({"subject": "^printer on"}, True),
    ({"subject": r"on\s+FIRE$"}, True),
    ({"subject": "^fire"}, False),
    ({"subject": "burns"}, False),  # that is in the body
    ({"body": "still burns"}, True),
    ({"body": r"^second line\.$"}, False),  # not multi-line: ^ is the start of the body
    ({"body": r"(?m)^second line\.$"}, True),
    ({"body": "printer"}, False),
])
def test_subject_and_body_are_searched_with_case_insensitive_regexes(when: dict[str, object],
                                                                     expected: bool) -> None:
    assert matches(when) is expected


def test_all_conditions_must_hold() -> None:
    when: dict[str, object] = {"from_domain": "acme.test", "tag": "vip", "subject": "fire", "priority": "high"}
    assert matches(when)
    assert not matches(when, tags=("printer",))
    assert not matches(when, subject="Printer jammed")
    assert not matches(when, sender="jane@other.test")
    assert not matches(when, priority="low")


def test_a_rule_without_event_runs_on_case_created_only() -> None:
    assert matches({})
    for event in ("post_public", "post_internal", "tags_changed", "closed"):
        assert not matches({}, event=event)
        assert not matches({"from_domain": "acme.test"}, event=event)


def test_a_rule_naming_an_event_runs_on_that_event_only() -> None:
    when: dict[str, object] = {"event": "tags_changed", "tag": "vip"}
    assert matches(when, event="tags_changed")
    assert not matches(when, event="case_created")
    assert not matches(when, event="post_public")
    assert not matches(when, event="tags_changed", tags=())


def test_a_list_of_events_runs_on_any_of_them() -> None:
    when: dict[str, object] = {"event": ["case_created", "post_public"]}
    assert matches(when)
    assert matches(when, event="post_public")
    assert not matches(when, event="post_internal")


# --- plan_rules --------------------------------------------------------------------------

def test_no_rules_or_no_matching_rule_plans_nothing() -> None:
    assert plan_rules([], facts()) == []
    assert plan_rules([rule({"from_domain": "other.test"}, {"team": "billing"})], facts()) == []


def test_actions_become_changes() -> None:
    cfg = load([{"name": "acme", "when": {"from_domain": "acme.test"},
                 "then": {"team": "billing", "assign": "Bob@Example.com", "priority": "urgent", "type": "problem",
                          "add_tags": ["Acme", "vip"], "remove_tags": "spam", "follow": ["ALICE@example.com"]}}])
    (actions,) = plan_rules(cfg.rules, facts())
    assert actions.rule == "acme"
    assert actions.changes == [
        FieldChange("queue", "billing"),
        FieldChange("assignee", "bob@example.com"),
        FieldChange("priority", "urgent"),
        FieldChange("type", "problem"),
        TagChange(("acme", "vip"), ("spam",)),
        FollowChange("alice@example.com", True),
    ]
    assert actions.notify == []
    assert actions.auto_reply is None


def test_a_single_tag_and_follower_may_be_a_string() -> None:
    (actions,) = plan_rules([rule(then={"add_tags": "vip", "follow": "bob@example.com"})], facts())
    assert actions.changes == [TagChange(("vip",), ()), FollowChange("bob@example.com", True)]


def test_only_removing_tags_is_a_tag_change() -> None:
    (actions,) = plan_rules([rule(then={"remove_tags": ["spam", "new"]})], facts())
    assert actions.changes == [TagChange((), ("spam", "new"))]


def test_notify_and_auto_reply_are_carried() -> None:
    (actions,) = plan_rules([rule(then={"notify": ["bob@example.com", "boss@acme.test"],
                                        "auto_reply": "vip_ack"})], facts())
    assert actions.changes == []
    assert actions.notify == ["bob@example.com", "boss@acme.test"]
    assert actions.auto_reply == "vip_ack"
    (actions,) = plan_rules([rule(then={"notify": "bob@example.com"})], facts())
    assert actions.notify == ["bob@example.com"]


def test_matching_rules_run_in_file_order_each_under_its_name() -> None:
    rules = [rule({"from_domain": "acme.test"}, {"team": "billing"}, name="first"),
             rule({"tag": "nope"}, {"team": "support"}, name="skipped"),
             rule({}, {"priority": "urgent"}, name="second"),
             rule({"subject": "fire"}, {"team": "support"}, name="third")]
    planned = plan_rules(rules, facts())
    assert [a.rule for a in planned] == ["first", "second", "third"]
    assert [a.changes for a in planned] == [[FieldChange("queue", "billing")], [FieldChange("priority", "urgent")],
                                            [FieldChange("queue", "support")]]


def test_stop_ends_the_evaluation_after_its_own_actions() -> None:
    rules = [rule({}, {"add_tags": "seen"}, name="tag"),
             rule({"from_domain": "acme.test"}, {"team": "billing", "stop": True}, name="acme"),
             rule({}, {"team": "support"}, name="catch-all")]
    planned = plan_rules(rules, facts())
    assert [a.rule for a in planned] == ["tag", "acme"]
    assert planned[1].changes == [FieldChange("queue", "billing")]


def test_a_stop_rule_that_does_not_match_does_not_stop() -> None:
    rules = [rule({"from_domain": "globex.test"}, {"team": "billing", "stop": True}, name="globex"),
             rule({}, {"team": "support"}, name="catch-all")]
    assert [a.rule for a in plan_rules(rules, facts())] == ["catch-all"]


def test_stop_false_does_not_stop() -> None:
    rules = [rule({}, {"stop": False}, name="a"), rule({}, {"team": "support"}, name="b")]
    assert [a.rule for a in plan_rules(rules, facts())] == ["a", "b"]


def test_rules_for_other_events_are_skipped_in_the_plan() -> None:
    rules = [rule({}, {"team": "billing", "stop": True}, name="on new cases"),
             rule({"event": "post_public", "from_domain": "acme.test"}, {"add_tags": "replied"}, name="on replies")]
    assert [a.rule for a in plan_rules(rules, facts())] == ["on new cases"]
    assert [a.rule for a in plan_rules(rules, facts(event="post_public"))] == ["on replies"]
