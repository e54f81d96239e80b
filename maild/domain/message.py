"""The inbound mail as maild reads it: content only, plain data that crosses processes cheaply.

`InboundMessage` is what parsing (ingest.parse) makes of the bytes and what threading, rules and
the pipeline read. Where the raw bytes themselves are is one `RawMail`: in memory, in a file of
the raw store (a large mail is never held whole), or both once a parse worker has stored them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

HEADER_END_RE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class RawMail:
    """Where a mail's raw bytes are. `data`: the bytes in memory (b"" when not held); `path`: a
    file holding them (the raw store, or a spool file), None when none was written. A small mail
    has `data` only, a large one `path` only; a mail a parse worker stored may have both."""

    data: bytes = b""
    path: str | None = None

    @classmethod
    def of(cls, source: bytes | str | os.PathLike[str]) -> RawMail:
        """Bytes in memory, or the path of a file holding them."""
        if isinstance(source, bytes):
            return cls(data=source)
        return cls(path=os.fspath(source))

    @property
    def stored(self) -> bool:
        """Whether the bytes are in a file already (nothing left for the commit to write)."""
        return self.path is not None

    def read(self) -> bytes:
        """All the bytes: from memory, or read from the file (a large mail: only when needed)."""
        if self.data or self.path is None:
            return self.data
        return Path(self.path).read_bytes()

    def source(self) -> bytes | Path:
        """What a parser that streams large mails takes: the bytes, or the file's Path."""
        if self.data or self.path is None:
            return self.data
        return Path(self.path)

    def header_section(self, limit: int) -> bytes:
        """The header section as it came (up to the first blank line), reading a file in chunks
        and stopping after about `limit` bytes, so a large body is not read from disk."""
        if self.data or self.path is None:
            data = self.data
        else:
            data = b""
            with Path(self.path).open("rb") as f:
                while len(data) < limit:
                    chunk = f.read(65536)
                    if not chunk:
                        break
                    data += chunk
                    if HEADER_END_RE.search(data):
                        break
        end = HEADER_END_RE.search(data)
        return data[:end.start()] if end else data


@dataclass(frozen=True)
class Address:
    address: str  # lowercased
    name: str = ""


@dataclass(frozen=True)
class InboundAttachment:
    filename: str
    content_type: str
    data: bytes | None  # None: a large part already decoded into the attachment store
    sha256: str
    size: int
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class ExtractedReply:
    """A mail body split by threading.reply.extract_reply."""

    text: str  # the new text, without blank lines at either end
    quoted: str  # what was cut as quoted history ("" if none)
    signature: str  # what was cut as signature ("" if none)


@dataclass(frozen=True)
class InboundMessage:
    """One parsed mail: content only. Where its raw bytes are is `raw_mail`."""

    sha256: str
    message_id: str | None
    sender: Address | None  # From
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    subject: str
    text: str
    html: str | None
    attachments: list[InboundAttachment]
    in_reply_to: list[str]
    references: list[str]
    headers: dict[str, list[str]] = field(repr=False)  # lowercased name -> decoded values
    content_type: str = "text/plain"
    report_type: str | None = None
    # What a delivery status notification says, read while the MIME tree is at hand; plain
    # data, so that a parsed mail crosses to another process cheaply.
    dsn_failed_recipients: list[str] = field(default_factory=list)
    returned_message_ids: list[str] = field(default_factory=list)
    # What the bounce detectors (rules.bounce_detect: flufl.bounce and maild's own) read, only
    # for mails that could be bounces: failed for good, only delayed, and which detector said so
    # ("" when none read a bounce). Addresses normalized (headers.normalize_address).
    bounce_permanent: list[str] = field(default_factory=list)
    bounce_temporary: list[str] = field(default_factory=list)
    bounce_detector: str = ""
    bounce_diagnostics: dict[str, str] = field(default_factory=dict)  # address -> status / diagnostic
    size: int = 0
    # Pure functions of the body, worked out with the parse (in a parse worker, off the writer):
    reply: ExtractedReply | None = None  # the new text apart from quoted history and signature
    safe_html: str | None = None  # `html` sanitized, as posts keep it
    omitted_parts: int = 0  # MIME parts past [protection] max_mime_parts: not attachments, only in the raw message
    raw_mail: RawMail = field(default=RawMail(), repr=False)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def raw_bytes(self) -> bytes:
        """The raw mail, read from the store if it was too large to keep in memory."""
        return self.raw_mail.read()

