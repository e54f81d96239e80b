"""Large mail without large copies: big attachments go from the file straight into the store.

The email package holds a part's body as text, then mail-parser keeps it as a base64 string,
then we decode it: a 34 MB mail cost over 250 MB. For a mail the SMTP receiver spooled to
disk, this module walks the MIME structure in the file, decodes every large base64
attachment chunk by chunk into the attachment store, and hands mail-parser a skeleton: the
same mail with each such body replaced by a short marker. Everything else (headers, text and
HTML parts, small attachments) is parsed exactly as before. A structure the walk does not
follow (no closing boundary, absurd nesting) makes it give up, and the whole mail is parsed
the ordinary way.

The same walk keeps a mail's MIME parts within [protection] max_mime_parts (SPEC §11): past
that many attachments, every further part is cut out of the skeleton before the email
package ever sees it (never stored, never a row), and counted (`Skeleton.omitted`); the
raw message keeps them. 10,000 parts cost 10,000 blob files and rows, and the email
package's walk over all of them, before.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import sys
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
    omitted: int = 0  # MIME parts cut out past the limit of parts kept


class _NotOurs(Exception):
    """A structure the walk does not follow: parse the whole mail instead."""


class _Walk:
    """`source`: the mail held (bytes, searched in place) or an open file (read a chunk at a
    time). `attachments` None: nothing is stored, parts are only counted and cut."""

    def __init__(self, source: bytes | BinaryIO, size: int, attachments: BlobStore | None, large_part: int,
                 max_parts: int | None = None):
        self.buf = source if isinstance(source, bytes) else None
        self.f = source if not isinstance(source, bytes) else None
        self.size = size
        self.attachments = attachments
        self.large_part = large_part if attachments is not None else sys.maxsize
        self.max_parts = max_parts
        self.kept = 0  # parts that may become attachments, seen and kept
        self.omitted = 0  # parts cut out past max_parts
        self.nonce = secrets.token_hex(8)
        self.replaced: list[tuple[int, int, bytes]] = []  # body start, body end, what goes instead
        self.parts: dict[bytes, StoredPart] = {}

    def read(self, start: int, end: int) -> bytes:
        if self.buf is not None:
            return self.buf[start:max(start, end)]
        assert self.f is not None
        self.f.seek(start)
        return self.f.read(max(0, end - start))

    def find(self, pattern: bytes, start: int, end: int) -> int:
        """First position of `pattern` in [start, end), read a chunk at a time, or -1."""
        if self.buf is not None:
            return self.buf.find(pattern, start, end)
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

    @property
    def full(self) -> bool:
        """As many parts kept as may be: every further part is cut out."""
        return self.max_parts is not None and self.kept >= self.max_parts

    def counts(self, headers: EmailMessage, maintype: str, attached: bool) -> bool:
        """Whether this part may become an attachment, so counts against max_parts: anything
        but a plain text or HTML body (named, or with a Content-ID, it counts too), an
        attached multipart as one, and none inside one (mail-parser keeps those verbatim in it)."""
        if attached:
            return False
        if maintype == "multipart":
            return (headers.get_content_disposition() or "").lower() == "attachment"
        return (headers.get_content_type() not in ("text/plain", "text/html") or bool(headers.get_filename())
                or headers.get("Content-ID") is not None
                or (headers.get_content_disposition() or "").lower() == "attachment")

    def entity(self, start: int, end: int, depth: int, attached: bool = False) -> bool:
        """`attached`: inside a multipart that is itself an attachment, whose parts mail-parser
        keeps verbatim in that attachment: nothing is taken out there. True: this part is
        past max_parts, and its caller cuts it out whole."""
        if depth > MAX_DEPTH:
            raise _NotOurs("nested too deep")
        if depth > 0 and self.full and not attached:
            return True
        if self.read(start, start + 2) == b"\r\n" or self.read(start, start + 1) == b"\n":
            return False  # no header section: text/plain, nothing to take out
        limit = min(end, start + HEADER_MAX)
        crlf, lf = self.find(b"\r\n\r\n", start, limit), self.find(b"\n\n", start, limit)
        if crlf < 0 and lf < 0:
            if end - start >= HEADER_MAX:
                raise _NotOurs("no end of the header section")
            return False  # headers only
        header_end, body_start = (crlf + 2, crlf + 4) if crlf >= 0 and (lf < 0 or crlf < lf) else (lf + 1, lf + 2)
        headers = BytesHeaderParser(policy=compat32).parsebytes(self.read(start, header_end))
        maintype = headers.get_content_maintype()
        if depth > 0 and self.max_parts is not None and self.counts(headers, maintype, attached):
            self.kept += 1
        if maintype == "multipart":
            boundary = headers.get_boundary()
            if boundary:
                attached = attached or (headers.get_content_disposition() or "").lower() == "attachment"
                self.multipart(body_start, end, boundary.encode("utf-8", "surrogateescape"), depth, attached)
        elif maintype != "message" and not attached:
            self.leaf(headers, body_start, end)
        return False

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
        for (at, part_start), (next_at, _) in itertools.pairwise(delimiters):
            part_end = next_at - 1 if self.read(next_at - 1, next_at) == b"\r" else next_at
            if part_start < part_end and self.entity(part_start, part_end, depth + 1, attached):
                # from its delimiter's "\n" to the next one's: the CR before stays, to end the line before
                self.replaced.append((at, next_at, b""))
                self.omitted += 1

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


def skeleton_of(source: Path | bytes, attachments: BlobStore | None,
                max_parts: int | None = None) -> Skeleton | None:
    """The mail (a spooled file, or bytes held) with its large attachments stored and taken
    out, and its parts past `max_parts` cut out; or None when its structure is not one the walk
    follows (then parse it whole), or when there was nothing to take out. `attachments` None:
    nothing is stored, parts are only cut. Raises Undecodable."""
    if isinstance(source, bytes):
        return _skeleton(source, len(source), attachments, HELD_PART, max_parts)
    with open(source, "rb") as f:
        return _skeleton(f, f.seek(0, 2), attachments, LARGE_PART, max_parts)


def _skeleton(f: bytes | BinaryIO, size: int, attachments: BlobStore | None, large_part: int,
              max_parts: int | None) -> Skeleton | None:
    # Smaller mail has no part large enough to take out, nor so many parts that the email
    # package's walk over them matters (the parse keeps max_parts attachments of it anyway):
    # most mail, not walked.
    storing = attachments is not None and size >= large_part
    if not storing and (max_parts is None or size < HELD_PART):
        return None
    walk = _Walk(f, size, attachments, large_part, max_parts)
    try:
        walk.entity(0, size, 0)
    except _NotOurs:
        return None
    return Skeleton(walk.skeleton(), walk.parts, walk.omitted) if walk.parts or walk.omitted else None
