"""Reply extraction: the new text of a mail, apart from quoted history and signature.

Posts and notifications must show what the sender wrote now, not the whole thread again
(SPEC §4, `reply_text` of `maild inspect`), and agent commands are read from the top of
that new text. Mail clients mark history in a few recognisable ways: an attribution line
("On … wrote:" and its translations), Outlook's "-----Original Message-----" or
From/Sent/To header block, ">" quoting, and in HTML a <blockquote> or a client-specific
wrapper. Signatures are the "-- " delimiter or a mobile client's one-line tag.

Guarantees: a pure function of its input; nothing of the body read is lost (each of its
lines ends up in `text`, `quoted` or `signature`, apart from blank lines); a message
without any quote marker keeps all its text; a forwarded message is content, never a
quote. When the cut leaves no new text, `text` is "" and the caller decides what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from itertools import islice

# Attribution lines that open with a fixed word; matched against one line or up to three
# lines joined, because Gmail and Thunderbird wrap long attributions in plain text.
_ATTRIBUTION_RES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^On\s.+\swrote\s*:$",  # Gmail, Thunderbird, Apple Mail, Outlook for Mac
        r"^Am\s.+\sschrieb\s.*:$",  # German
        r"^Le\s.+\sa\s+écrit\s*:$",  # French
        r"^El\s.+\sescribió\s*:$",  # Spanish
        r"^Dne\s.+\snapsal(?:a|\(a\))?\s*:$",  # Czech Thunderbird
        r"^Op\s.+\sschreef\s.*:$",  # Dutch
        r"^Il\s.+\sha\s+scritto\s*:$",  # Italian
        r"^Em\s.+\sescreveu\s*:$",  # Portuguese
        r"^(?:W\s+dniu|Dnia)\s.+\s(?:pisze|napisał(?:a|\(a\))?)\s*:$",  # Polish
    )
]
# Attributions known only by their verb ("20.11.2026 10:00, Jane пишет:"); trusted only
# when ">" quoting follows, since the verb alone also ends ordinary sentences.
_VERB_ATTRIBUTION_RE = re.compile(
    r"\s(?:пишет|написала?|написал\(а\)|napsala?|napsal\(a\))\s*:$", re.IGNORECASE
)
# A line that names a date, time or address, as every attribution does.
_ATTRIBUTION_EVIDENCE_RE = re.compile(r"\d|@")
_TIME_OR_ADDRESS_RE = re.compile(r"\d{1,2}:\d{2}|@")

_ORIGINAL_MESSAGE_RE = re.compile(
    r"^\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Původní zpráva|Исходное сообщение"
    r"|Message d'origine|Mensaje original|Oorspronkelijk bericht|Messaggio originale"
    r"|Mensagem original|Wiadomość oryginalna)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_UNDERSCORE_RE = re.compile(r"^\s*_{10,}\s*$")
# Outlook's header block, localized: From, then Sent/Date, then To/Cc/Subject.
_FROM_RE = re.compile(r"^\s*\*?(?:From|Von|От|Od|De|Van|Da)\s*:\*?\s*\S", re.IGNORECASE)
_SENT_RE = re.compile(
    r"^\s*\*?(?:Sent|Date|Gesendet|Datum|Отправлено|Дата|Odesláno|Envoyé|Enviado|Fecha|Verzonden"
    r"|Inviato|Data)\s*:",
    re.IGNORECASE,
)
_TO_RE = re.compile(
    r"^\s*\*?(?:To|Cc|Subject|An|Betreff|Кому|Копия|Тема|Komu|Kopie|Předmět|À|Objet|Para|Asunto"
    r"|Aan|Onderwerp|A|Oggetto)\s*:",
    re.IGNORECASE,
)
_HEADER_BLOCK_SPAN = 8  # lines after "From:" in which Sent and To/Subject must appear

_FORWARD_RE = re.compile(
    r"^\s*(?:-{3,}\s*(?:Forwarded message|Weitergeleitete Nachricht|Пересылаемое сообщение"
    r"|Přeposlaná zpráva|Message transféré|Mensaje reenviado|Doorgestuurd bericht|Messaggio inoltrato)"
    r"\s*-{3,}|(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht|Début du message réexpédié"
    r"|Inicio del mensaje reenviado|Начало переадресованного сообщения|Začátek přeposílané zprávy)\s*:)\s*$",
    re.IGNORECASE,
)
_QUOTE_LINE_RE = re.compile(r"^\s{0,3}>")

_MOBILE_SIGNATURE_RE = re.compile(
    r"^(?:Sent from my \S.{0,60}|(?:Sent from|Get) Outlook for (?:iOS|Android)\b.*"
    r"|Sent from Mail(?:<[^>]*>)? for Windows\b.*|Sent from Yahoo Mail\b.*|Gesendet von meinem \S.{0,60}"
    r"|Von meinem \S.{0,40} gesendet|Отправлено с \S.{0,60}|Odesláno z \S.{0,60}"
    r"|Envoyé de mon \S.{0,60}|Enviado desde mi \S.{0,60})$",
    re.IGNORECASE,
)
_SHORT_SIGNATURE_LINES = 6  # "--" without the space counts only before a few short lines
_SHORT_SIGNATURE_WIDTH = 72

_TEXT, _QUOTE, _SIGNATURE = "text", "quote", "signature"


@dataclass(frozen=True)
class ExtractedReply:
    text: str  # the new text, without blank lines at either end
    quoted: str  # what was cut as quoted history ("" if none)
    signature: str  # what was cut as signature ("" if none)


def extract_reply(text: str, html: str | None = None) -> ExtractedReply:
    """Split a mail body into new text, quoted history and signature.

    The plain-text part is preferred; the HTML part is used only when there is no text.
    """
    body = _normalize(text or "")
    html_quoted = ""
    if not body.strip() and html:
        body, html_quoted = _split_html(_normalize(html))
    lines = body.split("\n")
    kinds = _classify(lines)
    quoted = _join([line for line, kind in zip(lines, kinds, strict=True) if kind == _QUOTE])
    return ExtractedReply(
        text=_join_text(lines, kinds),
        quoted="\n".join(part for part in (quoted, html_quoted) if part),
        signature=_join([line for line, kind in zip(lines, kinds, strict=True) if kind == _SIGNATURE]),
    )


def _normalize(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _classify(lines: list[str]) -> list[str]:
    """Label each line text, quote or signature. A forwarded message is left as text."""
    kinds = [_TEXT] * len(lines)
    end = next((i for i, line in enumerate(lines) if _FORWARD_RE.match(line)), len(lines))
    hard = _first_history_block(lines, end)
    kinds[hard:end] = [_QUOTE] * (end - hard)
    attribution = _first_attribution(lines, hard)
    if attribution is not None:
        start, after = attribution
        kinds[start:after] = [_QUOTE] * (after - start)
        if not _is_interleaved(lines[after:hard]):
            kinds[after:hard] = [_QUOTE] * (hard - after)
            hard = start
    _mark_quote_lines(lines, kinds, hard)
    _mark_signature(lines, kinds, end)
    return kinds


def _first_history_block(lines: list[str], end: int) -> int:
    """Index of Outlook's "Original Message" separator or From/Sent/To block, else `end`."""
    for i in range(end):
        line = lines[i]
        if _ORIGINAL_MESSAGE_RE.match(line) or _is_header_block(lines, i, end):
            return i
        if _UNDERSCORE_RE.match(line):
            nxt = _next_nonblank(lines, i + 1, min(end, i + 3))
            if nxt is not None and _is_header_block(lines, nxt, end):
                return i
    return end


