"""Files maild writes are never world-readable (SPEC §11, issue 18 point 7): started from a shell
whose umask is 022, the database, its WAL and SHM, raw mails, attachments, the outbox Maildir (it
holds agents' reply tokens) and the secret have no permission bit for "other"."""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maild.store.blobs import RAW_IN_DATABASE_MAX
from tests.support.daemon import Daemon


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask a careless shell gives the processes started inside."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def with_attachment(frm: str, size: int) -> bytes:
    """A mail as a client writes it: text and a base64 attachment of about `size` bytes."""
    b64 = (b"QUJD" * (size // 4 + 1))[: size // 3 * 4]
    lines = b"\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return (f"From: Jane <{frm}>\r\nTo: support@example.com\r\nSubject: Logs attached\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@client.test>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
            "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe logs are attached.\r\n"
            "--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=log.bin\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + lines + b"\r\n--b1--\r\n"


def loose(path: Path) -> list[str]:
    """`path` and everything under it that has a permission bit for "other"."""
    found = []
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        mode = p.lstat().st_mode
        if mode & stat.S_IRWXO:
            found.append(f"{p} {stat.filemode(mode)}")
    return found


def test_nothing_maild_writes_is_world_readable(tmp_path: Path) -> None:
    db = tmp_path / "maild.db"
    d = Daemon.with_config(tmp_path, f"sqlite:///{db}", "maildir://outbox")
    with umask(0o022):
        d.start()
    try:
        d.send(with_attachment("jane@acme.test", 2_000), "jane@acme.test", ["support@example.com"])
        d.send(with_attachment("joe@acme.test", RAW_IN_DATABASE_MAX * 2), "joe@acme.test", ["support@example.com"])
        outbox = tmp_path / "outbox"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(list((outbox / "new").glob("*"))) < 2:
            time.sleep(0.1)
        data = tmp_path / "data"
        files = [p for p in data.rglob("*") if p.is_file()]
        sizes = sorted(p.stat().st_size for p in files)
        # the walk is not vacuous: both attachments and the large mail's raw bytes are files here
        assert len(files) >= 3 and sizes[-1] > RAW_IN_DATABASE_MAX * 2, sizes
        assert len(list((outbox / "new").glob("*"))) >= 2, d.log()
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists() and shm.exists()  # the daemon is running: SQLite's WAL and SHM are there
        with umask(0o022):
            d.cli("case", "list")  # a CLI command run by an admin may create files too
        problems = [*loose(data), *loose(outbox), *loose(db), *loose(wal), *loose(shm)]
        assert problems == []
        assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    finally:
        d.stop()
