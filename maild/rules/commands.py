"""Mail commands: read the command lines at the top of an agent's reply and plan their changes.

Agents work from their mail client (SPEC §6), so a reply may start with `#note` and lines like
`/stage pending`. Commands are all-or-nothing per message, so this module only *plans*: it
returns the changes and every error at once, each naming its line and a reason a person can act
on, and the caller applies the plan only when there are no errors. Pure: no database, no I/O.
The case and change types it plans with are vocabulary: import them from maild.domain.case and
maild.domain.stages.
"""

from __future__ import annotations

import calendar
import difflib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from maild.config import AgentConfig, Config
from maild.domain.case import CaseSnapshot, Change, DetachRequest, FieldChange, FollowChange, ForwardRequest, TagChange
from maild.domain.stages import PRIORITIES, STAGES, TYPES
from maild.headers import ascii_address, idna_domain, is_mail_address

MARKERS = {"#note": "internal", "#internal": "internal", "#public": "public"}

# How each command takes its argument; the parser reports a wrong count before planning runs.
NO_ARG = ("unassign", "follow", "unfollow")
ONE_WORD = ("stage", "type", "priority", "postpone")  # exactly one word; "/stage pending now" is an error
REST = ("queue", "assign", "tag", "root-cause", "detach")  # needs text, may contain spaces (team and agent names)
COMMAND_NAMES = ("stage", "queue", "assign", "unassign", "tag", "type", "priority", "postpone", "close",
                 "root-cause", "follow", "unfollow", "forward", "field", "detach")

EXAMPLES = {
    "stage": "/stage pending", "queue": "/queue billing", "assign": "/assign me", "tag": "/tag +vip -spam",
    "type": "/type incident", "priority": "/priority high", "postpone": "/postpone 3d or /postpone 2026-12-24",
    "root-cause": "/root-cause expired certificate", "forward": "/forward jane@example.com",
    "field": "/field contract_id 4711", "detach": "/detach invoice-A.pdf",
}

MAX_AMOUNT = 999
MAX_TAG_LENGTH = 128  # case_tags.tag column
TAG_RE = re.compile(r"[^\W_][\w\-.:]*")  # \w is Unicode: letters, digits and _ of any script
FIELD_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
RELATIVE_RE = re.compile(r"(\d+)([hdwm])", re.I)
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Outlook's plain text writes a linked address as "jane@x.test<mailto:jane@x.test>".
MAILTO_RE = re.compile(r"(\S+?)\s?<mailto:([^>\s]+)>", re.I)
LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
LABEL_RE = re.compile(r"[^\W_]([\w-]{0,61}[^\W_])?")


@dataclass(frozen=True)
class Command:
    name: str  # lowercased command word without the slash, e.g. "root-cause"
    args: str  # the text after the command word, stripped
    line: int  # 1-based line number in the text given to parse_reply_commands
    source: str  # the line as written (stripped)


@dataclass(frozen=True)
class CommandError:
    line: int
    source: str
    reason: str  # a sentence a person can act on


@dataclass(frozen=True)
class ParsedReply:
    visibility: str | None  # "internal" for #note or #internal, "public" for #public, None if no marker
    commands: list[Command]
    errors: list[CommandError]  # unknown commands and syntax errors (missing or extra argument)
    text: str  # what follows the leading marker/command lines, leading/trailing blank lines stripped


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    errors: list[CommandError]


# --- parsing -----------------------------------------------------------------------------

def _is_command_line(stripped: str) -> bool:
    """'/' and a letter starts a command; '/ 2', '/2fa' and paths like '/usr/bin/x' are text."""
    if len(stripped) < 2 or stripped[0] != "/" or not stripped[1].isalpha():
        return False
    return "/" not in stripped[1:].split(None, 1)[0]


def _known_list() -> str:
    return ", ".join("/" + n for n in COMMAND_NAMES)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, COMMAND_NAMES, n=1)
    hint = f"did you mean /{close[0]}? " if close else ""
    return f"unknown command /{name} ({hint}known: {_known_list()})"


def _unlink(args: str) -> str:
    """Undoes Outlook's 'x@y.test<mailto:x@y.test>' so the address reads as written."""
    def repl(m: re.Match[str]) -> str:
        return m.group(1) if m.group(1).casefold() == m.group(2).casefold() else m.group(0)
    return MAILTO_RE.sub(repl, args)


