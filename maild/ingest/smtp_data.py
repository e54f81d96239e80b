"""SMTP DATA read in blocks, not line by line.

aiosmtpd reads DATA one line at a time: a 200 KB attachment is 2,600 awaits and joins, and
that was most of the event loop's time per mail. Here the reader asks the stream for
everything up to the end marker (CRLF . CRLF) at once, removes the dot-stuffing (RFC 5321
§4.5.2) block by block, and counts the size as it goes, so oversized mail is drained and
refused without being kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

END = b"\r\n.\r\n"


@dataclass
class DataResult:
    content: bytes  # dot-stuffing removed; empty when too_big
    size: int  # bytes on the wire before the final ".", dot-stuffing included (as aiosmtpd counts)
    too_big: bool


def _partial_end(data: bytes) -> int:
    """Length of the longest end of `data` that begins the end marker without completing it."""
    for n in (4, 3, 2, 1):
        if data.endswith(END[:n]):
            return n
    return 0


class _Unstuffer:
    """Removes the leading dot of every line ("CRLF ." becomes CRLF), across block boundaries."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self._carry = b""

    def feed(self, block: bytes) -> None:
        data = self._carry + block
        keep = 2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\r") else 0
        body, self._carry = (data[:-keep], data[-keep:]) if keep else (data, b"")
        self.parts.append(body.replace(b"\r\n.", b"\r\n"))

    def finish(self) -> bytes:
        self.parts.append(self._carry)
        content = b"".join(self.parts)
        self.parts = []
        return content


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> DataResult:
    """Reads one DATA section up to and including its end marker, leaving what follows (a
    pipelined command) in the stream. `limit`: the most bytes kept, or None.

    The section is read as if preceded by CRLF (the end of the DATA command), so that an empty
    mail's lone "." is found like any other end marker; those two bytes are dropped at the end.
    """
    unstuff = _Unstuffer()
    pending = b"\r\n"  # read, but perhaps the start of the end marker: not yet content
    size = -2  # the assumed CRLF is not on the wire
    too_big = False

    def commit(data: bytes) -> None:
        nonlocal size, too_big
        size += len(data)
        if not too_big and limit is not None and size > limit:
            too_big = True
            unstuff.parts = []  # nothing of an oversized mail is kept
        if not too_big:
            unstuff.feed(data)

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
    if too_big:
        return DataResult(b"", size, True)
    return DataResult(unstuff.finish()[2:], size, False)
