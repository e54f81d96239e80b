"""Which case an inbound mail belongs to, in the order of SPEC §4.

1. a valid token in an envelope recipient or in To/Cc;
2. In-Reply-To/References naming a Message-ID maild sent or stored for a case;
3. a `[#N]` subject tag, only when the sender already takes part in case N;
4. otherwise a new case.
A forged or stale token is never trusted: matching goes on to the next step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from maild.domain.message import InboundMessage
from maild.threading.subject import case_tag_number
from maild.threading.tokens import ReplyToken, split_plus_address, verify_token


class CaseLookup(Protocol):
    def case_exists(self, number: int) -> bool: ...
    def case_by_message_ids(self, ids: list[str]) -> int | None: ...
    def takes_part(self, number: int, address: str) -> bool: ...


@dataclass(frozen=True)
class Match:
    case_number: int | None
    rule: str  # token | references | subject | new
    token: ReplyToken | None = None


def find_token(addresses: Iterable[str], mailbox_addresses: set[str], secret: bytes,
               lookup: CaseLookup) -> ReplyToken | None:
    for address in addresses:
        base, tag = split_plus_address(address)
        if tag is None or base not in mailbox_addresses:
            continue
        token = verify_token(secret, tag)
        if token is not None and not token.held and lookup.case_exists(token.case_number):
            return token
    return None


def match_case(msg: InboundMessage, envelope_recipients: list[str], mailbox_addresses: set[str],
               secret: bytes, lookup: CaseLookup) -> Match:
    header_recipients = [a.address for a in msg.to + msg.cc]
    token = find_token([*envelope_recipients, *header_recipients], mailbox_addresses, secret, lookup)
    if token is not None:
        return Match(token.case_number, "token", token)
    number = lookup.case_by_message_ids([*msg.references, *msg.in_reply_to])
    if number is not None:
        return Match(number, "references")
    tagged = case_tag_number(msg.subject)
    if tagged is not None and msg.sender is not None and lookup.case_exists(tagged) \
            and lookup.takes_part(tagged, msg.sender.address):
        return Match(tagged, "subject")
    return Match(None, "new")


def find_held_token(addresses: Iterable[str], mailbox_addresses: set[str], secret: bytes) -> ReplyToken | None:
    """A valid token of a hold notice among the recipients (SPEC §6): a reply that may release it."""
    for address in addresses:
        base, tag = split_plus_address(address)
        if tag is None or base not in mailbox_addresses or not tag.lstrip("0123456789").startswith("h"):
            continue  # not a held token: no HMAC to work out (every reply passes here)
        token = verify_token(secret, tag)
        if token is not None and token.held:
            return token
    return None
