"""Reads a bounce: which addresses failed for good, which are only delayed, and who said so.

GNU Mailman's `flufl.bounce` does the reading (RFC 3464 DSNs and the non-standard texts of
Exim, Postfix, qmail, Sendmail, GroupWise, Yahoo, Netscape, "unknown user" texts…); this module
adds what it lacks: modern Exchange/Office 365 and Gmail notices (often HTML only, and
localized), Lotus Notes, the DSN's status class (a 4.x.x status is a temporary failure even
under Action: failed), and warnings that flufl would read as permanent ("transient non-fatal
errors", "has not yet been delivered").

It runs in the parse worker while the MIME tree is at hand, and only for mails that could be
bounces (`could_be_bounce`: a handful of cheap header tests), so ordinary mail pays nothing.
The answer is plain data (`BounceScan`) that crosses processes cheaply.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.iterators import body_line_iterator
from email.message import Message
from email.utils import getaddresses, parseaddr

from maild.headers import is_mail_address, normalize_address

try:  # the detectors by name, so that the reason says which one read the bounce
    from flufl.bounce import all_failures
    from flufl.bounce._scan import _DETECTORS as _FLUFL_DETECTORS
except ImportError:  # a later flufl.bounce that moved its list: one detector, "flufl.bounce"
    from flufl.bounce import all_failures

    _FLUFL_DETECTORS = []
try:
    from flufl.bounce._detectors.simplematch import PATTERNS as _SIMPLE_PATTERNS
except ImportError:
    _SIMPLE_PATTERNS = []

# flufl.bounce logs every detector it runs at INFO; maild reports its own decision.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

# --- the cheap pre-check -------------------------------------------------------------------

# Local parts and display names that only mail systems use.
ROBOT_SENDER_RE = re.compile(
    r"^(mailer-?daemon|postmaster|mail-?daemon|mail\.?delivery(\.?system|\.?subsystem)?|mdaemon|"
    r"microsoftexchange[0-9a-f]*|nobody-bounces|bounce-?notification|returned-?mail)$", re.I)
ROBOT_NAME_RE = re.compile(
    r"(mail delivery (sub)?system|mail delivery service|mailer-daemon|postmaster|"
    r"microsoft outlook|mail administrator|e-?mail delivery|zustellsystem|"
    r"système de distribution|служба доставки)", re.I)

# Subjects of delivery notices in several languages. Data: add a language as a line.
BOUNCE_SUBJECTS = [
    r"undeliver(ed|able)", r"undelivered mail returned to sender", r"returned mail", r"mail delivery failed",
    r"delivery status notification", r"delivery (failure|failed|notification|problem|report)",
    r"failure notice", r"mail system error", r"message (not delivered|delivery failure|undeliverable)",
    r"could not send message", r"warning: (could not send message|message .* delayed)",
    r"nondeliverable mail", r"delayed mail", r"delivery delayed", r"returned to sender", r"mail failure",
    r"nicht zustellbar", r"unzustellbar", r"zustellung (fehlgeschlagen|verzögert)",
    r"benachrichtung zum übermittlungsstatus", r"benachrichtigung zum übermittlungsstatus",
    r"unzustellbare nachricht", r"non remis", r"non distribuable", r"échec de (la )?(remise|distribution)",
    r"notification d'état de (la )?remise", r"rapport de non-remise", r"onbestelbaar",
    r"niet afgeleverd", r"kan niet worden bezorgd", r"non recapitabile", r"mancata consegna",
    r"no se puede entregar", r"no entregado", r"error de entrega", r"não (foi possível )?entreg(ue|ar)",
    r"falha na entrega", r"nie można dostarczyć", r"niedostarczalna", r"nedoručiteln", r"nedoručen",
    r"kan inte levereras", r"olevererbar", r"ikke levert", r"kunne ikke leveres", r"ei voitu toimittaa",
    r"недоставлен", r"не доставлено", r"не удалось доставить", r"ошибка доставки", r"teslim edilemedi",
    r"退信", r"未送达", r"无法投递", r"配信不能", r"配信できません", r"전송 실패", r"배달되지 않음",
]
BOUNCE_SUBJECT_RE = re.compile("|".join(BOUNCE_SUBJECTS), re.I)
# A person replying to or forwarding a notice is not a notice (a customer forwarding a bounce
# asks a question); MTAs never put these prefixes in front of their own subjects.
HUMAN_PREFIX_RE = re.compile(r"^\s*(re|aw|sv|vs|antw|odp|ynt|r|rif|res|fw|fwd|wg|tr|doorst|rv|enc|i|vb|vl)\s*:", re.I)

# Parts only a delivery report carries (a person's forward as attachment is message/rfc822: no).
REPORT_PART_TYPES = ("message/delivery-status", "message/global-delivery-status", "text/rfc822-headers",
                     "message/global-headers")


def could_be_bounce(msg: Message, subject: str, sender: str, sender_name: str = "") -> bool:
    """Whether to run the detectors at all: header tests and the top level parts only. A bounce
    subject alone is not enough when a person sent the mail: a customer pasting a bounce into
    a question to the help desk is asking a question."""
    if HUMAN_PREFIX_RE.match(subject):
        return False
    if msg.get_content_type() == "multipart/report" or msg.get("X-Failed-Recipients"):
        return True
    if is_robot_sender(sender, sender_name):
        return True
    if not sender and BOUNCE_SUBJECT_RE.search(subject):
        return True
    if msg.is_multipart():
        payload = msg.get_payload()
        return any(isinstance(p, Message) and p.get_content_type() in REPORT_PART_TYPES
                   for p in (payload if isinstance(payload, list) else []))
    return False


def is_robot_sender(sender: str, sender_name: str = "") -> bool:
    return bool(ROBOT_SENDER_RE.match(sender.partition("@")[0]) or (sender_name and ROBOT_NAME_RE.search(sender_name)))


# --- the scan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BounceScan:
    """What the detectors read: plain data for InboundMessage."""

    permanent: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    detector: str = ""  # e.g. "flufl.bounce: DSN", "maild: Office 365 NDR"; "" when none read one
    diagnostics: dict[str, str] = field(default_factory=dict)  # address -> status / diagnostic text


def _clean(addresses: object) -> list[str]:
    out: list[str] = []
    for a in addresses:  # type: ignore[attr-defined]
        text = a.decode("ascii", "replace") if isinstance(a, bytes) else str(a)
        text = normalize_address(text.strip().strip("<>").strip().rstrip(".,;:"))
        if text.lower().startswith("mailto:"):
            text = text[7:]
        if is_mail_address(text) and text not in out:
            out.append(text)
    return out


def _parts(msg: Message) -> Iterator[Message]:
    """Every part, but not into a returned message (message/rfc822): that is the bounced mail's own text."""
    yield msg
    if msg.get_content_type() in ("message/rfc822", "message/global"):
        return
    payload = msg.get_payload()
    if msg.is_multipart() and isinstance(payload, list):
        for part in payload:
            if isinstance(part, Message):
                yield from _parts(part)