def _is_header_block(lines: list[str], i: int, end: int) -> bool:
    if not _FROM_RE.match(lines[i]):
        return False
    following = lines[i + 1 : min(end, i + 1 + _HEADER_BLOCK_SPAN)]
    return any(_SENT_RE.match(x) for x in following) and any(_TO_RE.match(x) for x in following)


def _first_attribution(lines: list[str], end: int) -> tuple[int, int] | None:
    """The first "On … wrote:" attribution before `end`, as (first line, line after it)."""
    for i in range(end):
        if _is_quote(lines[i]) or not lines[i].strip():
            continue
        for span in (1, 2, 3):
            if i + span > end or not lines[i + span - 1].strip() or _is_quote(lines[i + span - 1]):
                break
            if not lines[i + span - 1].rstrip().endswith(":"):
                continue
            joined = " ".join(x.strip() for x in lines[i : i + span])
            if len(joined) > 300 or not _ATTRIBUTION_EVIDENCE_RE.search(joined):
                continue
            if any(r.match(joined) for r in _ATTRIBUTION_RES):
                return i, i + span
            if _VERB_ATTRIBUTION_RE.search(joined):
                nxt = _next_nonblank(lines, i + span, end)
                if nxt is not None and _is_quote(lines[nxt]):
                    return i, i + span
    return None


