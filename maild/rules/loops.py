"""What kind of mail this is for loop protection: normal, auto_reply, bounce, list or loop.

A help desk that answers robots talks to itself forever, so every automatic mail maild
sends asks `automatic_reply_allowed` first (SPEC §11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from maild.ingest.parse import InboundMessage

ROBOT_LOCALPART_RE = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|noreply-.*|bounces?([+-].*)?)$", re.I
)
BOUNCE_SUBJECT_RE = re.compile(
    r"(undeliver|delivery status notification|delivery failure|returned mail|mail delivery failed|"
    r"failure notice|nicht zustellbar|недоставлен|nedoručitel)",
    re.I,
)


@dataclass(frozen=True)
class Classification:
    kind: str  # normal | auto_reply | bounce | list | loop
    reason: str = ""
    bounced_addresses: list[str] = field(default_factory=list)  # permanent failures
    delayed_addresses: list[str] = field(default_factory=list)  # temporary failures (a delay, a full mailbox)
    # Set when the mail is normal but must still get no automatic answer.
    no_auto_reason: str = ""

    @property
    def automatic_reply_allowed(self) -> bool:
        return self.kind == "normal" and not self.no_auto_reason


def _bounced_addresses(msg: InboundMessage) -> list[str]:
    found = list(msg.dsn_failed_recipients)
    if not found:  # a non-standard bounce: look for the usual "<addr>: ..." line
        for m in re.finditer(r"<([^<>\s@]+@[^<>\s@]+)>[:\s]", msg.text or ""):
            addr = m.group(1).lower()
            if addr not in found:
                found.append(addr)
    return found


def classify(msg: InboundMessage, envelope_sender: str | None, own_addresses: set[str],
             hostname: str) -> Classification:
    """Decides from headers only; `envelope_sender` is None when unknown (not the empty path)."""
    sender = msg.sender.address if msg.sender else ""
    local = sender.partition("@")[0]
    auto_submitted = (msg.header("Auto-Submitted") or "").strip().lower()
    precedence = (msg.header("Precedence") or "").strip().lower()

    if msg.content_type == "multipart/report" and (msg.report_type or "").lower() == "delivery-status":
        return Classification("bounce", "multipart/report delivery-status", _bounced_addresses(msg))
    if (local.lower() in ("mailer-daemon", "postmaster") or envelope_sender == "") and \
            BOUNCE_SUBJECT_RE.search(msg.subject):
        return Classification("bounce", f"bounce from {sender or 'the empty return path'}",
                              _bounced_addresses(msg))
    loop_header = (msg.header("X-Loop") or "").lower()
    if sender in own_addresses or (loop_header and hostname.lower() in loop_header):
        return Classification("loop", f"sent by maild itself ({sender or loop_header})")
    if auto_submitted and auto_submitted != "no":
        return Classification("auto_reply", f"Auto-Submitted: {auto_submitted}")
    if msg.header("X-Autoreply") or msg.header("X-Autorespond") or precedence == "auto_reply":
        return Classification("auto_reply", "auto-reply header")
    if msg.header("List-Id") or msg.header("List-Unsubscribe") or precedence in ("bulk", "junk", "list"):
        return Classification("list", "List-Id" if msg.header("List-Id") else
                              (f"Precedence: {precedence}" if precedence else "List-Unsubscribe"))
    if msg.header("X-Auto-Response-Suppress"):
        return Classification("normal", no_auto_reason="X-Auto-Response-Suppress")
    if envelope_sender == "":
        return Classification("normal", no_auto_reason="empty return path")
    if ROBOT_LOCALPART_RE.match(local):
        return Classification("normal", no_auto_reason=f"robot sender {sender}")
    return Classification("normal")

