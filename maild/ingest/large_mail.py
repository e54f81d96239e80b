"""Large mail without large copies: big attachments go from the file straight into the store.

The email package holds a part's body as text, then mail-parser keeps it as a base64 string,
then we decode it: a 34 MB mail cost over 250 MB. For a mail the SMTP receiver spooled to
disk, this module walks the MIME structure in the file, decodes every large base64
attachment chunk by chunk into the attachment store, and hands mail-parser a skeleton: the
same mail with each such body replaced by a short marker. Everything else (headers, text and
HTML parts, small attachments) is parsed exactly as before. A structure the walk does not
follow (no closing boundary, absurd nesting) makes it give up, and the whole mail is parsed
the ordinary way.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import secrets
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import BinaryIO

from maild.store.blobs import BlobStore

LARGE_PART = 256 * 1024  # in a spooled mail, attachment bodies above this are decoded straight into the store
# In a mail held in memory (parsed in a worker), from this size on: the email package reads a
# body line by line, 2,600 lines for a 200 KB attachment, where one a2b_base64 call does.
HELD_PART = 32 * 1024
CHUNK = 1 << 20
HEADER_MAX = 1 << 20  # a header section longer than this is not ours to walk
MAX_DEPTH = 20
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)


class Undecodable(Exception):
    """A large attachment's base64 is broken; the mail goes to quarantine with this reason."""


@dataclass(frozen=True)
class StoredPart:
    sha256: str
    size: int


@dataclass
class Skeleton:
    raw: bytes  # the mail with each large attachment's body replaced by its marker
    parts: dict[bytes, StoredPart] = field(default_factory=dict)  # decoded marker -> the stored body


class _NotOurs(Exception):
    """A structure the walk does not follow: parse the whole mail instead."""