def _text_of(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.I | re.S)
_BLOCK_RE = re.compile(r"<\s*(br|/?p|/?div|/?tr|/?td|/?li|/?h[1-6]|/?table)\b[^>]*>", re.I)


def _notice_text(msg: Message) -> str:
    """The human-readable notice (text/plain, else text/html as text), without returned mail."""
    plain: list[str] = []
    markup: list[str] = []
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_text_of(part))
        elif ctype == "text/html":
            text = _BLOCK_RE.sub("\n", _text_of(part))
            text = re.sub(r'<a\s[^>]*href="mailto:([^"]+)"[^>]*>', r" \1 ", text, flags=re.I)
            markup.append(html.unescape(_TAG_RE.sub("", text)).replace("\xa0", " "))
    return "\n".join(plain + markup)


# Status codes: "5.1.1", "550 5.1.1", "452-4.2.2", "4.4.7".
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_RE = re.compile(r"(?<![\d.])([45])\d\d(?=[\s-])")


def _dsn_blocks(msg: Message) -> Iterator[Message]:
    for part in _parts(msg):
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            payload = part.get_payload()
            for block in payload if isinstance(payload, list) else []:
                if isinstance(block, Message):
                    yield block


def _dsn_recipient(block: Message) -> str:
    for header in ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient"):
        value = str(block.get(header) or "")
        if value:
            address = value.split(";", 1)[-1].strip().strip("<>")
            if "@" in address:
                return address
    return ""


