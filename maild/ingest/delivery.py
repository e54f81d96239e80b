"""What goes into the pipeline besides the mail (its envelope) and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from maild.config import MailboxConfig
from maild.ingest.parse import InboundMessage, message_ids

ORIGINAL_RECIPIENT_HEADERS = ("delivered-to", "x-original-to")


def header_recipients(msg: InboundMessage) -> list[str]:
    """Where a mail that arrives without an envelope (IMAP, a file) was delivered: hosted mail
    keeps the +token address a reply was sent to in Delivered-To or X-Original-To."""
    return [v.strip().strip("<>").lower() for name in ORIGINAL_RECIPIENT_HEADERS for v in msg.headers.get(name, [])]


def header_envelope_sender(msg: InboundMessage) -> str | None:
    """Return-Path standing in for MAIL FROM: "" for the empty path, None when unknown."""
    return_path = msg.header("Return-Path")
    if return_path is None:
        return None
    ids = message_ids(return_path)
    return ids[0].lower() if ids else ("" if "<>" in return_path else None)


@dataclass(frozen=True)
class Delivery:
    """How a mail reached one mailbox: its envelope, as the adapter saw it."""

    mailbox: MailboxConfig
    recipients: list[str]
    envelope_sender: str | None  # "" is the empty return path; None: not known (IMAP)
    via: str = "smtp"


@dataclass
class Outcome:
    """What the pipeline did with one mail: logged, shown by `maild inspect`."""

    action: str  # created | threaded | noted | duplicate | bounce | refused | ignored | held | quarantined
    case_number: int | None
    matched_by: str  # token | references | subject | new | duplicate | none | held | release | verp
    classification: str
    visibility: str | None = None
    acknowledgement: str | None = None  # who was acknowledged, or why not
    events: list[str] = field(default_factory=list)
    is_agent: bool = False
    agent_reason: str = ""
    reply_text: str = ""
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    bounced_addresses: list[str] = field(default_factory=list)  # failed for good (permanent)
    delayed_addresses: list[str] = field(default_factory=list)  # a temporary failure: marks no one
    reason: str = ""  # why a bounce was believed or quarantined, or which rule classified the mail
    classified_by: str = ""  # the rule or detector behind `classification` (Classification.reason)


class Quarantined(Exception):
    """Raised by the pipeline for a mail it must keep aside unchanged (nothing of its transaction
    is written): the adapter quarantines the raw bytes with `reason`, which a person can act on."""

    def __init__(self, reason: str, outcome: Outcome):
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
