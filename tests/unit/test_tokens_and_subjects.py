"""Reply tokens and subject tags: what threading trusts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from maild.threading.subject import case_tag_number, strip_prefixes, tagged_subject
from maild.threading.tokens import (
    ReplyToken,
    bounce_address,
    load_or_create_secret,
    make_held_token,
    make_token,
    reply_address,
    split_plus_address,
    verify_bounce_address,
    verify_token,
)

SECRET = b"0" * 64


def test_token_round_trip_for_customer_and_agent() -> None:
    tok = make_token(SECRET, 42)
    assert tok == tok.lower() and tok.isalnum()
    assert verify_token(SECRET, tok).case_number == 42
    assert verify_token(SECRET, tok).agent_key is None
    agent_tok = make_token(SECRET, 42, "alice@example.com")
    assert verify_token(SECRET, agent_tok).agent_key is not None
    assert agent_tok != make_token(SECRET, 42, "bob@example.com")
    note_tok = make_token(SECRET, 42, "alice@example.com", internal=True)
    assert verify_token(SECRET, note_tok).internal and not verify_token(SECRET, agent_tok).internal
    assert verify_token(SECRET, note_tok).agent_key == verify_token(SECRET, agent_tok).agent_key
    # flipping the audience letter breaks the MAC: a public-reply token cannot be made internal
    assert verify_token(SECRET, agent_tok.replace("a", "i", 1)) is None


def test_tokens_in_mail_already_sent_stay_valid() -> None:
    # made by an earlier maild with this secret: replies to old mail must still thread
    secret = b"0123456789abcdef0123456789abcdef"
    assert make_token(secret, 42) == "42czwbq6gnv37czexdm"
    assert make_token(secret, 42, "Alice@Example.com") == "42a76gzqgq627cjnymvid6boz"
    assert make_token(secret, 7, "bob@example.com", internal=True) == "7il74gbpnxo6t4s4fkod3uap"
    assert verify_token(secret, "42a76gzqgq627cjnymvid6boz") == ReplyToken(42, "76gzqg")


def test_token_survives_an_mta_that_uppercases_addresses() -> None:
    assert verify_token(SECRET, make_token(SECRET, 7).upper()).case_number == 7


def test_forged_tokens_are_refused() -> None:
    tok = make_token(SECRET, 42)
    assert verify_token(b"1" * 64, tok) is None  # another server's secret
    assert verify_token(SECRET, tok[:-1] + ("a" if tok[-1] != "a" else "b")) is None
    assert verify_token(SECRET, "43" + tok[2:]) is None  # another case number, same MAC
    assert verify_token(SECRET, "") is None
    assert verify_token(SECRET, "hello") is None


def test_held_tokens_name_the_mail_and_the_agent_and_are_not_case_tokens() -> None:
    token = make_held_token(SECRET, 77, "alice@example.com")
    held = verify_token(SECRET, token)
    assert held is not None and held.held and held.case_number == 77 and not held.internal
    assert held.agent_key == verify_token(SECRET, make_token(SECRET, 1, "alice@example.com")).agent_key
    # the same case number and agent, but an agent token's MAC: not a held token
    forged = token.replace("h", "a", 1)
    assert verify_token(SECRET, forged) is None
    assert verify_token(b"1" * 64, token) is None


def test_bounce_addresses_name_the_sent_mail_and_are_signed() -> None:
    mid = "0123456789abcdef0123456789abcdef@support.example.com"
    verp = bounce_address("support@example.com", SECRET, mid)
    local = verp.partition("@")[0]
    assert verp.endswith("@example.com") and local.startswith("bounces+") and len(local) <= 64
    assert verp == verp.lower() and local.replace("+", "").isalnum()
    assert verify_bounce_address(SECRET, verp) == mid.partition("@")[0]
    assert verify_bounce_address(SECRET, verp.upper()) == mid.partition("@")[0]  # MTAs that change case
    assert verify_bounce_address(b"1" * 64, verp) is None
    tampered = verp.replace("0123", "1123", 1)
    assert verify_bounce_address(SECRET, tampered) is None
    assert verify_bounce_address(SECRET, "support+" + verp.partition("+")[2]) is None


def test_mac_has_at_least_64_bits() -> None:
    tok = make_token(SECRET, 1)
    assert len(tok) - len("1c") >= 13  # base32: 5 bits a character


def test_plus_addresses() -> None:
    assert reply_address("support@example.com", "abc") == "support+abc@example.com"
    assert split_plus_address("Support+ABC@Example.com") == ("support@example.com", "abc")
    assert split_plus_address("support@example.com") == ("support@example.com", None)


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret.key"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(path) == first


def test_subject_tags() -> None:
    assert case_tag_number("RE: [#42] Printer on fire") == 42
    assert case_tag_number("Printer #42 on fire") is None
    assert strip_prefixes("Re: AW: Fwd: Hello") == "Hello"
    assert strip_prefixes("Отв: Принтер") == "Принтер"
    assert tagged_subject(42, "RE: [#42] Printer on fire") == "[#42] Printer on fire"
