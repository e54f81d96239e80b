"""Reply tokens: `<local>+<token>@<domain>` addresses that name a case and an audience.

A token is the case number, the audience ("c" for the customer side; "a" or "i" plus a
short key of one agent's address, "i" on notifications of internal notes so that a reply
to them stays internal) and an 80-bit HMAC of both with the server secret, all in
lowercase letters and digits so that MTAs that change case cannot break it.

Two more kinds name a stored mail instead of a case: "h" tokens on the notice of a held
agent-address mail (SPEC §6: the agent's reply to it releases the mail), and the VERP return
path `bounces+<token>@…` of every outbound mail (SPEC §11: only a bounce that carries one, or
names a mail maild sent, is believed).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

MAC_CHARS = 16  # 16 base32 characters = 80 bits
AGENT_KEY_CHARS = 6
TOKEN_RE = re.compile(rf"^(\d+)(c|[aih][a-z2-7]{{{AGENT_KEY_CHARS}}})([a-z2-7]{{{MAC_CHARS}}})$")
BOUNCE_LOCAL = "bounces"
BOUNCE_TOKEN_RE = re.compile(rf"^([0-9a-f]{{32}})([a-z2-7]{{{MAC_CHARS}}})$")


@dataclass(frozen=True)
class ReplyToken:
    case_number: int  # for a held token: the held mail's row in `messages`
    agent_key: str | None  # None: the customer side
    internal: bool = False  # issued on an internal-note notification
    held: bool = False  # issued on the notice of a held mail, to the agent its From names

    @property
    def audience(self) -> str:
        if self.agent_key is None:
            return "c"
        return ("h" if self.held else "i" if self.internal else "a") + self.agent_key


def _b32(data: bytes, chars: int) -> str:
    """The first `chars` base32 characters of `data`. Base32 turns each 5 bytes into 8
    characters on their own, so only the bytes needed are encoded (b32encode is pure Python)."""
    return base64.b32encode(data[:math.ceil(chars / 8) * 5]).decode("ascii")[:chars].lower()


@functools.lru_cache(maxsize=1024)
def agent_key(address: str) -> str:
    return _b32(hashlib.sha256(address.strip().lower().encode()).digest(), AGENT_KEY_CHARS)


def _mac(secret: bytes, case_number: int, audience: str) -> str:
    return _b32(hmac.digest(secret, f"{case_number}:{audience}".encode(), "sha256"), MAC_CHARS)


def make_token(secret: bytes, case_number: int, agent: str | None = None, *, internal: bool = False) -> str:
    tok = ReplyToken(case_number, agent_key(agent) if agent else None, internal=bool(agent) and internal)
    return f"{case_number}{tok.audience}{_mac(secret, case_number, tok.audience)}"


def make_held_token(secret: bytes, message_pk: int, agent: str) -> str:
    """The Reply-To token of a held mail's notice: only that agent's reply releases it."""
    audience = "h" + agent_key(agent)
    return f"{message_pk}{audience}{_mac(secret, message_pk, audience)}"


def verify_token(secret: bytes, token: str) -> ReplyToken | None:
    """The token's case and audience if its HMAC is right, else None (forged or stale)."""
    m = TOKEN_RE.match(token.lower())
    if not m:
        return None
    number, audience, mac = int(m.group(1)), m.group(2), m.group(3)
    if not hmac.compare_digest(mac, _mac(secret, number, audience)):
        return None
    if audience == "c":
        return ReplyToken(number, None)
    return ReplyToken(number, audience[1:], internal=audience[0] == "i", held=audience[0] == "h")


def bounce_address(mailbox: str, secret: bytes, message_id: str) -> str:
    """The VERP return path of one outbound mail: `bounces+<its Message-ID's hex><HMAC>@<mailbox
    domain>`, so a bounce names the very mail (and so the address) that failed."""
    local = message_id.partition("@")[0]
    return f"{BOUNCE_LOCAL}+{local}{_mac(secret, 0, 'b' + local)}@{mailbox.partition('@')[2]}"


def verify_bounce_address(secret: bytes, address: str) -> str | None:
    """The Message-ID's local part named by a VERP return path maild issued, else None."""
    local, _, _domain = address.lower().partition("@")
    base, plus, tag = local.partition("+")
    m = BOUNCE_TOKEN_RE.match(tag) if plus and base == BOUNCE_LOCAL else None
    if m is None or not hmac.compare_digest(m.group(2), _mac(secret, 0, "b" + m.group(1))):
        return None
    return m.group(1)


def reply_address(mailbox: str, token: str) -> str:
    local, _, domain = mailbox.partition("@")
    return f"{local}+{token}@{domain}"


def split_plus_address(address: str) -> tuple[str, str | None]:
    """`local+tag@domain` -> (`local@domain`, `tag`); an address without a tag -> (address, None)."""
    local, _, domain = address.lower().partition("@")
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)


def load_or_create_secret(path: Path) -> bytes:
    """The HMAC key; created with mode 0600 on first start so tokens survive restarts."""
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
        raise ValueError(f"{path}: secret is shorter than 32 bytes")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data + b"\n")
        return data
