"""Parsing in worker processes gives the same mail as parsing in place, keeps the blobs on
disk before the writer sees the mail, and survives a worker that is killed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from maild.ingest.parse import ParseError, parse_message
from maild.ingest.parse_pool import ParsePool
from maild.store.blobs import BlobStore
from tests.unit.test_large_mail import assert_same_mail

EML = Path(__file__).parent / "eml"


def crlf(name: str) -> bytes:
    return (EML / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def pool(tmp_path: Path):
    p = ParsePool(1, tmp_path / "raw", tmp_path / "attachments")
    yield p
    p.close()


def test_worker_parses_as_in_place_and_stores_the_blobs(pool: ParsePool, tmp_path: Path) -> None:
    raw = crlf("attachments-non-ascii-names.eml")
    msg = asyncio.run(pool.parse(raw))
    assert_same_mail(parse_message(raw), dataclasses.replace(msg, raw=b""), BlobStore(tmp_path / "attachments"))
    assert msg.raw == raw and msg.attachments
    assert BlobStore(tmp_path / "raw").get(msg.sha256) == raw
    for a in msg.attachments:
        assert a.data is None or BlobStore(tmp_path / "attachments").get(a.sha256) == a.data


def test_unreadable_mail_raises_parse_error_and_stores_nothing(pool: ParsePool, tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no header section"):
        asyncio.run(pool.parse(b"\r\n\r\njust a body, no headers\r\n"))
    assert not (tmp_path / "raw").exists()


def test_a_killed_worker_loses_no_mail(pool: ParsePool) -> None:
    raw = crlf("gmail-new-plain-and-html.eml")

    async def go() -> None:
        pid = await asyncio.get_running_loop().run_in_executor(pool._pool, os.getpid)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert (await pool.parse(raw)) == parse_message(raw)  # parsed here, the pool restarted
        assert (await pool.parse(raw)) == parse_message(raw)  # and the new pool works

    asyncio.run(go())


def test_a_poller_batch_parses_ahead_and_survives_a_killed_worker(pool: ParsePool) -> None:
    raws = [crlf(name) for name in ("gmail-new-plain-and-html.eml", "apple-mail-new.eml",
                                    "russian-koi8r.eml")]
    batch = [pool.submit(raw) for raw in raws]
    assert [p.result() for p in batch] == [parse_message(raw) for raw in raws]
    pid = pool._pool.submit(os.getpid).result()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert [pool.submit(raw).result() for raw in raws] == [parse_message(raw) for raw in raws]