def _syntax_error(name: str, args: str) -> str | None:
    """The reason a command's argument count is wrong, or None when it is right."""
    example = EXAMPLES.get(name, "")
    if name in NO_ARG:
        return f"/{name} takes no argument; remove {args!r}" if args else None
    if name in ONE_WORD:
        if not args:
            return f"/{name} needs a value, e.g. {example}"
        if len(args.split()) > 1:
            return f"/{name} takes one value, not {args!r}; e.g. {example}"
        return None
    if name in REST:
        return None if args else f"/{name} needs a value, e.g. {example}"
    if name == "forward":
        words = args.split()
        if not words:
            return f"/forward needs an address, e.g. {example} (add 'notes' to include internal notes)"
        if [w.lower() for w in words[1:]] not in ([], ["notes"], ["with", "notes"]):
            return (f"/forward takes an address and optionally 'notes', not {args!r}; "
                    f"e.g. {example} or {example} notes")
        return None
    if name == "field":
        if len(args.split(None, 1)) < 2:
            return f"/field needs a name and a value, e.g. {example}"
        return None
    return None  # close: the reason is optional


def parse_reply_commands(text: str) -> ParsedReply:
    """Splits a reply into its leading marker and command lines and the text after them.

    Only the leading block counts, so a '/' later in the text (a path, a quoted command) is never
    run. Lines with syntax errors become errors, not commands, and the caller must not apply any
    command of the message when there are errors.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    visibility: str | None = None
    commands: list[Command] = []
    errors: list[CommandError] = []
    body_start = len(lines)
    for i, raw in enumerate(lines):
        stripped = raw.strip()
        number = i + 1
        if not stripped:
            continue
        marker = MARKERS.get(stripped.lower())
        if marker is not None and visibility is None:
            visibility = marker
            continue
        if marker is not None:
            if marker != visibility:
                errors.append(CommandError(number, stripped, f"{stripped} contradicts the earlier "
                                           f"{visibility} marker; keep one of #note, #internal or #public"))
            continue
        if not _is_command_line(stripped):
            body_start = i
            break
        word, *rest = stripped[1:].split(None, 1)
        name, args = word.lower(), _unlink(rest[0].strip() if rest else "")
        if name not in COMMAND_NAMES:
            errors.append(CommandError(number, stripped, _unknown(name)))
            continue
        reason = _syntax_error(name, args)
        if reason:
            errors.append(CommandError(number, stripped, reason))
            continue
        commands.append(Command(name=name, args=args, line=number, source=stripped))
    body = lines[body_start:]
    while body and not body[-1].strip():
        body.pop()
    return ParsedReply(visibility=visibility, commands=commands, errors=errors, text="\n".join(body))


# --- planning ----------------------------------------------------------------------------

def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, not 30 days: the same day and time N months on, clamped to the month's
    last day (Jan 31 + 1 month = Feb 28 or 29), because people mean "same date next month"."""
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _postpone(args: str, due_at: datetime | None, now: datetime) -> datetime | str:
    """The new due date, or the reason there is none."""
    m = RELATIVE_RE.fullmatch(args)
    if m:
        amount, unit = int(m.group(1)), m.group(2).lower()
        if not 1 <= amount <= MAX_AMOUNT:
            return f"the amount in /postpone must be between 1 and {MAX_AMOUNT}, not {amount}"
        # Postponing twice should add up, so count from a due date that is still ahead.
        base = due_at.astimezone(UTC) if due_at is not None and due_at > now else now
        if unit == "m":
            return add_months(base, amount)
        return base + {"h": timedelta(hours=amount), "d": timedelta(days=amount),
                       "w": timedelta(weeks=amount)}[unit]
    if DATE_RE.fullmatch(args):
        try:
            day = date.fromisoformat(args)
        except ValueError:
            return f"{args} is not a date in the calendar; write YYYY-MM-DD, e.g. 2026-12-24"
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if moment < now:
            return (f"{args} 00:00 UTC is in the past (now is {now:%Y-%m-%d %H:%M} UTC); "
                    "give a later date or an amount like 3d")
        return moment
    return (f"/postpone takes <N>h, <N>d, <N>w or <N>m (hours, days, weeks, months; N from 1 to "
            f"{MAX_AMOUNT}) or a date YYYY-MM-DD, not {args!r}")


