"""`maild inspect`: what maild would do with a mail, without storing or sending anything.

It runs the real pipeline (the same code as SMTP and IMAP) in a transaction that is rolled
back, with a runtime that writes no file, so what it says is what the daemon would do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from maild.config import Config
from maild.domain.errors import ParseError
from maild.domain.message import InboundMessage
from maild.domain.outcome import Quarantined
from maild.ingest.delivery import Delivery, header_envelope_sender, header_recipients
from maild.ingest.parse import parse_message
from maild.ingest.pipeline import ingest_message
from maild.runtime import build_runtime
from maild.threading.tokens import split_plus_address


def inspect_delivery(cfg: Config, msg: InboundMessage) -> Delivery:
    """Without an envelope: the mailbox (and +token forms) named in the headers, else the first one."""
    named = [a.address for a in msg.to + msg.cc] + header_recipients(msg)
    recipients = [a for a in named if cfg.mailbox(split_plus_address(a)[0]) is not None]
    mailbox = cfg.mailbox(split_plus_address(recipients[0])[0]) if recipients else cfg.mailboxes[0]
    assert mailbox is not None
    recipients = [a for a in recipients if split_plus_address(a)[0] == mailbox.address.lower()] or [mailbox.address]
    return Delivery(mailbox=mailbox, recipients=recipients, envelope_sender=header_envelope_sender(msg),
                    via="inspect")


def inspect_file(cfg: Config, engine: Engine, path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        return {"file": str(path), "error": f"cannot read: {e.strerror}"}
    try:
        msg = parse_message(raw, max_parts=cfg.protection.max_mime_parts)
    except ParseError as e:
        return {"file": str(path), "error": str(e)}
    rt = build_runtime(cfg, dry_run=True)
    delivery = inspect_delivery(cfg, msg)
    with Session(engine) as session:
        session.begin()
        try:
            outcome = ingest_message(session, msg, delivery, rt)
        except Quarantined as e:
            outcome = e.outcome
        finally:
            session.rollback()
    return {
        "file": str(path),
        "from": msg.sender.address if msg.sender else None,
        "mailbox": delivery.mailbox.address,
        "is_agent": outcome.is_agent,
        "agent_reason": outcome.agent_reason,
        "visibility": outcome.visibility,
        "reply_text": outcome.reply_text,
        "commands": outcome.commands,
        "command_errors": outcome.errors,
        "case": outcome.case_number if outcome.matched_by not in ("new", "none") else None,
        "match": outcome.matched_by,
        "action": outcome.action,
        "classification": outcome.classification,
        "reason": outcome.classified_by or None,  # the rule or detector that classified it
        "bounced_addresses": outcome.bounced_addresses,  # permanent failures (SPEC §13)
        "bounced": [{"address": a, "failure": "permanent"} for a in outcome.bounced_addresses]
        + [{"address": a, "failure": "temporary"} for a in outcome.delayed_addresses],
        "outcome_reason": outcome.reason if outcome.reason and outcome.reason != outcome.classified_by else None,
        "would_notify": outcome.notified,
        "acknowledgement": outcome.acknowledgement,
    }
