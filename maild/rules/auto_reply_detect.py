"""Is this mail an auto-reply (out of office, vacation, "we received your mail")? By header
first (RFC 3834 and the vendors' own), then by a localized out-of-office subject or first line.

The phrases are data: add a language as a line. Subject rules are anchored: the tag must open
the subject (an auto-responder puts it in front of the subject it answers) and end in a colon
or be bracketed (or be the whole subject), and the mail must answer one (In-Reply-To or
References, or the rest echoes a case tag "[#n]" or "Re:"). So "Re: your automatic reply did not
help", "Automatic reply did not work for me", "Out of office - how do I set it up?" and a new
"Absence: sick note for Monday" stay ordinary mail. No Re:/AW:/SV: prefix is allowed in front: a
person answering an out-of-office notice is a person.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Subject tags of out-of-office and other auto-replies, per language.
AUTO_REPLY_SUBJECTS = [
    # English (Outlook, Exchange, Gmail, Yahoo, Zimbra, Lotus Notes)
    "automatic reply", "auto-reply", "auto reply", "autoreply", "auto-response", "auto response",
    "automatic response", "out of office autoreply", "out of office", "out of the office", "out-of-office",
    "vacation reply", "vacation response", "away from the office", "away from my desk", "on vacation",
    # German
    "abwesenheitsnotiz", "automatische antwort", "automatische rückantwort", "urlaubsantwort",
    # French
    "réponse automatique", "absence du bureau", "absent du bureau", "message d'absence",
    # Dutch
    "automatisch antwoord", "afwezigheidsmelding",
    # Swedish / Norwegian / Danish
    "autosvar", "automatisk svar", "automatiskt svar",
    # Finnish
    "automaattinen vastaus", "poissaoloviesti",
    # Polish
    "odpowiedź automatyczna", "automatyczna odpowiedź", "poza biurem",
    # Portuguese / Spanish
    "resposta automática", "fora do escritório",
    "respuesta automática", "fuera de la oficina", "fuera de oficina",
    # Italian
    "risposta automatica", "fuori sede", "fuori ufficio",
    # Russian / Ukrainian
    "автоматический ответ", "автоответ", "нет на месте", "вне офиса", "автоматична відповідь",
    # Czech / Slovak
    "automatická odpověď", "mimo kancelář", "automatická odpoveď", "mimo kanceláriu",
    # Turkish
    "otomatik yanıt", "otomatik cevap", "ofis dışında",
    # Hungarian / Greek / Romanian
    "automatikus válasz", "házon kívül", "αυτόματη απάντηση", "răspuns automat",
    # Chinese / Japanese / Korean
    "自动回复", "自動回覆", "自动答复", "自動回復", "自動応答", "自動返信", "不在通知",
    "자동 회신", "자동 응답", "부재중",
]
# Single words that are an auto-reply's tag only as "Word: <the subject it answers>": a subject
# that merely is "Absence" or "Auto - repair" may be a person's.
AUTO_REPLY_SUBJECT_WORDS = [
    "abwesenheit", "absence", "afwezig", "frånvaro", "fravær", "fraværende", "ikke til stede",
    "poissa", "nieobecność", "ausente", "ausência", "assente",
]
# Not "Auto:" (RFC 5230's Sieve default; it comes with Auto-Submitted) nor "Urlaub:"/"Vacation:":
# "Auto: Kaufvertrag" is a car dealer's customer.
_TAGS = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in sorted(AUTO_REPLY_SUBJECTS, key=len, reverse=True))
_WORDS = "|".join(re.escape(t) for t in AUTO_REPLY_SUBJECT_WORDS)
# "Tag: <the subject answered>", "[Tag] <…>", "(Tag) <…>", or the tag alone. Never "Tag - …" nor
# "Tag word …": "Out of office - how do I set it up?" is a person's question.
SUBJECT_RE = re.compile(r"^\s*(?:\[\s*(?P<b1>" + _TAGS + "|" + _WORDS + r")\s*\]|\(\s*(?P<b2>" + _TAGS + "|" + _WORDS
                        + r")\s*\)|(?P<c>" + _TAGS + "|" + _WORDS + r")\s*[:：])\s*(?P<rest>.*)$"
                        + r"|^\s*(?P<alone>" + _TAGS + r")\s*$", re.I | re.S)
_ECHO_RE = re.compile(r"\[#\d+\]|^\s*(re|aw|sv|vs|antw|odp|ynt|r|rif|res|ha)\s*:", re.I)


# First lines that say the mail is automatic, per language. Anchored at the line start.
AUTO_REPLY_FIRST_LINES = [
    "this is an automatic reply", "this is an automated reply", "this is an auto-reply",
    "this is an automatic response", "this is an automated response", "this is an automatically generated",
    "this message was sent automatically", "this is an automatic message",
    "dies ist eine automatische antwort", "dies ist eine automatisch generierte", "diese nachricht wurde automatisch",
    "ceci est une réponse automatique", "ceci est un message automatique",
    "dit is een automatisch antwoord", "dit is een automatisch gegenereerd",
    "detta är ett automatiskt svar", "dette er et automatisk svar", "tämä on automaattinen vastaus",
    "to jest automatyczna odpowiedź", "esta é uma resposta automática", "esta es una respuesta automática",
    "questa è una risposta automatica", "это автоматический ответ", "это автоматическое сообщение",
    "toto je automatická odpověď", "bu otomatik bir yanıttır", "bu bir otomatik yanıttır",
    "这是一封自动回复", "此邮件为自动回复", "這是自動回覆", "これは自動返信", "このメールは自動",
    "자동 회신 메시지입니다",
]
FIRST_LINE_RE = re.compile(r"^\s*(?:" + "|".join(re.escape(p) for p in AUTO_REPLY_FIRST_LINES) + ")", re.I)
# A person's answer or forward (and so not an auto-reply, whatever it quotes).
REPLY_PREFIX_RE = re.compile(r"^\s*(re|aw|sv|vs|antw|odp|ynt|r|rif|res|ha|fw|fwd|wg|tr|doorst|rv|enc|vb|vl)\s*:",
                             re.I)


def subject_reason(subject: str, is_reply: bool) -> str:
    """ "out-of-office subject ("Abwesenheitsnotiz")" when the subject opens with an auto-reply tag
    and the mail answers one: `is_reply` (In-Reply-To or References), or the rest of the subject
    echoes a case tag "[#n]" or a reply prefix. A person's "Absence: sick note for Monday" or
    "Poissa: sairausloma" is a new mail and stays ordinary."""
    m = SUBJECT_RE.match(subject or "")
    if not m:
        return ""
    tag = next(t for t in (m.group("b1"), m.group("b2"), m.group("c"), m.group("alone")) if t)
    if not (is_reply or _ECHO_RE.search(m.group("rest") or "")):
        return ""
    return f'out-of-office subject ("{" ".join(tag.split())}")'


def first_line_reason(text: str) -> str:
    """The first three non-empty lines of the body saying it is an automatic reply."""
    lines = [line for line in (text or "").splitlines()[:20] if line.strip()][:3]
    for line in lines:
        m = FIRST_LINE_RE.match(line.lstrip("> "))
        if m:
            return f'auto-reply first line ("{m.group(0).strip()}")'
    return ""


def auto_reply_reason(header: Callable[[str], str | None], subject: str, text: str) -> str:
    """Why this mail is an auto-reply, or "". `header(name)`: the first value of a header."""
    auto_submitted = (header("Auto-Submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"Auto-Submitted: {auto_submitted.split(';')[0].strip()}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply", "X-Mail-Autoreply",
                 "X-Vacation", "X-Yandex-Autoreply"):  # present at all (some write "yes", others the address)
        value = header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name}: {value.strip()[:60]}"
    precedence = (header("Precedence") or "").strip().lower()
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    if (header("X-Precedence") or "").strip().lower() == "auto_reply":
        return "X-Precedence: auto_reply"
    if header("X-MS-Exchange-Inbox-Rules-Loop") is not None and header("In-Reply-To") is not None \
            and header("X-Auto-Response-Suppress") is not None:
        # Exchange's inbox-rule answer ("reply using a template"): the rule's loop marker, an
        # answer to a mail, and no automatic answer wanted. A rule's redirect carries the loop
        # marker too but keeps the sender's own mail: without these together it stays normal.
        return "Exchange inbox-rule reply (X-MS-Exchange-Inbox-Rules-Loop)"
    # a person answering; X-Auto-Response-Suppress alone decides nothing
    if REPLY_PREFIX_RE.match(subject or ""):
        return ""
    reason = subject_reason(subject, header("In-Reply-To") is not None or header("References") is not None)
    if reason:
        suppress = header("X-Auto-Response-Suppress")
        return f"{reason}, X-Auto-Response-Suppress: {suppress.strip()}" if suppress else reason
    reason = first_line_reason(text)
    if reason:
        return reason
    return ""