def _is_interleaved(after: list[str]) -> bool:
    """True when new text follows ">" lines below an attribution (inline or bottom posting)."""
    first_quote = next((i for i, line in enumerate(after) if _is_quote(line)), None)
    if first_quote is None:
        return False
    return any(line.strip() and not _is_quote(line) for line in after[first_quote:])


def _mark_quote_lines(lines: list[str], kinds: list[str], end: int) -> None:
    """Mark ">" lines before `end`: a trailing block whole (with an attribution line that
    precedes it, such as Gmail's Russian "пт, 20 нояб. 2026 г. в 10:00, Jane <…>:"), and
    interleaved ones line by line."""
    last = _prev_nonblank(lines, end - 1, kinds)
    if last is not None and _is_quote(lines[last]):
        start = last
        for j in range(last - 1, -1, -1):
            if kinds[j] != _TEXT or not (lines[j].strip() == "" or _is_quote(lines[j])):
                break
            if _is_quote(lines[j]):
                start = j
        kinds[start:end] = [_QUOTE] * (end - start)
        header = _prev_nonblank(lines, start - 1, kinds)
        if header is not None and _looks_like_attribution(lines[header]):
            kinds[header] = _QUOTE
            above = header - 1
            if above >= 0 and kinds[above] == _TEXT and lines[above].strip():
                wrapped = lines[header].lstrip().startswith("<") or lines[above].rstrip().endswith("<")
                if wrapped:  # Gmail wraps a long attribution before or inside the address
                    kinds[above] = _QUOTE
    for i in range(end):
        if kinds[i] == _TEXT and _is_quote(lines[i]):
            kinds[i] = _QUOTE


def _looks_like_attribution(line: str) -> bool:
    s = line.strip()
    return len(s) <= 200 and s.endswith(":") and bool(_TIME_OR_ADDRESS_RE.search(s))


def _mark_signature(lines: list[str], kinds: list[str], end: int) -> None:
    """Mark the signature among the text lines before `end` (a forward's own stays)."""
    text_idx = [i for i in range(end) if kinds[i] == _TEXT]
    start: int | None = None
    last = next((i for i in reversed(text_idx) if lines[i].strip()), None)
    if last is not None and _MOBILE_SIGNATURE_RE.match(lines[last].strip()):
        start = last
    for pos, i in enumerate(text_idx):
        rest = (lines[text_idx[k]] for k in range(pos + 1, len(text_idx)))
        if lines[i] == "-- " or (lines[i].rstrip() == "--" and _short_block(rest)):
            start = i if start is None else min(start, i)
            break
    if start is None:
        return
    for i in text_idx:
        if i >= start:
            kinds[i] = _SIGNATURE


def _short_block(lines: Iterator[str]) -> bool:
    filled = list(islice((x for x in lines if x.strip()), _SHORT_SIGNATURE_LINES + 1))
    return 0 < len(filled) <= _SHORT_SIGNATURE_LINES and all(len(x) <= _SHORT_SIGNATURE_WIDTH for x in filled)


# The pattern's own match, not a function around it: it runs for each line several times.
# Callers use it as a truth value only.
_is_quote: Callable[[str], re.Match[str] | None] = _QUOTE_LINE_RE.match


def _next_nonblank(lines: list[str], i: int, end: int) -> int | None:
    return next((j for j in range(i, end) if lines[j].strip()), None)


def _prev_nonblank(lines: list[str], i: int, kinds: list[str]) -> int | None:
    return next((j for j in range(i, -1, -1) if kinds[j] == _TEXT and lines[j].strip()), None)


