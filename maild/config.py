"""The one settings schema: TOML in, frozen typed objects out, every problem reported at once.

A person fixing a config file wants the whole list of what is wrong, each with the file, the
key path and the reason, so validation collects problems instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maild.domain.errors import ConfigError
from maild.domain.stages import DONE_STAGES
from maild.headers import is_plain_address

FREE_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "live.com",
    "msn.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com", "aol.com",
    "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com", "pm.me", "gmx.com",
    "gmx.de", "gmx.net", "web.de", "t-online.de", "mail.ru", "list.ru", "bk.ru", "inbox.ru",
    "yandex.ru", "yandex.com", "ya.ru", "rambler.ru", "seznam.cz", "email.cz", "centrum.cz",
    "post.cz", "volny.cz", "wp.pl", "o2.pl", "interia.pl", "orange.fr", "free.fr", "laposte.net",
    "libero.it", "zoho.com", "fastmail.com", "tutanota.com", "hey.com", "qq.com", "163.com",
)

ADDRESS_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.?[^@\s<>\"]*$")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/maild.db"


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = "localhost"
    secret_file: str = "var/secret.key"
    data_dir: str = "var"


@dataclass(frozen=True)
class SmtpConfig:
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:2525"])
    max_message_bytes: int = 26_214_400
    parse_processes: int | None = None  # serve SMTP and parse; None: one per core, at most 4; 0: in the daemon


@dataclass(frozen=True)
class OutboundConfig:
    url: str = "maildir://var/outbox"
    password_file: str | None = None
    ca_file: str | None = None  # PEM bundle to trust for the relay's TLS instead of the system's
    # One whole send to the relay. It also sets how long a claimed mail of a killed process
    # waits (this + notify.outbox.LEASE_MARGIN_SECONDS): 20 s keeps that within 30 s of a restart.
    timeout_seconds: float = 20.0
    max_attempts: int = 12


@dataclass(frozen=True)
class OAuth2Config:
    token_file: str | None = None
    token_command: str | None = None


@dataclass(frozen=True)
class ImapConfig:
    host: str
    username: str
    port: int = 993
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    password_file: str | None = None
    oauth2: OAuth2Config | None = None
    folder: str = "INBOX"
    done_folder: str | None = None
    poll_seconds: float = 60.0
    ca_file: str | None = None  # PEM bundle to trust for the server's TLS instead of the system's


@dataclass(frozen=True)
class MailboxConfig:
    address: str
    team: str | None = None
    name: str | None = None
    imap: ImapConfig | None = None


@dataclass(frozen=True)
class TeamConfig:
    name: str
    agents: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AgentConfig:
    email: str
    name: str = ""
    role: Literal["agent", "manager"] = "agent"


@dataclass(frozen=True)
class ContactsConfig:
    types: list[str] = field(default_factory=lambda: ["customer", "partner", "internal"])
    cc_participants: bool = True


@dataclass(frozen=True)
class OrganizationsConfig:
    auto_create: bool = True
    free_mail_domains: list[str] = field(default_factory=lambda: list(FREE_MAIL_DOMAINS))


@dataclass(frozen=True)
class ProtectionConfig:
    """Limits against floods and amplification (SPEC §11); going over one is logged, never loses mail."""

    ack_per_hour: int = 5
    auto_mail_per_day: int = 40
    max_mime_parts: int = 500  # parts kept as attachments per mail; the rest stays in the raw message
    max_participants_per_mail: int = 10  # addresses one mail may add to a case's customer side
    max_acks_per_mail: int = 5  # acknowledgements one mail may set off, the requester first
    max_smtp_sessions: int = 200  # concurrent SMTP sessions
    max_smtp_sessions_per_client: int = 20  # concurrent SMTP sessions from one client address
    smtp_idle_timeout_seconds: float = 60.0  # an SMTP session that says nothing for this long is closed


@dataclass(frozen=True)
class AuthConfig:
    trusted_authserv_ids: list[str] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)  # for DKIM keys; empty: the system's resolver


@dataclass(frozen=True)
class PolicyConfig:
    close_requires_manager: bool = False


@dataclass(frozen=True)
class NotifyConfig:
    """Who hears of which event (SPEC §10). `events` maps an event kind to audiences that
    replace its default: customer, team, watchers (assignee and following agents),
    watchers_or_team, assignee, managers (of the case's team), or an email address."""

    acknowledge: bool = True
    customer_stages: list[str] = field(default_factory=lambda: list(DONE_STAGES))
    events: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldConfig:
    """A custom field of contacts (`[[contact_fields]]`) or organizations (`[[org_fields]]`)."""

    name: str
    type: Literal["text", "number", "date", "choice", "bool"] = "text"
    choices: list[str] = field(default_factory=list)
    required: bool = False


@dataclass(frozen=True)
class CalendarConfig:
    """Business hours: weekday (mon..sun) -> "09:00-18:00" (several ranges: "09:00-12:00,13:00-17:00")."""

    name: str
    timezone: str = "UTC"
    hours: dict[str, str] = field(default_factory=dict)
    holidays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ContractConfig:
    """A contract: who serves the client, on which calendar, with which targets. `sla` maps a
    priority to {first_response, resolution} and optional per-type overrides of the same form."""

    name: str
    team: str | None = None
    agent: str | None = None
    tag: str | None = None
    calendar: str = "24x7"
    rating: int = 0
    sla: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class SlaConfig:
    """Targets for cases without a contract, in the form of a contract's; and what a breach does."""

    calendar: str = "24x7"
    targets: dict[str, dict[str, object]] = field(default_factory=dict)
    raise_priority_on_breach: bool = False


@dataclass(frozen=True)
class SegmentConfig:
    """A saved contact filter: the options of `maild contact list` by name."""

    name: str
    filters: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleConfig:
    """`[[rules]]`: checked and compiled by maild.rules.routing (see its docstring for keys)."""

    name: str
    when: dict[str, object] = field(default_factory=dict)
    then: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; `base_dir` is where relative paths start."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    mailboxes: list[MailboxConfig] = field(
        default_factory=lambda: [MailboxConfig(address="support@localhost", team="support")]
    )
    teams: list[TeamConfig] = field(default_factory=lambda: [TeamConfig(name="support")])
    agents: list[AgentConfig] = field(default_factory=list)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    organizations: OrganizationsConfig = field(default_factory=OrganizationsConfig)
    protection: ProtectionConfig = field(default_factory=ProtectionConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    rules: list[RuleConfig] = field(default_factory=list)
    contact_fields: list[FieldConfig] = field(default_factory=list)
    org_fields: list[FieldConfig] = field(default_factory=list)
    calendars: list[CalendarConfig] = field(default_factory=list)
    contracts: list[ContractConfig] = field(default_factory=list)
    sla: SlaConfig = field(default_factory=SlaConfig)
    segments: list[SegmentConfig] = field(default_factory=list)
    templates_dir: str | None = None
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    source: str = field(default="<embedded defaults>", metadata={"internal": True})

    def path(self, value: str) -> Path:
        """A path from the file, made absolute against the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def mailbox(self, address: str) -> MailboxConfig | None:
        address = address.lower()
        for m in self.mailboxes:
            if m.address.lower() == address:
                return m
        return None

    def contract(self, name: str) -> ContractConfig | None:
        return next((c for c in self.contracts if c is not None and c.name.casefold() == name.casefold()), None)

    def agent(self, address: str) -> AgentConfig | None:
        address = address.lower()
        for a in self.agents:
            if a.email.lower() == address:
                return a
        return None

    @property
    def data_dir(self) -> Path:
        return self.path(self.server.data_dir)


# --- generic TOML -> dataclass validation ------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(value, args[0], path, problems)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {value!r}")
            return None
        return _build(tp, value, path, problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str and path.endswith("listen"):
            value = [value]
        if not isinstance(value, list):
            problems.append(f"{path}: expected {_describe(tp)}, got {value!r}")
            return None
        return [_convert(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {value!r}")
            return None
        _key_tp, value_tp = typing.get_args(tp)
        return {k: _convert(v, value_tp, f"{path}.{k}", problems) for k, v in value.items()}
    if origin is Literal:
        if value not in typing.get_args(tp):
            problems.append(f"{path}: expected {_describe(tp)}, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        problems.append(f"{path}: expected {_describe(tp)}, got {value!r}")
        return None
    if tp in _TYPE_NAMES and not isinstance(value, tp):
        problems.append(f"{path}: expected {_describe(tp)}, got {value!r}")
        return None
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{path}: unknown key (known here: {known})")
            continue
        kwargs[key] = _convert(value, hints[key], path, problems)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            path = f"{prefix}.{name}" if prefix else name
            problems.append(f"{path}: missing (required)")
    try:
        return cls(**{k: v for k, v in kwargs.items() if v is not None})
    except TypeError:  # a required key is missing or failed: already in problems
        return None


# --- cross-field checks ------------------------------------------------------------------

def _check_address(value: str | None, path: str, problems: list[str]) -> None:
    if value is not None and not (ADDRESS_RE.match(value) and is_plain_address(value)):
        problems.append(f"{path}: {value!r} is not an email address")


LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


def _check_imap(imap: ImapConfig, path: str, problems: list[str]) -> None:
    if imap.password_file is None and imap.oauth2 is None:
        problems.append(f"{path}: needs password_file or oauth2")
    if imap.oauth2 is not None and not (imap.oauth2.token_file or imap.oauth2.token_command):
        problems.append(f"{path}.oauth2: needs token_file or token_command")
    if imap.tls == "none" and not (imap.host in LOOPBACK_HOSTS or imap.host.startswith("127.")):
        problems.append(f"{path}.tls: 'none' sends the password in clear text; allowed for loopback hosts only, "
                        f"not {imap.host!r}")
    if not 0 < imap.port < 65536:
        problems.append(f"{path}.port: {imap.port} is not a TCP port")
    if imap.poll_seconds < 1:
        problems.append(f"{path}.poll_seconds: must be at least 1")


# A feature's check of its own config sections: one problem per line, "key.path: reason".
FeatureChecks = Callable[["Config"], list[str]]


def _check_references(cfg: Config, problems: list[str], checks: FeatureChecks | None = None) -> None:
    # Items that failed to build are None here; their problems are already listed.
    team_names = [t.name for t in cfg.teams if t is not None]
    agent_emails = [a.email.lower() for a in cfg.agents if a is not None]
    for i, t in enumerate(cfg.teams):
        if t is None:
            continue
        if team_names.count(t.name) > 1 and team_names.index(t.name) != i:
            problems.append(f"teams[{i}].name: team {t.name!r} is defined twice")
        for j, a in enumerate(t.agents):
            if a.lower() not in agent_emails:
                problems.append(f"teams[{i}].agents[{j}]: agent {a!r} is not defined in [[agents]]")
    seen: set[str] = set()
    for i, a in enumerate(cfg.agents):
        if a is None:
            continue
        _check_address(a.email, f"agents[{i}].email", problems)
        if a.email.lower() in seen:
            problems.append(f"agents[{i}].email: agent {a.email!r} is defined twice")
        seen.add(a.email.lower())
    seen = set()
    for i, m in enumerate(cfg.mailboxes):
        if m is None:
            continue
        _check_address(m.address, f"mailboxes[{i}].address", problems)
        if m.address and "+" in m.address.split("@")[0]:
            problems.append(f"mailboxes[{i}].address: {m.address!r} must not contain '+' "
                            "(it separates reply tokens)")
        if m.address and m.address.lower() in seen:
            problems.append(f"mailboxes[{i}].address: {m.address!r} is defined twice")
        seen.add((m.address or "").lower())
        if m.team is not None and m.team not in team_names:
            problems.append(f"mailboxes[{i}].team: team {m.team!r} is not defined in [[teams]]")
        if m.imap is not None:
            _check_imap(m.imap, f"mailboxes[{i}].imap", problems)
    if not cfg.mailboxes:
        problems.append("mailboxes: at least one mailbox is needed")
    for i, listen in enumerate(cfg.smtp.listen):
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"smtp.listen[{i}]: {listen!r} is not host:port")
    if cfg.smtp.max_message_bytes <= 0:
        problems.append("smtp.max_message_bytes: must be positive")
    if cfg.smtp.parse_processes is not None and not 0 <= cfg.smtp.parse_processes <= 64:
        problems.append(f"smtp.parse_processes: must be between 0 and 64, got {cfg.smtp.parse_processes}")
    scheme = cfg.outbound.url.split("://", 1)[0]
    if "://" not in cfg.outbound.url or scheme not in ("smtp", "smtp+starttls", "smtps", "maildir"):
        problems.append(f"outbound.url: {cfg.outbound.url!r} must start with smtp://, smtp+starttls://, "
                        "smtps:// or maildir://")
    if checks is not None:  # the features' own checks (maild.config_checks), listed with the rest
        problems += checks(cfg)
    db = cfg.database.url
    if not (db.startswith("sqlite:") or db.startswith("postgresql")):
        problems.append(f"database.url: {db!r} must be a sqlite:/// or postgresql+psycopg:// URL")


def parse_config(data: dict[str, Any], source: str, base_dir: Path, checks: FeatureChecks | None = None) -> Config:
    """The config of a parsed TOML document. `checks`: the features' checks of their sections
    (maild.config_checks.check_features), run after the schema's and reported with them."""
    problems: list[str] = []
    cfg = _build(Config, data, "", problems)
    if cfg is not None:
        _check_references(cfg, problems, checks)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return dataclasses.replace(cfg, base_dir=base_dir, source=source)


def load_config(path: str | os.PathLike[str] | None, checks: FeatureChecks | None = None) -> Config:
    """Loads and validates a config file; None means the embedded defaults (paths from cwd).
    Only the schema and its cross-references are checked unless `checks` is given: the CLI and
    the daemon load through maild.config_checks.load_checked_config, which adds the features'."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{p}: TOML syntax error: {e}"]) from None
    return parse_config(data, str(p), p.resolve().parent, checks)


DATABASE_SECTION_RE = re.compile(r"^\[database\][^\n]*\n(.*?)(?=^\s*\[|\Z)", re.M | re.S)


def salvage_database_config(path: str | os.PathLike[str]) -> Config | None:
    """Embedded defaults plus the `[database]` section of a file that does not load as a whole,
    or None if even that section does not read."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = DATABASE_SECTION_RE.search(text)
    if m is None:
        return None
    try:
        section = tomllib.loads(m.group(1))
        db = _build(DatabaseConfig, section, "database", problems := [])
    except tomllib.TOMLDecodeError:
        return None
    if db is None or problems:
        return None
    return Config(database=db, base_dir=p.resolve().parent, source=str(p))


# What a running daemon built at start and cannot swap on SIGHUP: its database engine, its
# listening sockets and SMTP workers, its outbound transport, its secret, folders and hostname,
# its IMAP pollers, and the limits its SMTP workers were given.
_RESTART_ONLY_PROTECTION = ("max_mime_parts", "max_smtp_sessions", "max_smtp_sessions_per_client",
                            "smtp_idle_timeout_seconds")


def keep_restart_only(running: Config, new: Config) -> tuple[Config, list[str]]:
    """`new` with what only a restart can change put back to the running values, and the keys
    that differed (for the log: "needs a restart"), so the reloaded config says what runs."""
    changed = [name for name in ("database", "server", "smtp", "outbound")
               if getattr(running, name) != getattr(new, name)]
    old_imap = {m.address.lower(): m.imap for m in running.mailboxes}
    new_imap = {m.address.lower(): m.imap for m in new.mailboxes}
    if {a: i for a, i in old_imap.items() if i} != {a: i for a, i in new_imap.items() if i}:
        changed.append("mailboxes.imap")
    changed += [f"protection.{k}" for k in _RESTART_ONLY_PROTECTION
                if getattr(running.protection, k) != getattr(new.protection, k)]
    protection = dataclasses.replace(new.protection,
                                     **{k: getattr(running.protection, k) for k in _RESTART_ONLY_PROTECTION})
    mailboxes = [dataclasses.replace(m, imap=old_imap.get(m.address.lower())) for m in new.mailboxes]
    kept = dataclasses.replace(new, database=running.database, server=running.server, smtp=running.smtp,
                               outbound=running.outbound, protection=protection, mailboxes=mailboxes)
    return kept, changed
