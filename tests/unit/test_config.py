"""Config: typed objects from TOML, and every problem reported with file, key path and reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maild.config import Config, ImapConfig, MailboxConfig, ProtectionConfig, keep_restart_only, load_config
from maild.config_checks import load_checked_config
from maild.domain.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "maild.toml"
    p.write_text(text)
    return p


def problems_of(path: Path) -> list[str]:
    """What `maild check-config` and `maild run` report: the schema's and the features' problems."""
    with pytest.raises(ConfigError) as e:
        load_checked_config(path)
    return e.value.problems


def test_embedded_defaults_accept_mail_for_support_at_localhost() -> None:
    cfg = load_config(None)
    assert cfg.mailbox("support@localhost") is not None
    assert cfg.smtp.listen == ["127.0.0.1:2525"]
    assert cfg.outbound.url == "maildir://var/outbox"
    assert cfg.database.url == "sqlite:///var/maild.db"


def test_a_full_file_loads_into_typed_objects(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
[database]
url = "sqlite:///db/maild.db"
[server]
hostname = "support.example.com"
secret_file = "secret.key"
[smtp]
listen = ["127.0.0.1:2525", "[::1]:2525"]
max_message_bytes = 1000
[outbound]
url = "smtp+starttls://relay@127.0.0.1:587"
[[mailboxes]]
address = "Support@Example.com"
team = "support"
[mailboxes.imap]
host = "127.0.0.1"
username = "support"
password_file = "imap.pass"
tls = "none"
[[teams]]
name = "support"
agents = ["alice@example.com"]
[[agents]]
email = "alice@example.com"
role = "manager"
"""))
    assert isinstance(cfg, Config)
    assert cfg.smtp.listen == ["127.0.0.1:2525", "[::1]:2525"]
    assert cfg.mailbox("support@example.com").imap.tls == "none"
    assert cfg.agent("ALICE@example.com").role == "manager"
    assert cfg.path(cfg.server.secret_file) == tmp_path / "secret.key"  # relative to the file


def test_every_problem_is_listed_with_file_key_path_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, """
[server]
hostnam = "x"
[smtp]
max_message_bytes = "big"
[[mailboxes]]
address = "support@example.com"
team = "nosuchteam"
[[teams]]
name = "support"
agents = ["zed@example.com"]
[[agents]]
email = "alice@example.com"
role = "boss"
""")
    problems = problems_of(path)
    text = "\n".join(problems)
    assert all(p.startswith(str(path)) for p in problems)
    assert "server.hostnam: unknown key" in text
    assert "smtp.max_message_bytes: expected an integer, got 'big'" in text
    assert "mailboxes[0].team: team 'nosuchteam' is not defined" in text
    assert "teams[0].agents[0]: agent 'zed@example.com' is not defined" in text
    assert "agents[0].role: expected one of 'agent', 'manager', got 'boss'" in text


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nhostname = 1\n")
    (problem,) = problems_of(path)
    assert str(path) in problem and "TOML syntax error" in problem and "line 1" in problem


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope.toml")
    assert "cannot read" in problem


@pytest.mark.parametrize("snippet, expected", [
    ('[outbound]\nurl = "http://x"', "outbound.url"),
    ('[smtp]\nlisten = "localhost"', "smtp.listen[0]"),
    ('[[mailboxes]]\naddress = "not-an-address"', "mailboxes[0].address"),
    ('[[mailboxes]]\naddress = "a+b@example.com"', "must not contain '+'"),
    ('[[mailboxes]]\nteam = "support"', "mailboxes[0].address: missing (required)"),
    ('[database]\nurl = "mysql://x"', "database.url"),
    ('[[mailboxes]]\naddress = "s@example.com"\n[mailboxes.imap]\nhost = "h"\nusername = "u"',
     "needs password_file or oauth2"),
])
def test_bad_values_are_refused(tmp_path: Path, snippet: str, expected: str) -> None:
    text = "\n".join(problems_of(write(tmp_path, snippet + "\n[[teams]]\nname = \"support\"\n")))
    assert expected in text


def test_a_saved_segment_with_an_unknown_filter_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[[segments]]\nname = "vip"\nfilters = { colour = "red", state = "asleep" }\n')
    text = "\n".join(problems_of(path))
    assert "segments[0] ('vip').filters: unknown filter 'colour'" in text


def test_a_reload_keeps_what_only_a_restart_changes_and_names_it() -> None:
    running = Config()
    imap = ImapConfig(host="imap.example.com", username="support@localhost")
    new = Config(mailboxes=[MailboxConfig("support@localhost", "support", imap=imap),
                            MailboxConfig("sales@localhost", "support")],
                 protection=ProtectionConfig(ack_per_hour=9, max_smtp_sessions=5),
                 smtp=dataclasses.replace(running.smtp, listen=["127.0.0.1:2600"]))
    kept, changed = keep_restart_only(running, new)
    assert changed == ["smtp", "mailboxes.imap", "protection.max_smtp_sessions"]
    assert kept.smtp == running.smtp and kept.protection.max_smtp_sessions == running.protection.max_smtp_sessions
    assert kept.protection.ack_per_hour == 9  # applied
    assert [m.address for m in kept.mailboxes] == ["support@localhost", "sales@localhost"]  # applied
    assert [m.imap for m in kept.mailboxes] == [None, None]  # its poller is the one started with it
    assert keep_restart_only(running, Config()) == (running, [])