def _join(lines: list[str]) -> str:
    """Lines joined, without blank lines at either edge."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    return "\n".join(lines).rstrip()


def _join_text(lines: list[str], kinds: list[str]) -> str:
    """The text lines; where removed lines leave two blank lines together, keep one."""
    out: list[str] = []
    removed = False
    for line, kind in zip(lines, kinds, strict=True):
        if kind != _TEXT:
            removed = True
            continue
        if not line.strip() and removed and out and not out[-1].strip():
            continue
        out.append(line)
        if line.strip():
            removed = False
    return _join(out)


# --- HTML -----------------------------------------------------------------------------

_QUOTE_CLASSES = frozenset({"gmail_quote", "gmail_extra", "moz-cite-prefix", "yahoo_quoted"})
# Outlook's reply header and Outlook.com's anchor: they and everything after are history.
_HISTORY_IDS = frozenset({"divrplyfwdmsg", "appendonsend", "stopspelling"})
_IGNORED_TAGS = frozenset({"script", "style", "head", "title"})
_BLOCK_TAGS = frozenset(
    {"div", "p", "li", "tr", "table", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"pre", "blockquote", "hr", "section", "article", "header", "footer", "address", "center"}
)
_VOID_TAGS = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base", "source"})


class _TextSink:
    """Text as a browser would lay it out: collapsed spaces, a line per block."""

    def __init__(self) -> None:
        self._chunks: list[str] = []

    def _ends_with(self, suffix: str) -> bool:
        return "".join(self._chunks[-2:]).endswith(suffix)

    def text(self, data: str, pre: bool) -> None:
        if not pre:
            data = re.sub(r"[ \t\n\f]+", " ", data)  # not \xa0: &nbsp; is content
            if not self._chunks or self._ends_with("\n") or self._ends_with(" "):
                data = data.lstrip(" ")
        if data:
            self._chunks.append(data)

    def line_break(self) -> None:
        self._chunks.append("\n")

    def end_line(self) -> None:
        if self._chunks and not self._ends_with("\n"):
            self._chunks.append("\n")

    def blank_line(self) -> None:
        self.end_line()
        if self._chunks and not self._ends_with("\n\n"):
            self._chunks.append("\n")

    def value(self) -> str:
        raw = "".join(self._chunks).replace("\xa0", " ")
        # Trailing spaces are layout, except in the "-- " signature delimiter.
        return "\n".join(line if line == "-- " else line.rstrip() for line in raw.split("\n"))


class _HtmlReply(HTMLParser):
    """Routes the HTML's text to `kept` or, inside quote elements and after Outlook's
    reply header, to `quoted`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.kept = _TextSink()
        self.quoted = _TextSink()
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._history = False
        self._ignored = 0
        self._pre = 0

    def _sink(self) -> _TextSink:
        return self.quoted if self._history or self._skip_tag else self.kept

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in _IGNORED_TAGS:
            self._ignored += 1
            return
        if self._skip_tag == tag:
            self._skip_depth += 1
        elif not (self._history or self._skip_tag):
            if values.get("id", "").lower() in _HISTORY_IDS:
                self.kept.end_line()
                self._history = True
            elif tag == "blockquote" or _QUOTE_CLASSES & set(values.get("class", "").split()):
                self.kept.end_line()
                if tag not in _VOID_TAGS:
                    self._skip_tag, self._skip_depth = tag, 1
        sink = self._sink()
        if tag == "br":
            sink.line_break()
        elif tag == "p" and "msonormal" not in values.get("class", "").lower():
            sink.blank_line()
        elif tag in _BLOCK_TAGS:
            sink.end_line()
            if tag == "li":
                sink.text("- ", pre=True)
        elif tag in ("td", "th"):
            sink.text(" ", pre=False)  # cells of a row side by side
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _IGNORED_TAGS:
            self._ignored = max(0, self._ignored - 1)
            return
        sink = self._sink()
        if tag in _BLOCK_TAGS:
            sink.end_line()
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if self._skip_tag == tag:
            self._skip_depth -= 1
            if self._skip_depth == 0:
                self._skip_tag = None

    def handle_data(self, data: str) -> None:
        if not self._ignored:
            self._sink().text(data, pre=self._pre > 0)


def _split_html(html: str) -> tuple[str, str]:
    """(kept text, quoted text) of an HTML body."""
    parser = _HtmlReply()
    parser.feed(html)
    parser.close()
    return parser.kept.value(), _join(parser.quoted.value().split("\n"))
