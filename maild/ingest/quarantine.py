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

from maild.store.blobs import copy_durably, write_durably

log = structlog.get_logger("maild.quarantine")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def quarantine(data_dir: Path, raw: bytes | Path, reason: str, *, mail_from: str | None,
               recipients: list[str], now: datetime) -> Path:
    """`raw`: the bytes, or the file of a mail too large to hold (copied, not read whole)."""
    sha = _file_sha256(raw) if isinstance(raw, Path) else hashlib.sha256(raw).hexdigest()
    size = raw.stat().st_size if isinstance(raw, Path) else len(raw)
    folder = data_dir / "quarantine"
    base = f"{now.strftime('%Y%m%dT%H%M%S')}-{sha[:16]}"
    eml = folder / f"{base}.eml"
    if isinstance(raw, Path):
        copy_durably(raw, eml)
    else:
        write_durably(eml, raw)
    note = {"reason": reason, "mail_from": mail_from, "recipients": recipients,
            "sha256": sha, "size": size, "at": now.isoformat()}
    write_durably(folder / f"{base}.json", json.dumps(note, indent=2).encode())
    log.warning("message quarantined", reason=reason, file=str(eml), size=size)
    return eml
