"""DATA read in blocks gives exactly what a line-by-line reader gives: the content with the
dot-stuffing removed, the end marker found wherever the network splits it, and a pipelined
command after it left in the stream."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from maild.ingest.smtp_data import DataResult, read_data


def stuffed(content: bytes) -> bytes:
    """What a client puts on the wire for `content` (RFC 5321 §4.5.2), end marker included."""
    if not content:
        return b".\r\n"
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines) + b".\r\n"


def read(wire: bytes, *, pieces: list[int] | None = None, buffer: int = 2**16,
         limit: int | None = None) -> tuple[bytes, int, bool, bytes]:
    result, rest = spool_read(wire, None, pieces=pieces, buffer=buffer, limit=limit)
    return result.content, result.size, result.too_big, rest


TRICKY = [
    b"",  # DATA, then "." at once
    b"\r\n",
    b"Hello\r\n",
    b".\r\n",  # a line that is a lone dot
    b"..\r\n",
    b".hidden line\r\n",
    b"first\r\n.\r\nafter a lone dot\r\n",
    b"a\r\n\r\n.b\r\n",
    b"bare\rcarriage\r\n",
    b"ends with cr\r\r\n",
    b"\r\n.\r\n\r\n..\r\n",
]


@pytest.mark.parametrize("content", TRICKY)
def test_dot_stuffing_is_removed_and_the_next_command_stays(content: bytes) -> None:
    wire = stuffed(content)
    assert read(wire + b"QUIT\r\n") == (content, len(wire) - 3, False, b"QUIT\r\n")


def test_any_split_of_the_stream_and_any_buffer_size_give_the_same_mail() -> None:
    rng = random.Random(7)
    atoms = [b".", b"\r", b"\n", b"a", b"\r\n", b".\r\n", b"\r\n.\r\n"]
    for _ in range(300):
        content = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 30))) + b"\r\n"
        wire = stuffed(content)
        pieces = [rng.randint(1, 7) for _ in range(len(wire) // 2)]
        for buffer in (5, 6, 8, 64):
            assert read(wire + b"MAIL FROM:<a@b>\r\n", pieces=pieces, buffer=buffer) == (
                content, len(wire) - 3, False, b"MAIL FROM:<a@b>\r\n"), (content, buffer)


def test_a_large_mail_longer_than_the_buffer_is_read_whole() -> None:
    content = b"".join(b"%076d\r\n" % i for i in range(30_000))  # 2.3 MB of base64-like lines
    got, _, too_big, rest = read(stuffed(content) + b"QUIT\r\n", buffer=2**16)
    assert got == content and not too_big and rest == b"QUIT\r\n"


def test_oversized_mail_is_drained_and_not_kept() -> None:
    content = b"x" * 98 + b"\r\n"
    got, size, too_big, rest = read(stuffed(content) + b"QUIT\r\n", limit=99)
    assert (got, too_big, rest) == (b"", True, b"QUIT\r\n") and size == 100
    assert read(stuffed(content), limit=100)[:3] == (content, 100, False)


def spool_read(wire: bytes, folder: Path | None, *, spool_above: int = 4 << 20, limit: int | None = None,
               pieces: list[int] | None = None, buffer: int = 64) -> tuple[DataResult, bytes]:
    """DATA read from a stream fed `wire` in `pieces`, as the network may split it."""
    async def go() -> tuple[DataResult, bytes]:
        reader = asyncio.StreamReader(limit=buffer)
        pos = 0
        for n in pieces or []:
            reader.feed_data(wire[pos:pos + n])
            pos += n
        reader.feed_data(wire[pos:])
        reader.feed_eof()
        return await read_data(reader, limit, spool_dir=folder, spool_above=spool_above), await reader.read()
    return asyncio.run(go())


def test_a_large_mail_goes_to_a_spool_file_unstuffed(tmp_path: Path) -> None:
    content = b"".join(b".line %d\r\n" % i for i in range(2000))
    result, rest = spool_read(stuffed(content) + b"QUIT\r\n", tmp_path, spool_above=1000,
                              pieces=[3, 5, 7] * 500)
    assert result.content == b"" and result.spooled is not None and rest == b"QUIT\r\n"
    assert result.spooled.parent == tmp_path and result.spooled.read_bytes() == content
    small, _ = spool_read(stuffed(b".x\r\n"), tmp_path, spool_above=1000)
    assert small.content == b".x\r\n" and small.spooled is None


def test_an_oversized_or_cut_off_mail_leaves_no_spool_file(tmp_path: Path) -> None:
    content = b"x" * 5000 + b"\r\n"
    result, rest = spool_read(stuffed(content) + b"QUIT\r\n", tmp_path, spool_above=100, limit=3000)
    assert result.too_big and result.spooled is None and rest == b"QUIT\r\n"
    with pytest.raises(asyncio.IncompleteReadError):  # the client went away in the middle
        spool_read(content, tmp_path, spool_above=100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arg", [
    "<jane@acme.test>", "<jane.doe+tag@mail.acme.test> SIZE=1234 BODY=8BITMIME", "<>", "<\"odd person\"@acme.test>",
    "jane@acme.test", "<a..b@acme.test>", "<.a@acme.test>", "<jane@[192.0.2.1]>", "<x@acme.test", "",
    "<jane@acme.test>SMTPUTF8", "<jane@acme.test> \t X", "<jane@acme.test> (comment) X", "<žofie@acme.test>",
    "<@relay.test:jane@acme.test>",
])
def test_mail_and_rcpt_addresses_read_as_aiosmtpd_reads_them(arg: str) -> None:
    from aiosmtpd.smtp import SMTP

    from maild.ingest.smtp import MaildSMTP

    loop = asyncio.new_event_loop()
    try:
        ours, theirs = MaildSMTP(object(), loop=loop), SMTP(object(), loop=loop)
        assert ours._getaddr(arg) == theirs._getaddr(arg)
    finally:
        loop.close()