def _assignee(args: str, actor: AgentConfig, config: Config) -> str | tuple[str]:
    """The agent's configured email, or a 1-tuple with the reason none matched."""
    if args.lower() == "me":
        return actor.email
    bracketed = re.search(r"<([^<>]+)>$", args)  # "<bob@x.test>" or a pasted "Bob Smith <bob@x.test>"
    if bracketed:
        args = bracketed.group(1).strip()
    if "@" in args:
        agent = config.agent(args)
        if agent is None:
            return (f"{args} is not a configured agent; agents: {_agent_list(config.agents)}",)
        return agent.email
    wanted = " ".join(args.split()).casefold()
    matches = [a for a in config.agents if " ".join(a.name.split()).casefold() == wanted]
    if not matches:
        matches = [a for a in config.agents if a.name.split() and a.name.split()[0].casefold() == wanted]
    if len(matches) == 1:
        return matches[0].email
    if matches:
        return (f"{args!r} matches several agents ({_agent_list(matches)}); write the email address",)
    return (f"no agent is named {args!r}; write an email address, a full or first name, or 'me' "
            f"(agents: {_agent_list(config.agents)})",)


def _agent_list(agents: list[AgentConfig]) -> str:
    return ", ".join(f"{a.name} <{a.email}>" if a.name else a.email for a in agents) or "none configured"


def _tags(args: str, tags: list[str]) -> str | None:
    """Applies '/tag +a -b c' to `tags` in place, all words or none; returns the reason when a
    word is not a tag. Commas are allowed between words, as people write lists that way."""
    result = list(tags)
    for word in args.replace(",", " ").split():
        sign, tag = (word[0], word[1:]) if word[0] in "+-" else ("+", word)
        tag = tag.lower()
        if not TAG_RE.fullmatch(tag):
            return (f"{word!r} is not a tag: tags start with a letter or digit and contain only letters, "
                    "digits and - _ . : (write +tag to add, -tag to remove)")
        if len(tag) > MAX_TAG_LENGTH:
            return f"the tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters"
        if sign == "+" and tag not in result:
            result.append(tag)
        elif sign == "-" and tag in result:
            result.remove(tag)
    tags[:] = result
    return None


def _idna_domain(address: str) -> str:
    """`joerg@müller.test` as an ASCII header carries it: the domain in IDNA (`xn--mller-kva.test`);
    a UTF-8 local part stays as it is (it goes out with SMTPUTF8, notify.transport), and anything
    that does not encode is left for _valid_address to refuse."""
    return ascii_address(address) or address


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at or not is_mail_address(address):  # a header must carry it (RFC 6531 included)
        return False
    if local.isascii() and not LOCAL_RE.fullmatch(local):
        return False
    labels = (idna_domain(domain) or "").rstrip(".").split(".")
    return len(labels) >= 2 and all(LABEL_RE.fullmatch(lb) for lb in labels) and not labels[-1].isdigit()


