"""Where a mail's raw bytes are kept: small ones in the database, in the transaction that
stores the mail, larger ones as files of the raw blob store (store.blobs).

A file costs more than its bytes here: creating it, its directories and its fsync took
0.6–1.5 ms of kernel CPU a mail on the 2-core test machine, in the parse workers, beside a
commit that fsyncs anyway. Most support mail is a few KB; attachments make the large ones,
and those stay files, so that the database does not carry them through every checkpoint.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from maild.store.blobs import BlobStore, kept_in_database
from maild.store.models import RawMessage
from maild.store.rows import insert_unless_present


def keep_raw(session: Session, files: BlobStore, sha256: str, raw: bytes) -> None:
    """Keeps the raw bytes with the transaction (or as a file, fsynced before it commits)."""
    if kept_in_database(len(raw)):
        insert_unless_present(session, RawMessage.__table__, {"sha256": sha256, "data": raw})
    else:
        files.put(raw, sha256)


def raw_message(session: Session, files: BlobStore, sha256: str) -> bytes:
    """A stored mail's raw bytes, wherever they are; KeyError if neither place has them."""
    data = session.scalar(select(RawMessage.data).where(RawMessage.sha256 == sha256))
    if data is not None:
        return bytes(data)
    try:
        return files.get(sha256)
    except FileNotFoundError:
        raise KeyError(sha256) from None
