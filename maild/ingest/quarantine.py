"""Quarantine: where a mail goes when maild cannot process it, with the reason beside it.

Nothing is ever dropped: the raw bytes and a JSON note (reason, envelope, time) are written
durably, and the sender still gets 250 because the mail is kept.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import structlog

from maild.store.blobs import write_durably

log = structlog.get_logger("maild.quarantine")


def quarantine(data_dir: Path, raw: bytes, reason: str, *, mail_from: str | None,
               recipients: list[str], now: datetime) -> Path:
    sha = hashlib.sha256(raw).hexdigest()
    folder = data_dir / "quarantine"
    base = f"{now.strftime('%Y%m%dT%H%M%S')}-{sha[:16]}"
    eml = folder / f"{base}.eml"
    write_durably(eml, raw)
    note = {"reason": reason, "mail_from": mail_from, "recipients": recipients,
            "sha256": sha, "size": len(raw), "at": now.isoformat()}
    write_durably(folder / f"{base}.json", json.dumps(note, indent=2).encode())
    log.warning("message quarantined", reason=reason, file=str(eml), size=len(raw))
    return eml
