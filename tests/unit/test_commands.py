"""Mail commands: parsing replies as agents write them in Gmail and Outlook, and planning changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from maild.config import AgentConfig, Config, PolicyConfig, TeamConfig
from maild.domain.case import CaseSnapshot, DetachRequest, FieldChange, FollowChange, ForwardRequest, TagChange
from maild.rules.commands import (
    Command,
    CommandError,
    ParsedReply,
    Plan,
    add_months,
    parse_reply_commands,
    plan_commands,
)

JANE = AgentConfig(email="jane@help.test", name="Jane Doe")
JANE_ROE = AgentConfig(email="jroe@help.test", name="Jane Roe")
BOB = AgentConfig(email="Bob@help.test", name="Bob Smith", role="manager")
ALICE = AgentConfig(email="alice@help.test", name="Alice Martin")
TEAMS = [TeamConfig(name="support"), TeamConfig(name="Billing"), TeamConfig(name="Second Level")]
CONFIG = Config(agents=[JANE, JANE_ROE, BOB, ALICE], teams=TEAMS)
STRICT = Config(agents=[JANE, JANE_ROE, BOB, ALICE], teams=TEAMS, policy=PolicyConfig(close_requires_manager=True))
NOW = datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
CASE = CaseSnapshot(stage="open", queue="support", assignee=None, tags=("vpn", "vip"), due_at=None,
                    followers=("jane@help.test",))


def plan(text: str, case: CaseSnapshot = CASE, actor: AgentConfig = ALICE, config: Config = CONFIG,
         now: datetime = NOW) -> Plan:
    """Parses and plans; the parse must be clean so plan errors are the only ones."""
    parsed = parse_reply_commands(text)
    assert parsed.errors == []
    return plan_commands(parsed.commands, case, actor, config, now)


def reasons(errors: list[CommandError]) -> list[str]:
    return [e.reason for e in errors]


# --- parsing -----------------------------------------------------------------------------

def test_gmail_note_with_command_and_text() -> None:
    parsed = parse_reply_commands("#note\n/stage pending\nHi Jane,\n\nwaiting for the vendor.\n\nAlice\n")
    assert parsed.visibility == "internal"
    assert parsed.commands == [Command("stage", "pending", 2, "/stage pending")]
    assert parsed.errors == []
    assert parsed.text == "Hi Jane,\n\nwaiting for the vendor.\n\nAlice"


def test_outlook_crlf_with_capitalised_command_and_blank_lines() -> None:
    text = "\r\n/Stage Pending\r\n/ASSIGN me\r\n\r\n#Public\r\n\r\nHello Jane,\r\nfixed.\r\n\r\n"
    parsed = parse_reply_commands(text)
    assert parsed.visibility == "public"  # a marker may come after command lines
    assert [(c.name, c.args, c.line, c.source) for c in parsed.commands] == [
        ("stage", "Pending", 2, "/Stage Pending"), ("assign", "me", 3, "/ASSIGN me")]
    assert parsed.text == "Hello Jane,\nfixed."
    assert "\r" not in parsed.text


@pytest.mark.parametrize(("marker", "visibility"), [("#note", "internal"), ("#internal", "internal"),
                                                     ("#NOTE", "internal"), ("  #public  ", "public")])
def test_markers(marker: str, visibility: str) -> None:
    parsed = parse_reply_commands(f"{marker}\nThanks!")
    assert (parsed.visibility, parsed.text, parsed.commands) == (visibility, "Thanks!", [])


def test_no_marker_and_no_commands_is_all_text() -> None:
    parsed = parse_reply_commands("\n\nHi,\n  indented line\n#note\n")
    assert parsed == parse_reply_commands("Hi,\n  indented line\n#note")
    assert (parsed.visibility, parsed.commands, parsed.errors) == (None, [], [])
    assert parsed.text == "Hi,\n  indented line\n#note"  # a marker after the text is text


def test_commands_after_text_are_text() -> None:
    parsed = parse_reply_commands("/priority high\nPlease run:\n/stage closed\n/usr/bin/reset\n")
    assert [c.name for c in parsed.commands] == ["priority"]
    assert parsed.text == "Please run:\n/stage closed\n/usr/bin/reset"


@pytest.mark.parametrize("first", ["/ 2 of the printers are fine", "/usr/bin/python crashes", "/2fa does not work",
                                   "/etc/hosts was edited", "#notes from the call"])
def test_slash_not_followed_by_a_letter_or_a_path_starts_the_text(first: str) -> None:
    parsed = parse_reply_commands(f"{first}\n/stage open")
    assert (parsed.commands, parsed.errors) == ([], [])
    assert parsed.text == f"{first}\n/stage open"


def test_commands_only_reply_has_no_text() -> None:
    parsed = parse_reply_commands("/close\r\n/follow\r\n")
    assert [c.name for c in parsed.commands] == ["close", "follow"]
    assert parsed.text == ""
    assert parse_reply_commands("") == ParsedReply(None, [], [], "")


def test_byte_order_mark_and_nbsp_are_ignored() -> None:
    parsed = parse_reply_commands("\ufeff#note\n\xa0/tag +urgent\xa0\nok")
    assert parsed.visibility == "internal"
    assert parsed.commands == [Command("tag", "+urgent", 2, "/tag +urgent")]


def test_outlook_mailto_links_are_undone() -> None:
    parsed = parse_reply_commands("/forward jane@acme.test<mailto:jane@acme.test> notes\n"
                                  "/assign bob@help.test <mailto:bob@help.test>")
    assert parsed.errors == []
    assert [c.args for c in parsed.commands] == ["jane@acme.test notes", "bob@help.test"]


def test_unknown_command_suggests_and_lists() -> None:
    parsed = parse_reply_commands("#note\n/asign me\n/frobnicate now\nHi")
    assert parsed.commands == []
    assert [(e.line, e.source) for e in parsed.errors] == [(2, "/asign me"), (3, "/frobnicate now")]
    assert parsed.errors[0].reason.startswith("unknown command /asign (did you mean /assign? known: /stage, /queue")
    assert parsed.errors[1].reason.startswith("unknown command /frobnicate (known: /stage, /queue, /assign")
    assert parsed.text == "Hi"


def test_unknown_command_with_glued_punctuation() -> None:
    parsed = parse_reply_commands("/stage:pending")
    assert parsed.errors[0].reason.startswith("unknown command /stage:pending")


@pytest.mark.parametrize(("line", "reason"), [
    ("/unassign jane", "/unassign takes no argument; remove 'jane'"),
    ("/follow please", "/follow takes no argument; remove 'please'"),
    ("/unfollow x", "/unfollow takes no argument; remove 'x'"),
    ("/stage", "/stage needs a value, e.g. /stage pending"),
    ("/stage pending now", "/stage takes one value, not 'pending now'; e.g. /stage pending"),
    ("/type", "/type needs a value, e.g. /type incident"),
    ("/priority very high", "/priority takes one value, not 'very high'; e.g. /priority high"),
    ("/postpone 2 d", "/postpone takes one value, not '2 d'; e.g. /postpone 3d or /postpone 2026-12-24"),
    ("/queue", "/queue needs a value, e.g. /queue billing"),
    ("/assign", "/assign needs a value, e.g. /assign me"),
    ("/tag", "/tag needs a value, e.g. /tag +vip -spam"),
    ("/root-cause", "/root-cause needs a value, e.g. /root-cause expired certificate"),
    ("/forward", "/forward needs an address, e.g. /forward jane@example.com (add 'notes' to include internal notes)"),
    ("/forward a@b.test please", "/forward takes an address and optionally 'notes', not 'a@b.test please'; "
                                 "e.g. /forward jane@example.com or /forward jane@example.com notes"),
    ("/field", "/field needs a name and a value, e.g. /field contract_id 4711"),
    ("/field contract_id", "/field needs a name and a value, e.g. /field contract_id 4711"),
])
def test_syntax_errors(line: str, reason: str) -> None:
    parsed = parse_reply_commands(f"#note\n{line}\nText")
    assert parsed.commands == []
    assert parsed.errors == [CommandError(2, line, reason)]


def test_contradicting_markers_are_an_error_repeated_ones_are_not() -> None:
    parsed = parse_reply_commands("#note\n/follow\n#public\nHi")
    assert parsed.visibility == "internal"
    assert parsed.errors == [CommandError(3, "#public", "#public contradicts the earlier internal marker; "
                                                       "keep one of #note, #internal or #public")]
    assert parse_reply_commands("#note\n#internal\nHi").errors == []


def test_close_with_and_without_reason_parses() -> None:
    parsed = parse_reply_commands("/close\n/CLOSE duplicate of #1234")
    assert [(c.name, c.args) for c in parsed.commands] == [("close", ""), ("close", "duplicate of #1234")]


# --- planning: happy paths ---------------------------------------------------------------

def test_stage() -> None:
    assert plan("/stage Pending").changes == [FieldChange("stage", "pending")]


def test_close_sets_stage_and_reason() -> None:
    assert plan("/close customer confirmed the fix").changes == [
        FieldChange("stage", "closed"), FieldChange("closed_reason", "customer confirmed the fix")]
    assert plan("/close").changes == [FieldChange("stage", "closed"), FieldChange("closed_reason", None)]


def test_queue_by_name_case_insensitive_gives_configured_name() -> None:
    assert plan("/queue billing").changes == [FieldChange("queue", "Billing")]
    assert plan("/queue second level").changes == [FieldChange("queue", "Second Level")]


@pytest.mark.parametrize(("arg", "email"), [
    ("me", "alice@help.test"), ("ME", "alice@help.test"), ("bob@help.test", "Bob@help.test"),
    ("<BOB@help.test>", "Bob@help.test"),
    ("Bob Smith <bob@help.test>", "Bob@help.test"), ("Bob", "Bob@help.test"), ("bob smith", "Bob@help.test"),
    ("Jane Doe", "jane@help.test"), ("jane  roe", "jroe@help.test"), ("alice", "alice@help.test"),
])
def test_assign(arg: str, email: str) -> None:
    actor = ALICE
    case = CaseSnapshot(stage="open", queue="support", assignee="jroe@help.test" if email == "alice@help.test"
                        else None, tags=(), due_at=None, followers=())
    assert plan(f"/assign {arg}", case=case, actor=actor).changes == [FieldChange("assignee", email)]


def test_unassign() -> None:
    case = CaseSnapshot(stage="open", queue=None, assignee="jane@help.test", tags=(), due_at=None, followers=())
    assert plan("/unassign", case=case).changes == [FieldChange("assignee", None)]
    assert plan("/unassign").changes == []  # nobody was assigned


def test_tags_add_remove_and_lowercase() -> None:
    assert plan("/tag +Urgent -vpn Printer").changes == [TagChange(add=("urgent", "printer"), remove=("vpn",))]


def test_tags_unicode_and_punctuation_and_commas() -> None:
    assert plan("/tag Überweisung, +prio:hoch -VIP, v2.1_beta").changes == [
        TagChange(add=("überweisung", "prio:hoch", "v2.1_beta"), remove=("vip",))]


def test_tags_already_there_or_absent_are_no_ops() -> None:
    assert plan("/tag +vpn -missing vip").changes == []
    assert plan("/tag +new -new").changes == []


def test_two_tag_commands_combine_into_one_change_at_the_later_position() -> None:
    assert plan("/tag +a\n/priority high\n/tag -vpn -a +b").changes == [
        FieldChange("priority", "high"), TagChange(add=("b",), remove=("vpn",))]


def test_type_and_priority_case_insensitive() -> None:
    assert plan("/type Incident\n/priority URGENT").changes == [
        FieldChange("type", "incident"), FieldChange("priority", "urgent")]


def test_root_cause_keeps_the_text() -> None:
    assert plan("/root-cause Expired TLS certificate on vpn-gw-2").changes == [
        FieldChange("root_cause", "Expired TLS certificate on vpn-gw-2")]


def test_follow_and_unfollow_use_the_actor() -> None:
    assert plan("/follow").changes == [FollowChange("alice@help.test", True)]
    assert plan("/unfollow", actor=JANE).changes == [FollowChange("jane@help.test", False)]
    assert plan("/follow", actor=JANE).changes == []  # already following
    assert plan("/unfollow").changes == []  # was not following
    assert plan("/follow", actor=AgentConfig(email="JANE@help.test")).changes == []


@pytest.mark.parametrize(("line", "request_"), [
    ("/forward vendor@supplier.test", ForwardRequest("vendor@supplier.test", False)),
    ("/forward vendor@supplier.test notes", ForwardRequest("vendor@supplier.test", True)),
    ("/forward vendor@supplier.test With Notes", ForwardRequest("vendor@supplier.test", True)),
    ("/forward <first.last+tag@mail.supplier.test>", ForwardRequest("first.last+tag@mail.supplier.test", False)),
    ("/forward joerg@müller.test", ForwardRequest("joerg@xn--mller-kva.test", False)),  # as a header carries it
    ("/forward joerg@faß.test", ForwardRequest("joerg@xn--fa-hia.test", False)),  # IDNA 2008: ß is not ss
    ("/forward jiří@příklad.example", ForwardRequest("jiří@příklad.example", False)),  # RFC 6531: SMTPUTF8
])
def test_forward(line: str, request_: ForwardRequest) -> None:
    assert plan(line).changes == [request_]


@pytest.mark.parametrize("address", ["jiří@příklad", "jiří@a..example", "a@-x-.test", "ji<ří@x.test", "jiří\"@x.test"])
def test_forward_refuses_what_no_header_can_carry(address: str) -> None:
    assert "is not an email address" in plan(f"/forward {address}").errors[0].reason


def test_forward_to_two_addresses_keeps_both() -> None:
    assert plan("/forward a@x.test\n/forward b@x.test notes\n/forward A@x.test notes").changes == [
        ForwardRequest("b@x.test", True), ForwardRequest("A@x.test", True)]


def test_field_lowercases_the_name_and_keeps_the_value() -> None:
    assert plan("/field Contract_ID  4711 / Gold").changes == [FieldChange("field:contract_id", "4711 / Gold")]


def test_postpone_relative_from_now_when_no_due_date() -> None:
    assert plan("/postpone 5h").changes == [FieldChange("due_at", NOW + timedelta(hours=5))]
    assert plan("/postpone 2D").changes == [FieldChange("due_at", NOW + timedelta(days=2))]
    assert plan("/postpone 1w").changes == [FieldChange("due_at", NOW + timedelta(weeks=1))]
    assert plan("/postpone 999h").changes == [FieldChange("due_at", NOW + timedelta(hours=999))]


def test_postpone_counts_from_a_future_due_date_and_from_now_for_a_past_one() -> None:
    future = CaseSnapshot(stage="open", queue=None, assignee=None, tags=(), followers=(),
                          due_at=datetime(2026, 2, 3, 9, 0, tzinfo=UTC))
    past = CaseSnapshot(stage="open", queue=None, assignee=None, tags=(), followers=(),
                        due_at=datetime(2026, 1, 20, 9, 0, tzinfo=UTC))
    assert plan("/postpone 3d", case=future).changes == [FieldChange("due_at", datetime(2026, 2, 6, 9, 0, tzinfo=UTC))]
    assert plan("/postpone 3d", case=past).changes == [FieldChange("due_at", NOW + timedelta(days=3))]


def test_postpone_months_are_calendar_months_clamped_to_month_end() -> None:
    # NOW is 2026-01-31: one month on is the last day of February, not March 2/3.
    assert plan("/postpone 1m").changes == [FieldChange("due_at", datetime(2026, 2, 28, 10, 30, tzinfo=UTC))]
    assert plan("/postpone 3M").changes == [FieldChange("due_at", datetime(2026, 4, 30, 10, 30, tzinfo=UTC))]
    assert plan("/postpone 12m").changes == [FieldChange("due_at", datetime(2027, 1, 31, 10, 30, tzinfo=UTC))]
    assert add_months(datetime(2027, 12, 31, tzinfo=UTC), 2) == datetime(2028, 2, 29, tzinfo=UTC)  # leap year
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 14) == datetime(2028, 1, 15, tzinfo=UTC)


def test_postpone_to_a_date_is_midnight_utc() -> None:
    assert plan("/postpone 2026-02-01").changes == [FieldChange("due_at", datetime(2026, 2, 1, tzinfo=UTC))]
    midnight = datetime(2026, 1, 31, tzinfo=UTC)
    assert plan("/postpone 2026-01-31", now=midnight).changes == [FieldChange("due_at", midnight)]


def test_postpone_accepts_a_now_in_another_zone() -> None:
    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert plan("/postpone 1h", now=berlin).changes == [FieldChange("due_at", NOW + timedelta(hours=1))]
    with pytest.raises(ValueError):
        plan("/postpone 1h", now=NOW.replace(tzinfo=None))


def test_reply_with_everything() -> None:
    text = ("#note\r\n/stage pending\r\n/queue Billing\r\n/assign Bob\r\n/tag +invoice -vpn\r\n/type problem\r\n"
            "/priority high\r\n/postpone 2d\r\n/root-cause double booking\r\n/follow\r\n"
            "/forward ap@acme.test\r\n/field po_number PO-77\r\n\r\nAsked accounting to check.\r\n")
    parsed = parse_reply_commands(text)
    assert parsed.errors == [] and parsed.visibility == "internal"
    assert parsed.text == "Asked accounting to check."
    result = plan_commands(parsed.commands, CASE, ALICE, CONFIG, NOW)
    assert result.errors == []
    assert result.changes == [
        FieldChange("stage", "pending"), FieldChange("queue", "Billing"), FieldChange("assignee", "Bob@help.test"),
        TagChange(add=("invoice",), remove=("vpn",)), FieldChange("type", "problem"),
        FieldChange("priority", "high"), FieldChange("due_at", NOW + timedelta(days=2)),
        FieldChange("root_cause", "double booking"), FollowChange("alice@help.test", True),
        ForwardRequest("ap@acme.test", False), FieldChange("field:po_number", "PO-77")]


# --- planning: no-ops and later-wins ----------------------------------------------------

def test_setting_the_current_value_is_dropped() -> None:
    case = CaseSnapshot(stage="pending", queue="Billing", assignee="Bob@help.test", tags=(), followers=(),
                        due_at=datetime(2026, 2, 1, tzinfo=UTC))
    assert plan("/stage pending\n/queue billing\n/assign bob\n/postpone 2026-02-01", case=case).changes == []


def test_later_command_on_the_same_field_wins_at_its_position() -> None:
    assert plan("/priority low\n/stage pending\n/priority high").changes == [
        FieldChange("stage", "pending"), FieldChange("priority", "high")]
    assert plan("/assign me\n/unassign").changes == []  # net: still unassigned
    assert plan("/follow\n/unfollow\n/follow").changes == [FollowChange("alice@help.test", True)]
    assert plan("/field a 1\n/field A 2").changes == [FieldChange("field:a", "2")]


def test_stage_back_to_current_drops_both() -> None:
    assert plan("/stage pending\n/stage open").changes == []


def test_reopening_after_close_in_one_reply_forgets_the_reason() -> None:
    assert plan("/close fixed\n/stage resolved").changes == [FieldChange("stage", "resolved")]


def test_close_on_a_closed_case_only_sets_the_reason() -> None:
    closed = CaseSnapshot(stage="closed", queue=None, assignee=None, tags=(), due_at=None, followers=())
    assert plan("/close duplicate", case=closed).changes == [FieldChange("closed_reason", "duplicate")]


# --- planning: errors --------------------------------------------------------------------

def test_policy_close_requires_manager() -> None:
    denied = "only managers may close cases ([policy] close_requires_manager)"
    for text in ("/close", "/close fixed", "/stage closed", "/stage Closed"):
        result = plan(text, config=STRICT, actor=ALICE)
        assert result.changes == []
        assert result.errors == [CommandError(1, text, denied)]
        assert plan(text, config=STRICT, actor=BOB).errors == []
        assert plan(text, config=CONFIG, actor=ALICE).errors == []  # policy off: anyone closes
    assert plan("/stage resolved", config=STRICT).changes == [FieldChange("stage", "resolved")]


@pytest.mark.parametrize(("line", "reason"), [
    ("/stage pendng", "unknown stage 'pendng' (stages: new, open, pending, resolved, closed)"),
    ("/queue sales", "unknown team 'sales' (teams: support, Billing, Second Level)"),
    ("/type bug", "unknown type 'bug' (types: question, incident, problem)"),
    ("/priority critical", "unknown priority 'critical' (priorities: low, normal, high, urgent)"),
    ("/assign carol@help.test", "carol@help.test is not a configured agent; agents: Jane Doe <jane@help.test>, "
                                "Jane Roe <jroe@help.test>, Bob Smith <Bob@help.test>, Alice Martin <alice@help.test>"),
    ("/assign Jane", "'Jane' matches several agents (Jane Doe <jane@help.test>, Jane Roe <jroe@help.test>); "
                     "write the email address"),
    ("/assign Carol", "no agent is named 'Carol'; write an email address, a full or first name, or 'me' "
                      "(agents: Jane Doe <jane@help.test>, Jane Roe <jroe@help.test>, Bob Smith <Bob@help.test>, "
                      "Alice Martin <alice@help.test>)"),
    ("/assign Doe", "no agent is named 'Doe'; write an email address, a full or first name, or 'me' "
                    "(agents: Jane Doe <jane@help.test>, Jane Roe <jroe@help.test>, Bob Smith <Bob@help.test>, "
                    "Alice Martin <alice@help.test>)"),
    ("/tag +vip #urgent", "'#urgent' is not a tag: tags start with a letter or digit and contain only letters, "
                          "digits and - _ . : (write +tag to add, -tag to remove)"),
    ("/tag +", "'+' is not a tag: tags start with a letter or digit and contain only letters, "
               "digits and - _ . : (write +tag to add, -tag to remove)"),
    ("/tag +-x", "'+-x' is not a tag: tags start with a letter or digit and contain only letters, "
                 "digits and - _ . : (write +tag to add, -tag to remove)"),
    ("/tag " + "x" * 129, f"the tag {'x' * 20!r}... is longer than 128 characters"),
    ("/postpone 0d", "the amount in /postpone must be between 1 and 999, not 0"),
    ("/postpone 1000h", "the amount in /postpone must be between 1 and 999, not 1000"),
    ("/postpone 2y", "/postpone takes <N>h, <N>d, <N>w or <N>m (hours, days, weeks, months; N from 1 to 999) "
                     "or a date YYYY-MM-DD, not '2y'"),
    ("/postpone tomorrow", "/postpone takes <N>h, <N>d, <N>w or <N>m (hours, days, weeks, months; N from 1 to 999) "
                           "or a date YYYY-MM-DD, not 'tomorrow'"),
    ("/postpone 31.01.2026", "/postpone takes <N>h, <N>d, <N>w or <N>m (hours, days, weeks, months; N from 1 to "
                             "999) or a date YYYY-MM-DD, not '31.01.2026'"),
    ("/postpone 2026-02-30", "2026-02-30 is not a date in the calendar; write YYYY-MM-DD, e.g. 2026-12-24"),
    ("/postpone 2026-01-31", "2026-01-31 00:00 UTC is in the past (now is 2026-01-31 10:30 UTC); "
                             "give a later date or an amount like 3d"),
    ("/postpone 2025-12-24", "2025-12-24 00:00 UTC is in the past (now is 2026-01-31 10:30 UTC); "
                             "give a later date or an amount like 3d"),
    ("/forward jane", "'jane' is not an email address; write it like jane@example.com"),
    ("/forward jane@localhost", "'jane@localhost' is not an email address; write it like jane@example.com"),
    ("/forward jane@@acme.test", "'jane@@acme.test' is not an email address; write it like jane@example.com"),
    ("/forward jane..doe@acme.test", "'jane..doe@acme.test' is not an email address; write it like jane@example.com"),
    ("/forward jane@-acme.test", "'jane@-acme.test' is not an email address; write it like jane@example.com"),
    ("/field 1st_contact x", "'1st_contact' is not a field name: start with a letter, then up to 63 letters a-z, "
                             "digits or _"),
    ("/field contract-id x", "'contract-id' is not a field name: start with a letter, then up to 63 letters a-z, "
                             "digits or _"),
    ("/field " + "a" * 65 + " x", f"{'a' * 65!r} is not a field name: start with a letter, then up to 63 letters "
                                  "a-z, digits or _"),
])
def test_plan_errors(line: str, reason: str) -> None:
    result = plan(f"#note\n{line}\n/priority high\nText")
    assert result.errors == [CommandError(2, line, reason)]
    assert result.changes == [FieldChange("priority", "high")]  # the caller applies nothing when errors exist


def test_every_error_is_reported_not_just_the_first() -> None:
    result = plan("/stage x\n/type y\n/queue z")
    assert [(e.line, e.source) for e in result.errors] == [(1, "/stage x"), (2, "/type y"), (3, "/queue z")]


def test_queue_error_without_teams() -> None:
    result = plan("/queue support", config=Config(teams=[]))
    assert reasons(result.errors) == ["unknown team 'support' (teams: none configured)"]


def test_hand_built_commands_are_checked_too() -> None:
    commands = [Command("Stage", " Pending ", 1, "stage pending"), Command("frob", "", 2, "frob"),
                Command("field", "x", 3, "field x"), Command("unassign", "now", 4, "unassign now")]
    result = plan_commands(commands, CASE, ALICE, CONFIG, NOW)
    assert result.changes == [FieldChange("stage", "pending")]
    assert [e.line for e in result.errors] == [2, 3, 4]
    assert result.errors[0].reason.startswith("unknown command /frob (known: /stage")



def test_detach_names_an_existing_attachment() -> None:
    case = CaseSnapshot(stage="open", queue="support", assignee=None, tags=(), due_at=None, followers=(),
                        attachments=("invoice-A.pdf", "photo.jpg"))
    parsed = parse_reply_commands("/detach Invoice-A.pdf\n/detach nope.txt")
    plan = plan_commands(parsed.commands, case, AgentConfig("alice@example.com"), Config(), datetime.now(UTC))
    assert plan.changes == [DetachRequest("invoice-A.pdf")]
    (error,) = plan.errors
    assert error.line == 2 and "no attachment named 'nope.txt'" in error.reason and "photo.jpg" in error.reason