def _read_dsn(msg: Message) -> tuple[list[str], list[str], dict[str, str]]:
    """Each DSN block by its Action and Status: delayed, or failed with a 4.x.x status, is
    temporary; failed with a 5.x.x status is permanent. flufl.bounce reads Action only."""
    permanent: list[str] = []
    temporary: list[str] = []
    notes: dict[str, str] = {}
    for block in _dsn_blocks(msg):
        action = str(block.get("Action") or "").strip().lower()
        status = str(block.get("Status") or "").strip()
        address = _clean([_dsn_recipient(block)])
        if not address:
            continue
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split()).partition(";")[2].strip()
        notes[address[0]] = diagnostic or status
        if action.startswith("delayed") or (action.startswith(("fail", "error")) and status.startswith("4")):
            temporary += [a for a in address if a not in temporary]
        elif action.startswith(("fail", "error")):
            permanent += [a for a in address if a not in permanent]
    return permanent, [a for a in temporary if a not in permanent], notes


# Non-DSN notices flufl.bounce does not read. Each: (name, start, address) — after a line that
# matches `start`, addresses on the following lines (until a blank line after one was found),
# or one named in the start line itself. Data: add a format as a tuple.
_ADDR = r"[^\s@<>()\[\]\"':;,]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
NOTICE_FORMATS: list[tuple[str, re.Pattern[str]]] = [(name, re.compile(pattern, re.I)) for name, pattern in [
    # The MTAs flufl.bounce reads, when its address pattern rejects the address (it takes no
    # hyphen in a domain: "x@slow-mx.test")
    ("Exim", r"the following address\(es\) failed"),
    ("Exim", r"address(es)? to which the message has not yet been delivered"),
    ("Sendmail", r"the following addresses had (permanent fatal|transient non-fatal) errors"),
    ("qmail", r"(wasn't|was not) able to deliver your message to the following addresses"),
    ("Postfix", r"(could not be delivered to one or more recipients|could not be delivered for more than)"),
    ("Postfix", r"(this is the mail system at host|dies ist das mailsystem auf dem rechner|"
                r"ceci est le système de messagerie de l'hôte)"),
    ("Dovecot", r"your message to .* was automatically rejected"),
    # Office 365 / Exchange 2013+ (the HTML notice; often localized)
    ("Office 365 NDR", r"delivery has failed to these recipients or groups"),
    ("Office 365 NDR", r"your message to .* couldn't be delivered"),
    ("Office 365 NDR", r"die zustellung an (diese|folgende) empfänger oder gruppen ist fehlgeschlagen"),
    ("Office 365 NDR", r"ihre nachricht an .* konnte nicht zugestellt werden"),
    ("Office 365 NDR", r"la remise (à|a) ces destinataires ou groupes a échoué"),
    ("Office 365 NDR", r"votre message (à|pour) .* n'a pas pu être remis"),
    ("Office 365 NDR", r"de bezorging aan deze ontvangers of groepen is mislukt"),
    ("Office 365 NDR", r"la entrega a estos destinatarios o grupos ha fallado"),
    ("Office 365 NDR", r"il recapito ai seguenti destinatari o gruppi non è riuscito"),
    ("Exchange NDR", r"your message did not reach some or all of the intended recipients"),
    ("Exchange NDR", r"the following recipient\(s\) cannot be reached"),
    ("Exchange NDR", r"die nachricht hat einige oder alle empfänger nicht erreicht"),
    ("Exchange NDR", r"votre message n'a pas atteint certains ou la totalité de ses destinataires"),
    # Gmail
    ("Gmail", r"your message wasn't delivered to .* because"),
    ("Gmail", r"ihre nachricht wurde nicht an .* zugestellt"),
    ("Gmail", r"the response from the remote server was"),
    ("Gmail", r"delivery to the following recipient failed permanently"),
    # Lotus Notes / Domino
    ("Lotus Notes", r"was not delivered to:"),
    ("Lotus Notes", r"wurde nicht zugestellt an:"),
    # GroupWise (non-MIME form) and SMTP32-style texts
    ("GroupWise", r"the message that you sent was undeliverable to the following"),
    # Yahoo (its newer wording)
    ("Yahoo", r"sorry, we were unable to deliver your message to the following address"),
    # "unknown user" texts of many small MTAs
    ("unknown user", r"(user unknown|unknown user|no such (user|mailbox|recipient)|mailbox (unavailable|not found)|"
                     r"recipient address rejected|does not exist|address rejected|invalid recipient)"),
    ("unknown user", r"(benutzer unbekannt|unbekannter empfänger|utilisateur inconnu|destinataire inconnu|"
                     r"пользователь не найден|нет такого пользователя|usuario desconocido|utente sconosciuto)"),
    # full mailboxes
    ("mailbox full", r"(mailbox (is )?full|over quota|quota exceeded|exceeded (its|the) (storage )?quota|"
                     r"postfach (ist )?voll|boîte aux lettres (est )?pleine|ящик переполнен)"),
]]
_ADDR_RE = re.compile(_ADDR)
# Lines that mean the returned mail or the technical details start: stop looking there.
_STOP_RE = re.compile(r"^\s*(-{3,}|={3,}|original message|diagnostic information for administrators|"
                      r"received:|from:|reporting-mta:|message headers follow|"
                      r"informations de diagnostic|diagnoseinformationen)", re.I)
