"""Content-addressed files (raw messages, attachments) under the data folder.

A file's path is built only from its SHA-256, never from input, and it is fsynced before
the database transaction that refers to it commits; a crash in between leaves at most an
unreferenced file, which a retry of the same bytes reuses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """Writes via a temp file, fsync and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BlobStore:
    def __init__(self, root: Path):
        self.root = root

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path(sha256)
        if not path.exists():
            write_durably(path, data)
        return sha256

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()


class DryRunBlobStore(BlobStore):
    """Keeps new blobs in memory: `maild inspect` runs the pipeline and must store nothing."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.kept: dict[str, bytes] = {}

    def put(self, data: bytes, sha256: str | None = None) -> str:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.kept.setdefault(sha256, data)
        return sha256

    def get(self, sha256: str) -> bytes:
        return self.kept[sha256] if sha256 in self.kept else super().get(sha256)
