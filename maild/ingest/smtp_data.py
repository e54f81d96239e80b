"""SMTP DATA read in blocks, not line by line.

aiosmtpd reads DATA one line at a time: a 200 KB attachment is 2,600 awaits and joins, and
that was most of the event loop's time per mail. Here the reader asks the stream for
everything up to the end marker (CRLF . CRLF) at once, removes the dot-stuffing (RFC 5321
§4.5.2) block by block, and counts the size as it goes, so oversized mail is drained and
refused without being kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

END = b"\r\n.\r\n"


@dataclass
class DataResult:
    content: bytes  # dot-stuffing removed; empty when too_big or spooled
    size: int  # bytes on the wire before the final ".", dot-stuffing included (as aiosmtpd counts)
    too_big: bool
    spooled: Path | None = None  # a large mail's content, in a file the caller now owns
    error: OSError | None = None  # the spool file could not be written (a full disk): nothing is kept


def _partial_end(data: bytes) -> int:
    """Length of the longest end of `data` that begins the end marker without completing it."""
    for n in (4, 3, 2, 1):
        if data.endswith(END[:n]):
            return n
    return 0


class _Content:
    """The unstuffed content ("CRLF ." becomes CRLF, across block boundaries), in memory or,
    past `spool_above` bytes, in a file under `spool_dir`, so a large mail is never held whole.
    The first two bytes fed (the CRLF assumed before the data) are not content."""

    def __init__(self, spool_dir: Path | None, spool_above: int):
        self.parts: list[bytes] = []
        self._held = 0
        self._carry = b""
        self._skip = 2
        self._spool_dir = spool_dir
        self._spool_above = spool_above
        self.file: BinaryIO | None = None
        self.path: Path | None = None

    def feed(self, block: bytes) -> None:
        data = self._carry + block
        keep = 2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\r") else 0
        body, self._carry = (data[:-keep], data[-keep:]) if keep else (data, b"")
        self._emit(body.replace(b"\r\n.", b"\r\n"))

    def _emit(self, data: bytes) -> None:
        if self._skip:
            data, self._skip = data[self._skip:], max(0, self._skip - len(data))
        if self.file is not None:
            self.file.write(data)
            return
        self.parts.append(data)
        self._held += len(data)
        if self._spool_dir is not None and self._held > self._spool_above:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._spool_dir, prefix="smtp-", suffix=".eml")
            self.file, self.path = os.fdopen(fd, "wb"), Path(name)
            self.file.writelines(self.parts)
            self.parts, self._held = [], 0

    def finish(self) -> bytes:
        """The content; b"" when it went to the file (`path`), which is then complete."""
        self._emit(self._carry)
        if self.file is not None:
            self.file.close()
            return b""
        content = b"".join(self.parts)
        self.parts = []
        return content

    def drop(self) -> None:
        """Nothing of this mail is kept (too big, the spool file failed, the connection was lost)."""
        self.parts, self._held = [], 0
        if self.file is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails as the write did
                self.file.close()
            self.file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


async def read_data(reader: asyncio.StreamReader, limit: int | None, spool_dir: Path | None = None,
                    spool_above: int = 4 << 20) -> DataResult:
    """Reads one DATA section up to and including its end marker, leaving what follows (a
    pipelined command) in the stream. `limit`: the most bytes kept, or None. With `spool_dir`,
    content past `spool_above` bytes goes to a file there (DataResult.spooled).

    The section is read as if preceded by CRLF (the end of the DATA command), so that an empty
    mail's lone "." is found like any other end marker; those two bytes are dropped at the end.
    """
    content = _Content(spool_dir, spool_above)
    size = -2  # the assumed CRLF is not on the wire
    too_big = False
    error: OSError | None = None  # the spool file failed: the rest is read and dropped

    def commit(data: bytes) -> None:
        nonlocal size, too_big, error
        size += len(data)
        if not too_big and limit is not None and size > limit:
            too_big = True
            content.drop()  # nothing of an oversized mail is kept
        if not too_big and error is None:
            try:
                content.feed(data)
            except OSError as e:
                error = e
                content.drop()

    try:
        await _read_until_end(reader, commit)
    except BaseException:
        content.drop()
        raise
    if too_big:
        return DataResult(b"", size, True)
    if error is None:
        try:
            data = content.finish()
        except OSError as e:
            error = e
            content.drop()
    if error is not None:
        return DataResult(b"", size, False, error=error)
    return DataResult(data, size, False, content.path)


async def _read_until_end(reader: asyncio.StreamReader, commit: Callable[[bytes], None]) -> None:
    pending = b"\r\n"  # read, but perhaps the start of the end marker: not yet content
    while True:
        if pending:  # the marker may have begun: read just enough bytes to tell
            data = pending + await reader.readexactly(len(END) - len(pending))
            if data == END:
                commit(data[:2])  # the CRLF before the dot ends the content's last line
                break
        else:
            try:
                block = await reader.readuntil(END)
            except asyncio.LimitOverrunError as e:  # no marker in the buffer yet
                data = await reader.readexactly(e.consumed)
            else:
                commit(block[:-3])
                break
        keep = _partial_end(data)
        commit(data[:-keep] if keep else data)
        pending = data[-keep:] if keep else b""
