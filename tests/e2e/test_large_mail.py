"""A large mail over SMTP: spooled to disk instead of held, its attachment decoded straight
into the store, its raw bytes kept exactly as sent; a broken one is quarantined whole. With
and without parse worker processes."""

from __future__ import annotations

import hashlib
import json
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.store.blobs import BlobStore
from tests.support.daemon import Daemon
from tests.support.sink import Sink
from tests.unit.test_large_mail import PDF, single_part_pdf, thunderbird_with_attachments

BIG = PDF * 10  # 6 MB: past the receiver's 4 MiB spool threshold


@pytest.fixture(params=[2, 0], ids=["workers", "no-workers"])
def desk(request: pytest.FixtureRequest, sink: Sink, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon.with_config(tmp_path, f"sqlite:///{tmp_path}/maild.db", f"smtp://127.0.0.1:{sink.port}",
                           max_bytes=40_000_000)
    assert d.config is not None
    d.config.write_text(d.config.read_text().replace(
        "max_message_bytes = 40000000", f"max_message_bytes = 40000000\nparse_processes = {request.param}"))
    d.start()
    yield d
    d.stop()


def send(desk: Daemon, raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=60) as s:
        code, answer = s.ehlo("mail.firma.test")
        s.mail("tereza@firma.test")
        s.rcpt("support@example.com")
        code, answer = s.data(raw)
    assert code == 250, answer
    return answer.decode()


def blob(desk: Daemon, kind: str, sha: str) -> bytes:
    """The blob's file itself, where the store's layout puts it (not through the store's reads)."""
    return BlobStore(desk.folder / "data" / kind).path(sha).read_bytes()


def test_large_attachment_is_stored_and_the_raw_mail_kept_as_sent(desk: Daemon) -> None:
    raw = thunderbird_with_attachments(pdf=BIG)
    assert send(desk, raw) == "2.0.0 OK"  # the sender learns nothing of the case
    case = desk.case(1)
    assert case["subject"] == "Výpis účtu"
    (post,) = case["posts"]
    assert "posílám výpis a fotky" in post["body"]
    files = {a["filename"]: a for a in post["attachments"]}
    assert set(files) == {"výpis-účtu.pdf", "folder", "logs.zip", "notes.txt"}
    pdf = files["výpis-účtu.pdf"]
    assert pdf["size"] == len(BIG) and pdf["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert blob(desk, "attachments", pdf["sha256"]) == BIG
    assert blob(desk, "raw", hashlib.sha256(raw).hexdigest()) == raw
    assert list((desk.folder / "data" / "spool").iterdir()) == []


def test_large_mail_with_broken_base64_is_quarantined_whole(desk: Daemon) -> None:
    raw = single_part_pdf(BIG[:6_000_000]) + b"Q\r\n"
    assert send(desk, raw) == "2.0.0 OK"  # nor that it was quarantined
    assert desk.cases() == []
    folder = desk.folder / "data" / "quarantine"
    (eml,) = folder.glob("*.eml")
    assert eml.read_bytes() == raw
    note = json.loads(eml.with_suffix(".json").read_text())
    assert "scan.pdf" in note["reason"] and "cannot be decoded" in note["reason"]
    assert note["size"] == len(raw)
    assert list((desk.folder / "data" / "spool").iterdir()) == []