# Warnings: the mail is still queued.
WARNING_RE = re.compile(
    r"(transient non-fatal error|has not yet been delivered|not been delivered yet|will (continue to )?"
    r"(try|retry|be retried)|delivery attempts will continue|still trying|message (is )?delayed|"
    r"delivery (has been )?delayed|this is a warning|is only a warning|warning: message .* delayed|"
    r"zustellung verzögert|wird weiterhin versucht|remise différée|distribution retardée|"
    r"задержк[аи] доставки|delivery incomplete)", re.I)


def _own_notice(text: str, exclude: set[str]) -> tuple[str, list[str]]:
    """Addresses named by a notice flufl.bounce does not read; the first format that finds one wins."""
    lines = text.splitlines()
    for name, start in NOTICE_FORMATS:
        found: list[str] = []
        for i, line in enumerate(lines):
            if not start.search(line):
                continue
            found += [a for a in _clean(_ADDR_RE.findall(line)) if a not in exclude]
            seen = False
            for after in lines[i + 1: i + 25]:
                if _STOP_RE.match(after):
                    break
                names = [a for a in _clean(_ADDR_RE.findall(after)) if a not in exclude]
                if names:
                    found += names
                    seen = True
                elif seen and not after.strip():
                    break
            if found:
                break
        if found:
            return name, list(dict.fromkeys(found))
    return "", []


def _simple_patterns(msg: Message, exclude: set[str]) -> tuple[str, list[str]]:
    """flufl.bounce's SimpleMatch patterns (its "unknown user" texts of many MTAs) with maild's
    address check: flufl's own takes no hyphen in a domain and drops "lost@hotpop-like.test"."""
    if not _SIMPLE_PATTERNS:
        return "", []
    lines = list(body_line_iterator(msg))
    for start, end, address in _SIMPLE_PATTERNS:
        found: list[str] = []
        seen = False
        for line in lines:
            if not seen and start.search(line):
                seen = True
            if seen:
                m = address.search(line)
                if m:
                    found += [a for a in _clean([m.group("addr")]) if a not in exclude]
                elif end.search(line):
                    break
        if found:
            return "SimpleMatch", list(dict.fromkeys(found))
    return "", []


