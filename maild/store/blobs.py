"""Content-addressed files (raw messages, attachments) under the data folder.

A file's path is built only from its SHA-256, never from input, and it is fsynced before
the database transaction that refers to it commits; a crash in between leaves at most an
unreferenced file, which a retry of the same bytes reuses.

Blobs sit in one level of 256 folders (`ab/abcd…`), as git's loose objects do. Two levels
(`ab/cd/abcd…`, 65,536 folders) meant that nearly every blob of a desk with fewer than a few
hundred thousand of them created a folder as well, ~30 µs of kernel time each on the test
machine, in the parse workers; `bench smtp` took 3.8 % more mail a second with one level (4
interleaved pairs, all won). Blobs stored in the two-level layout are still found where
they are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# A mail's raw bytes up to this size are kept in the database (store.raw_messages), larger
# ones here; a constant of this module so that parse workers decide without SQLAlchemy.
RAW_IN_DATABASE_MAX = 64 * 1024


def kept_in_database(raw_size: int) -> bool:
    return raw_size <= RAW_IN_DATABASE_MAX


def _write_durably(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Writes via a temp file, fsync and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_durably(path: Path, data: bytes) -> None:
    _write_durably(path, lambda f: f.write(data))


def copy_durably(source: Path, target: Path) -> None:
    """write_durably for a file too large to read into memory."""
    with open(source, "rb") as src:
        _write_durably(target, lambda out: shutil.copyfileobj(src, out, 1 << 20))


class BlobWriter:
    """A blob written piece by piece (a large attachment decoded as it is read): hashed as it
    goes, named by its hash only when complete."""

    def __init__(self, store: BlobStore):
        self.store = store
        store.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".tmp-")
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """fsync, then the content path; returns the SHA-256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._hash.hexdigest()
        self.store.adopt(self._tmp, sha256)
        return sha256

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path):
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the blob `sha256` is written."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def stored_path(self, sha256: str) -> Path | None:
        """Where the blob is, in either layout; None if the store does not have it."""
        path = self.path(sha256)
        if path.exists():
            return path
        two_levels = self.root / sha256[:2] / sha256[2:4] / sha256
        return two_levels if two_levels.exists() else None

    def put(self, data: bytes, sha256: str | None = None) -> str:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.put_file(data, sha256)
        return sha256

    def put_file(self, data: bytes, sha256: str) -> Path:
        """`put`, answering where the blob is."""
        stored = self.stored_path(sha256)
        if stored is not None:
            return stored
        path = self.path(sha256)
        write_durably(path, data)
        return path

    def get(self, sha256: str) -> bytes:
        path = self.stored_path(sha256)
        if path is None:
            raise FileNotFoundError(f"no blob {sha256} under {self.root}")
        return path.read_bytes()

    def adopt(self, file: Path, sha256: str) -> Path:
        """Moves a complete, fsynced file on the same file system into the store as `sha256`
        (or drops it if the store has that content already); returns the blob's path."""
        stored = self.stored_path(sha256)
        if stored is not None:
            file.unlink(missing_ok=True)
            return stored
        path = self.path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, path)
        return path

    def writer(self) -> BlobWriter:
        return BlobWriter(self)


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