class _Walk:
    def __init__(self, f: BinaryIO, size: int, attachments: BlobStore, large_part: int):
        self.f = f
        self.size = size
        self.attachments = attachments
        self.large_part = large_part
        self.nonce = secrets.token_hex(8)
        self.replaced: list[tuple[int, int, bytes]] = []  # body start, body end, what goes instead
        self.parts: dict[bytes, StoredPart] = {}

    def read(self, start: int, end: int) -> bytes:
        self.f.seek(start)
        return self.f.read(max(0, end - start))

    def find(self, pattern: bytes, start: int, end: int) -> int:
        """First position of `pattern` in [start, end), read a chunk at a time, or -1."""
        pos = start
        while pos < end:
            block = self.read(pos, min(end, pos + CHUNK + len(pattern) - 1))
            i = block.find(pattern)
            if i >= 0:
                return pos + i
            if pos + len(block) >= end:
                return -1
            pos += CHUNK
        return -1

    def entity(self, start: int, end: int, depth: int, attached: bool = False) -> None:
        """`attached`: inside a multipart that is itself an attachment, whose parts mail-parser
        keeps verbatim in that attachment: nothing is taken out there."""
        if depth > MAX_DEPTH:
            raise _NotOurs("nested too deep")
        if self.read(start, start + 2) == b"\r\n" or self.read(start, start + 1) == b"\n":
            return  # no header section: text/plain, nothing to take out
        limit = min(end, start + HEADER_MAX)
        crlf, lf = self.find(b"\r\n\r\n", start, limit), self.find(b"\n\n", start, limit)
        if crlf < 0 and lf < 0:
            if end - start >= HEADER_MAX:
                raise _NotOurs("no end of the header section")
            return  # headers only
        header_end, body_start = (crlf + 2, crlf + 4) if crlf >= 0 and (lf < 0 or crlf < lf) else (lf + 1, lf + 2)
        headers = BytesHeaderParser(policy=compat32).parsebytes(self.read(start, header_end))
        maintype = headers.get_content_maintype()
        if maintype == "multipart":
            boundary = headers.get_boundary()
            if boundary:
                attached = attached or (headers.get_content_disposition() or "").lower() == "attachment"
                self.multipart(body_start, end, boundary.encode("utf-8", "surrogateescape"), depth, attached)
        elif maintype != "message" and not attached:
            self.leaf(headers, body_start, end)

    def multipart(self, body_start: int, end: int, boundary: bytes, depth: int, attached: bool) -> None:
        dash = b"\n--" + boundary
        delimiters: list[tuple[int, int]] = []  # where the delimiter's line starts ("\n"), where the part starts
        pos = body_start - 1  # the blank line's "\n": a body may start with its first delimiter
        while True:
            at = self.find(dash, pos, end)
            if at < 0:
                raise _NotOurs("no closing boundary")
            after = at + len(dash)
            if self.read(after, after + 2) == b"--":
                delimiters.append((at, -1))
                break
            line_end = self.find(b"\n", after, end)
            if line_end < 0:
                raise _NotOurs("boundary line never ends")
            if self.read(after, line_end).strip(b" \t\r"):
                pos = after  # a longer boundary that begins like ours
                continue
            delimiters.append((at, line_end + 1))
            pos = line_end
        for (_, part_start), (next_at, _) in itertools.pairwise(delimiters):
            part_end = next_at - 1 if self.read(next_at - 1, next_at) == b"\r" else next_at
            if part_start < part_end:
                self.entity(part_start, part_end, depth + 1, attached)

    def leaf(self, headers: EmailMessage, body_start: int, end: int) -> None:
        """Takes out a large base64 attachment; mail-parser will see its marker instead. Text and
        HTML parts stay: named ones may be the mail's body too."""
        if end - body_start < self.large_part or headers.get_content_type() in ("text/plain", "text/html"):
            return
        if not headers.get_filename():
            return
        if str(headers.get("Content-Transfer-Encoding", "")).strip().lower() != "base64":
            return
        stored = self.decode_into_store(body_start, end, headers.get_filename() or "")
        marker = f"maild-large-part:{self.nonce}:{len(self.parts)}".encode()
        self.parts[marker] = stored
        self.replaced.append((body_start, end, base64.b64encode(marker)))

    def decode_into_store(self, start: int, end: int, filename: str) -> StoredPart:
        """Decodes as one binascii.a2b_base64 call over the whole body would (characters
        outside the alphabet skipped, nothing after the padding), a 4-character-aligned block
        at a time."""
        writer = self.attachments.writer()
        try:
            carry = b""
            after_padding: list[bytes] | None = None  # from the quantum holding the first "="
            pos = start
            while pos < end:
                block = self.read(pos, min(end, pos + CHUNK)).translate(None, _NOT_BASE64)
                pos += CHUNK
                if after_padding is not None:
                    after_padding.append(block)
                    continue
                block = carry + block
                pad = block.find(b"=")
                whole = (pad if pad >= 0 else len(block)) // 4 * 4
                writer.write(binascii.a2b_base64(block[:whole]))
                carry = block[whole:]
                if pad >= 0:
                    after_padding, carry = [carry], b""
            rest = b"".join(after_padding) if after_padding is not None else carry
            if rest:
                writer.write(binascii.a2b_base64(rest))
        except (binascii.Error, ValueError) as e:
            writer.discard()
            raise Undecodable(f"attachment {filename!r} cannot be decoded: {e}") from e
        except BaseException:
            writer.discard()
            raise
        return StoredPart(writer.commit(), writer.size)

    def skeleton(self) -> bytes:
        out: list[bytes] = []
        pos = 0
        for start, end, instead in sorted(self.replaced):
            out += [self.read(pos, start), instead]
            pos = end
        out.append(self.read(pos, self.size))
        return b"".join(out)


def skeleton_of(source: Path | bytes, attachments: BlobStore) -> Skeleton | None:
    """The mail (a spooled file, or bytes held) with its large attachments stored and taken
    out, or None when its structure is not one the walk follows (then parse it whole), or when
    there was nothing to take out. Raises Undecodable."""
    if isinstance(source, bytes):
        return _skeleton(io.BytesIO(source), len(source), attachments, HELD_PART)
    with open(source, "rb") as f:
        return _skeleton(f, f.seek(0, 2), attachments, LARGE_PART)


def _skeleton(f: BinaryIO, size: int, attachments: BlobStore, large_part: int) -> Skeleton | None:
    if size < large_part:  # no part of it is large enough to take out: most mail, not walked
        return None
    walk = _Walk(f, size, attachments, large_part)
    try:
        walk.entity(0, size, 0)
    except _NotOurs:
        return None
    return Skeleton(walk.skeleton(), walk.parts) if walk.parts else None