def _flufl(msg: Message) -> tuple[str, list[str], list[str]]:
    """flufl.bounce's detectors in its order; the first that finds anything wins."""
    detectors = [(d.__name__, d) for d in _FLUFL_DETECTORS] or [("", None)]
    for name, detector in detectors:
        try:
            temporary, permanent = detector().process(msg) if detector else all_failures(msg)
        except Exception:  # a detector tripping over odd MIME is no reason to lose the mail
            continue
        if temporary or permanent:
            return f"flufl.bounce: {name}" if name else "flufl.bounce", _clean(permanent), _clean(temporary)
    return "", [], []


def _status_near(text: str, address: str) -> str:
    """The enhanced status or SMTP code nearest after an address in a notice, e.g. "4.2.2"."""
    at = text.lower().find(address)
    if at < 0:
        return ""
    window = text[at: at + 400]
    m = _STATUS_RE.search(window)
    if m:
        return m.group(0)
    m = _SMTP_RE.search(window)
    return m.group(1) if m else ""


def scan(msg: Message, own: set[str] | None = None) -> BounceScan:
    """Reads a possible bounce. `own`: addresses that are not the failed recipient (the
    bounce's sender and recipients), so that a notice naming them does not count."""
    exclude = {normalize_address(a) for a in (own or set())}
    for name in ("From", "To", "Return-Path", "Sender"):
        exclude |= {normalize_address(a) for _, a in getaddresses([str(v) for v in msg.get_all(name, [])]) if a}
    dsn_permanent, dsn_temporary, notes = _read_dsn(msg)
    detector, permanent, temporary = _flufl(msg)
    text = ""
    if detector.endswith(": DSN") or dsn_permanent or dsn_temporary:
        # the DSN part is the report: its Status decides permanent or temporary
        permanent, temporary = dsn_permanent, dsn_temporary
        detector = detector or "maild: DSN"
        if detector == "flufl.bounce: DSN" and any(
                str(b.get("Action") or "").lower().startswith(("fail", "error"))
                and str(b.get("Status") or "").strip().startswith("4") for b in _dsn_blocks(msg)):
            detector = "flufl.bounce: DSN (4.x.x status: temporary)"
    elif detector:
        text = _notice_text(msg)
        # flufl.bounce answers sets: keep the notice's order, so that the answer is stable
        low = text.lower()
        order = lambda a: (low.find(a) if a in low else len(low), a)  # noqa: E731
        permanent, temporary = sorted(permanent, key=order), sorted(temporary, key=order)
        if detector.endswith("SimpleWarning"):
            pass
        elif WARNING_RE.search(text):  # flufl reads a warning as a failure: it is still queued
            temporary, permanent = list(dict.fromkeys(permanent + temporary)), []
            detector += " (a warning: temporary)"
    else:
        text = _notice_text(msg)
        detector, found = _simple_patterns(msg, exclude)
        if not found:
            detector, found = _own_notice(text, exclude)
        if found:
            detector = f"maild: {detector}"
            if WARNING_RE.search(text):
                temporary = found
            else:
                for address in found:
                    (temporary if _status_near(text, address).startswith("4") else permanent).append(address)
    permanent = [a for a in permanent if a not in exclude]
    temporary = [a for a in temporary if a not in exclude and a not in permanent]
    if not permanent and not temporary:
        return BounceScan()
    if text:
        for address in permanent + temporary:
            notes.setdefault(address, _status_near(text, address))
    return BounceScan(permanent, temporary, detector, {a: n for a, n in notes.items() if n})


def scan_safely(msg: Message, own: set[str] | None = None) -> BounceScan:
    """`scan` that never raises: a bounce nobody can read is a mail like any other."""
    with contextlib.suppress(Exception):
        return scan(msg, own)
    return BounceScan()


def sender_of(msg: Message) -> tuple[str, str]:
    name, address = parseaddr(str(msg.get("From") or ""))
    return normalize_address(address), name