def plan_commands(commands: list[Command], case: CaseSnapshot, actor: AgentConfig, config: Config,
                  now: datetime) -> Plan:
    """The changes the commands make to `case`, in command order, and every error.

    The later of two commands on the same field wins, and a change to the value the case already
    has is dropped so history records only real changes. Fields the snapshot does not hold
    (type, priority, root_cause, closed_reason, custom fields) are always planned; the applier
    drops those that match.
    """
    if now.tzinfo is None:
        raise ValueError("plan_commands needs an aware `now`")
    now = now.astimezone(UTC)
    planned: dict[str, Change] = {}  # key -> change; re-inserted on every set so order follows the last
    errors: list[CommandError] = []
    tags = list(case.tags)
    following = {f.casefold() for f in case.followers}

    def put(key: str, change: Change) -> None:
        planned.pop(key, None)
        planned[key] = change

    def refuse_close(cmd: Command) -> bool:
        if config.policy.close_requires_manager and actor.role != "manager":
            errors.append(CommandError(cmd.line, cmd.source,
                                       "only managers may close cases ([policy] close_requires_manager)"))
            return True
        return False

    for cmd in commands:
        name, args = cmd.name.lower(), cmd.args.strip()

        def fail(reason: str, cmd: Command = cmd) -> None:
            errors.append(CommandError(cmd.line, cmd.source, reason))

        # Commands built by hand (the CLI, tests) get the same checks as parsed ones.
        syntax = _syntax_error(name, args) if name in COMMAND_NAMES else _unknown(name)
        if syntax:
            fail(syntax)
        elif name == "stage":
            stage = args.lower()
            if stage not in STAGES:
                fail(f"unknown stage {args!r} (stages: {', '.join(STAGES)})")
            elif not (stage == "closed" and refuse_close(cmd)):
                put("stage", FieldChange("stage", stage))
                if stage != "closed":
                    planned.pop("closed_reason", None)  # a later reopening undoes an earlier /close
        elif name == "close":
            if not refuse_close(cmd):
                put("stage", FieldChange("stage", "closed"))
                put("closed_reason", FieldChange("closed_reason", args or None))
        elif name == "queue":
            team = next((t.name for t in config.teams if t.name.casefold() == args.casefold()), None)
            if team is None:
                fail(f"unknown team {args!r} (teams: {', '.join(t.name for t in config.teams) or 'none configured'})")
            else:
                put("queue", FieldChange("queue", team))
        elif name == "assign":
            who = _assignee(args, actor, config)
            if isinstance(who, tuple):
                fail(who[0])
            else:
                put("assignee", FieldChange("assignee", who))
        elif name == "unassign":
            put("assignee", FieldChange("assignee", None))
        elif name == "tag":
            reason = _tags(args, tags)
            if reason:
                fail(reason)
            else:
                put("tags", TagChange((), ()))  # placeholder; the net change is computed below
        elif name in ("type", "priority"):
            allowed, plural = (TYPES, "types") if name == "type" else (PRIORITIES, "priorities")
            if args.lower() not in allowed:
                fail(f"unknown {name} {args!r} ({plural}: {', '.join(allowed)})")
            else:
                put(name, FieldChange(name, args.lower()))
        elif name == "postpone":
            due = _postpone(args, case.due_at, now)
            if isinstance(due, str):
                fail(due)
            else:
                put("due_at", FieldChange("due_at", due))
        elif name == "root-cause":
            put("root_cause", FieldChange("root_cause", args))
        elif name in ("follow", "unfollow"):
            put("follow", FollowChange(actor.email, name == "follow"))
        elif name == "forward":
            address, *rest = args.split()
            if address.startswith("<") and address.endswith(">"):
                address = address[1:-1]
            address = _idna_domain(address)
            if not _valid_address(address):
                fail(f"{address!r} is not an email address; write it like jane@example.com")
            else:
                put(f"forward:{address.casefold()}", ForwardRequest(address, bool(rest)))
        elif name == "detach":
            match = [f for f in case.attachments if f.casefold() == args.casefold()]
            if not match:
                listed = ", ".join(sorted(set(case.attachments))) or "none"
                fail(f"no attachment named {args!r} on this case (attachments: {listed})")
            else:
                put(f"detach:{match[0].casefold()}", DetachRequest(match[0]))
        elif name == "field":
            field_name, value = args.split(None, 1)
            if not FIELD_NAME_RE.fullmatch(field_name.lower()):
                fail(f"{field_name!r} is not a field name: start with a letter, then up to 63 letters a-z, "
                     "digits or _")
            else:
                put(f"field:{field_name.lower()}", FieldChange(f"field:{field_name.lower()}", value.strip()))

    changes: list[Change] = []
    for change in planned.values():
        if isinstance(change, TagChange):
            change = TagChange(tuple(t for t in tags if t not in case.tags),
                               tuple(t for t in case.tags if t not in tags))
            if change.add or change.remove:
                changes.append(change)
        elif isinstance(change, FollowChange):
            if change.follow != (change.address.casefold() in following):
                changes.append(change)
        elif isinstance(change, FieldChange) and _unchanged(change, case):
            continue
        else:
            changes.append(change)
    return Plan(changes=changes, errors=errors)


def _unchanged(change: FieldChange, case: CaseSnapshot) -> bool:
    """Whether the snapshot already holds this value (case-insensitive for names and addresses)."""
    current: object
    if change.field == "stage":
        current = case.stage
    elif change.field in ("queue", "assignee"):
        current = getattr(case, change.field)
        if isinstance(current, str) and isinstance(change.value, str):
            return current.casefold() == change.value.casefold()
    elif change.field == "due_at":
        current = case.due_at
    else:
        return False
    return current == change.value
