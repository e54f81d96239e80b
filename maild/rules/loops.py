"""What kind of mail this is for loop protection: normal, auto_reply, bounce, list or loop.

A help desk that answers robots talks to itself forever, so every automatic mail maild
sends asks `automatic_reply_allowed` first (SPEC §11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from maild.domain.message import InboundMessage
from maild.rules.auto_reply_detect import auto_reply_reason
from maild.rules.bounce_detect import BOUNCE_SUBJECT_RE, HUMAN_PREFIX_RE, is_robot_sender

ROBOT_LOCALPART_RE = re.compile(
    r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|noreply-.*|bounces?([+-].*)?)$", re.I
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


def _bounce(msg: InboundMessage, reason: str) -> Classification:
    """A bounce with what the detectors read (parse worker) or, failing them, the DSN's failed blocks."""
    permanent = list(msg.bounce_permanent)
    temporary = list(msg.bounce_temporary)
    if not permanent and not temporary:
        permanent = [a for a in msg.dsn_failed_recipients if a]
    return Classification("bounce", reason, permanent, temporary)


def classify(msg: InboundMessage, envelope_sender: str | None, own_addresses: set[str],
             hostname: str) -> Classification:
    """Decides from headers and what the parse worker read; `envelope_sender` is None when
    unknown (not the empty path). A bounce is a bounce when a detector read one (only mails
    that could be bounces are scanned: rules.bounce_detect.could_be_bounce) or the report
    says so (multipart/report; delivery-status, or a mail system's notice subject)."""
    sender = msg.sender.address if msg.sender else ""
    sender_name = msg.sender.name if msg.sender else ""
    local = sender.partition("@")[0]
    precedence = (msg.header("Precedence") or "").strip().lower()

    if msg.bounce_detector:
        return _bounce(msg, msg.bounce_detector)
    if msg.content_type == "multipart/report" and (msg.report_type or "").lower() == "delivery-status":
        return _bounce(msg, "multipart/report delivery-status")
    if (is_robot_sender(sender, sender_name) or envelope_sender == "") and \
            BOUNCE_SUBJECT_RE.search(msg.subject) and not HUMAN_PREFIX_RE.match(msg.subject):
        return _bounce(msg, f"bounce subject from {sender or 'the empty return path'}")
    loop_header = (msg.header("X-Loop") or "").lower()
    if sender in own_addresses or (loop_header and hostname.lower() in loop_header):
        return Classification("loop", f"sent by maild itself ({sender or loop_header})")
    auto_reason = auto_reply_reason(msg.header, msg.subject, msg.text)
    if auto_reason:
        return Classification("auto_reply", auto_reason)
    if msg.header("List-Id") or msg.header("List-Unsubscribe") or precedence in ("bulk", "junk", "list"):
        return Classification("list", "List-Id" if msg.header("List-Id") else
                              (f"Precedence: {precedence}" if precedence else "List-Unsubscribe"))
    if msg.header("X-Auto-Response-Suppress"):
        return Classification("normal", no_auto_reason="X-Auto-Response-Suppress")
    if msg.header("X-MS-Exchange-Inbox-Rules-Loop"):
        return Classification("normal", no_auto_reason="X-MS-Exchange-Inbox-Rules-Loop (sent by an inbox rule)")
    if envelope_sender == "":
        return Classification("normal", no_auto_reason="empty return path")
    if ROBOT_LOCALPART_RE.match(local):
        return Classification("normal", no_auto_reason=f"robot sender {sender}")
    return Classification("normal")
