"""What goes into the pipeline besides the mail: its envelope. (What comes out, `Outcome` and
`Quarantined`, is vocabulary: maild.domain.outcome.)"""

from __future__ import annotations

from dataclasses import dataclass

from maild.config import MailboxConfig
from maild.domain.message import InboundMessage
from maild.ingest.parse import message_ids

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
