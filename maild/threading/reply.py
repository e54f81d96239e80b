"""Reply extraction: the new text of a mail, apart from quoted history and signature.

Posts and notifications must show what the sender wrote now, not the whole thread again
(SPEC §4, `reply_text` of `maild inspect`), and agent commands are read from the top of
that new text. History is recognised by its shape, in any language, before any phrase:

- an attribution: a line (or two or three wrapped lines) that names a date/time or an
  address and ends in ':' ("On … wrote:", "30.09.2017, 18.30, "Name" <addr>:", "Среда, 17
  ноября 2021, 15:32 +03:00 от Имя <x@mail.ru>:"), followed by ">" quoting, or by the rest
  of the mail when it names both a date/time and an address or carries an attribution verb
  and a time or an address;
- a header block: 3–6 consecutive `Label: value` lines (label of 1–3 words, any language)
  whose labels cover three roles of From/Date/To/Subject, or that name two addresses and a
  date, or any such block after a separator line (`_____`, `-----Original Message-----`,
  `-------- Ursprüngliche Nachricht --------`, `=====`);
- ">" quoting;
- in HTML, the quote containers of the known clients, cut before the text is laid out.

A signature ("-- ", "--" or "__" before a few short lines) and a mobile tagline ("Sent from
my <device>", "Von meinem iPhone gesendet", … on a line of its own) end the new text.
The words of the phrases (attribution verbs, header labels, taglines, separators) are data
in threading.quote_phrases.

Guarantees: a pure function of its input, linear in its length (patterns are anchored or
bounded; long lines are measured before any pattern runs on them); nothing of the body read
is lost (each of its lines ends up in `text`, `quoted` or `signature`, apart from blank
lines); a message without any quote marker keeps all its text; a forwarded message is
content, never a quote. Inline answers between ">" lines are the new text: the unquoted
lines, in order. When the cut leaves no new text, `text` is "" and the caller decides.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from itertools import islice

from maild.domain.message import ExtractedReply
from maild.threading import quote_phrases as P


def _alternatives(words: tuple[str, ...], escape: bool = False) -> str:
    return "|".join(re.escape(w) if escape else w for w in sorted(words, key=len, reverse=True))


_MAX_HEADER_CHARS = 300  # an attribution longer than this (joined) is prose
_SENTENCE_ENDS = (".", "!", "?", ":", "。", "！", "？", "：")
_VERB_RE = re.compile(rf"(?:^|[^\w(])(?:{_alternatives(P.ATTRIBUTION_VERBS)})(?![^\W\d_])", re.IGNORECASE)
# "On … wrote" without its colon (some clients and gateways drop it): only this shape.
_ON_WROTE_RE = re.compile(r"^On\s.+\swrote$", re.IGNORECASE)
_TIME_RE = re.compile(r"(?<!\d)\d{1,2}[:.]\d{2}(?!\d)")
_DATE_RE = re.compile(
    r"(?<!\d)(?:\d{1,4}[./-]\s?\d{1,2}[./-]\s?\d{1,4}|(?:19|20)\d{2}|\d{1,4}\s*[年년])(?!\d)"
)
_ADDRESS_RE = re.compile(r"\w@\w")
_DIGIT_OR_AT_RE = re.compile(r"\d|@")

_DASH_SEPARATOR_RE = re.compile(r"^\s*-{2,}\s*(?P<name>[^-\s][^-]{0,60}?)\s*-{2,}\s*$")
_ORIGINAL_NAMES = frozenset(P.ORIGINAL_MESSAGE)
_RULE_RE = re.compile(r"^\s*(?:_{10,}|={10,}|-{10,})\s*$")  # a line of underscores, equals, dashes
_FORWARD_RE = re.compile(
    rf"^\s*(?:-{{3,}}\s*(?:{_alternatives(P.FORWARD_SEPARATORS, escape=True)})\s*-{{3,}}"
    rf"|(?:{_alternatives(P.FORWARD_LEADS, escape=True)})\s*:)\s*$",
    re.IGNORECASE,
)
# "Label: value", label of 1–3 words of letters; "De :" (French spacing), "*From:*" (bold in
# plain text), "From:\tx" (Lotus) and the full-width colon all count.
_LABEL_LINE_RE = re.compile(
    r"^\s{0,8}\*?(?P<label>[^\W\d_][^\W\d_ '’.-]{0,19}(?:[ '’.-][^\W\d_]{1,20}){0,2})\*?\s?[:：]\*?"
    r"(?:\s|$)(?P<value>.*)$"
)
_ROLES = {
    **{w: "to" for w in P.TO_LABELS},
    **{w: "subject" for w in P.SUBJECT_LABELS},
    **{w: "date" for w in P.DATE_LABELS},
    **{w: "from" for w in P.FROM_LABELS},
}
_HEADER_BLOCK_MAX = 8  # label lines read for one block
_QUOTE_LINE_RE = re.compile(r"^\s{0,3}>")
_TAGLINE_RE = re.compile(
    rf"^(?:{_alternatives(P.TAGLINES)})\.?\s*(?:<[^<>\s]{{1,200}}>)?\s*$", re.IGNORECASE
)
_TAGLINE_MAX = 120
_SIGNATURE_MARKS = frozenset({"--", "__"})  # without the space: only before a few short lines
_SHORT_SIGNATURE_LINES = 6
_SHORT_SIGNATURE_WIDTH = 72
# A quote container cut out of an HTML body leaves this line, so that an attribution kept
# above it is seen as one (Yandex, Android); it is never part of any output.
_HTML_QUOTE_MARK = ">\ue000"

_TEXT, _QUOTE, _SIGNATURE = "text", "quote", "signature"


_FLAT_BREAKS = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h[1-6]|/blockquote)\b[^>]*>", re.I)
_FLAT_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_FLAT_TAGS = re.compile(r"<[^>]+>")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML-only mail, for posts and searching; the HTML is kept too.
    (Here, not in ingest.parse, so that extract_reply can tell flattened HTML without
    importing the adapter.)"""
    text = _FLAT_DROP.sub("", markup)
    text = _FLAT_BREAKS.sub("\n", text)
    text = _FLAT_TAGS.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_reply(text: str, html: str | None = None, *, flattened: bool = False) -> ExtractedReply:
    """Split a mail body into new text, quoted history and signature.

    The plain-text part is preferred; the HTML part is used when there is no text, or when
    the text is only the HTML laid flat, because the HTML still shows where the quote begins.
    `flattened`: `text` may be such (an InboundMessage's `text` of an HTML-only mail); only
    then is the HTML laid flat once more to compare. The parse passes the text parts alone,
    so the mail's path pays no second pass over its HTML.
    """
    body = _normalize(text or "")
    html_quoted = ""
    if html and (not body.strip() or (flattened and _flattened_from(body, html))):
        body, html_quoted = _split_html(_normalize(html))
    lines = body.split("\n")
    kinds = _classify(lines)
    quoted = _join([x for x, k in zip(lines, kinds, strict=True) if k == _QUOTE and x != _HTML_QUOTE_MARK])
    return ExtractedReply(
        text=_join_text(lines, kinds),
        quoted="\n".join(part for part in (quoted, html_quoted) if part),
        signature=_join([line for line, kind in zip(lines, kinds, strict=True) if kind == _SIGNATURE]),
    )


def _flattened_from(body: str, html: str) -> bool:
    """True when `body` is html_to_text of `html`: the mail had no text part."""
    if len(body) > len(html):
        return False
    return body.strip() == html_to_text(_normalize(html))


def _normalize(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _classify(lines: list[str]) -> list[str]:
    """Label each line text, quote or signature. A forwarded message is left as text."""
    kinds = [_TEXT] * len(lines)
    end = next((i for i, line in enumerate(lines) if _FORWARD_RE.match(line)), len(lines))
    hard, tagline = _first_history_block(lines, end)
    kinds[hard:end] = [_QUOTE] * (end - hard)
    if tagline:
        kinds[hard] = _SIGNATURE
        above = _prev_nonblank(lines, hard - 1, kinds)
        if above is not None and above == hard - 1 and lines[above].strip() in _SIGNATURE_MARKS:
            kinds[above] = _SIGNATURE  # "--" over a webmail's tagline
    attribution = _first_attribution(lines, hard)
    if attribution is not None:
        start, after = attribution
        kinds[start:after] = [_QUOTE] * (after - start)
        if not _is_interleaved(lines[after:hard]):
            kinds[after:hard] = [_QUOTE] * (hard - after)
            hard = start
    _mark_quote_lines(lines, kinds, hard)
    _mark_signature(lines, kinds, min(hard, end))
    return kinds


def _first_history_block(lines: list[str], end: int) -> tuple[int, bool]:
    """(index, is a tagline) of the first separator, header block or mobile tagline that
    starts unquoted history, else (`end`, False)."""
    for i in range(end):
        line = lines[i]
        if _is_quote(line) or not line.strip():
            continue
        if _is_tagline(lines, i, end):
            return i, True
        if _is_separator(line):
            nxt = _next_nonblank(lines, i + 1, min(end, i + 4))
            if nxt is not None and _is_header_block(lines, nxt, end, after_separator=True):
                return i, False
            if _is_original_message(line):
                return i, False
        elif _is_header_block(lines, i, end, after_separator=False):
            return i, False
    return end, False


def _is_tagline(lines: list[str], i: int, end: int) -> bool:
    """A mobile tagline on a line of its own with history below it (the last line's tagline
    is the signature's business)."""
    line = lines[i].strip()
    if len(line) > _TAGLINE_MAX or not _TAGLINE_RE.match(line):
        return False
    prev = lines[i - 1].strip() if i > 0 else ""
    if prev and prev not in _SIGNATURE_MARKS:
        return False
    nxt = _next_nonblank(lines, i + 1, end)
    if nxt is None:
        return False
    below = lines[nxt].strip()[:_MAX_HEADER_CHARS]
    return bool(
        _is_quote(lines[nxt])
        or _is_separator(lines[nxt])
        or _LABEL_LINE_RE.match(below)
        or _VERB_RE.search(below)
        or (below.endswith((":", "：")) and _DIGIT_OR_AT_RE.search(below))
    )


def _is_separator(line: str) -> bool:
    if len(line) > 120:
        return False
    return bool(_RULE_RE.match(line) or _DASH_SEPARATOR_RE.match(line))


def _is_original_message(line: str) -> bool:
    m = _DASH_SEPARATOR_RE.match(line) if len(line) <= 120 else None
    return m is not None and m.group("name").strip().lower() in _ORIGINAL_NAMES


def _is_header_block(lines: list[str], i: int, end: int, after_separator: bool) -> bool:
    """Whether lines[i:] open a block of 3–6 `Label: value` lines of a quoted mail."""
    labels: list[str] = []
    values: list[str] = []
    for j in range(i, min(end, i + _HEADER_BLOCK_MAX)):
        line = lines[j]
        m = _LABEL_LINE_RE.match(line) if len(line) <= 1000 else None
        if m is None:
            break
        labels.append(" ".join(m.group("label").lower().split()))
        values.append(m.group("value"))
    if len(labels) < 3:
        return False
    if after_separator:
        return any(_DIGIT_OR_AT_RE.search(v) for v in values)
    roles = [_ROLES.get(label) for label in labels]
    if roles[0] in ("from", "date") and len({r for r in roles if r}) >= 3:
        return True
    # Unknown labels: a quoted mail names its sender and recipient and when it was sent.
    addresses = sum(1 for v in values if _ADDRESS_RE.search(v))
    dated = any(_TIME_RE.search(v) or _DATE_RE.search(v) for v in values)
    prev_blank = i == 0 or not lines[i - 1].strip()
    return len(labels) <= 6 and prev_blank and addresses >= 2 and bool(_ADDRESS_RE.search(values[0])) and dated


def _first_attribution(lines: list[str], end: int) -> tuple[int, int] | None:
    """The first attribution before `end`, as (first line, line after it)."""
    for i in range(end):
        if _is_quote(lines[i]) or not lines[i].strip():
            continue
        size = 0
        for span in (1, 2, 3):
            last = i + span - 1
            if last >= end or not lines[last].strip() or _is_quote(lines[last]):
                break
            if span > 1 and lines[last - 1].rstrip().endswith(_SENTENCE_ENDS):
                break  # a wrapped attribution does not run on from a finished sentence
            size += len(lines[last])
            if size > _MAX_HEADER_CHARS:
                break
            if _is_attribution(lines, i, span, end):
                return i, i + span
    return None


def _is_attribution(lines: list[str], i: int, span: int, end: int) -> bool:
    joined = " ".join(x.strip() for x in lines[i : i + span])
    colon = joined.endswith((":", "："))
    if not colon and not _ON_WROTE_RE.match(joined):
        return False
    if not _DIGIT_OR_AT_RE.search(joined):
        return False
    address = bool(_ADDRESS_RE.search(joined))
    time = bool(_TIME_RE.search(joined))
    dated = time or bool(_DATE_RE.search(joined))
    nxt = _next_nonblank(lines, i + span, end)
    quoted_next = nxt is not None and bool(_is_quote(lines[nxt]))
    if _VERB_RE.search(joined):
        return quoted_next or time or address
    if not colon:
        return False
    prev = lines[i - 1] if i > 0 else ""
    if prev.strip() and not _is_quote(prev):
        return False  # a generic attribution stands apart from the text above it
    if quoted_next:
        return dated or address
    # Unquoted history below: the shape of webmail and date-first headers, which end in the
    # sender's address ("… <x@y>:", "… (x@y):", mutt's "… [date]:").
    return dated and address and joined[:-1].rstrip().endswith((">", ")", "]"))


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
    return (
        len(s) <= 200
        and s.endswith((":", "："))
        and bool(_TIME_RE.search(s) or _ADDRESS_RE.search(s))
    )


def _mark_signature(lines: list[str], kinds: list[str], end: int) -> None:
    """Mark the signature among the text lines before `end` (a forward's own stays)."""
    text_idx = [i for i in range(end) if kinds[i] == _TEXT]
    start: int | None = None
    last = next((i for i in reversed(text_idx) if lines[i].strip()), None)
    if last is not None and len(lines[last]) <= _TAGLINE_MAX and _TAGLINE_RE.match(lines[last].strip()):
        start = last
    for pos, i in enumerate(text_idx):
        rest = (lines[text_idx[k]] for k in range(pos + 1, len(text_idx)))
        if lines[i] == "-- " or (lines[i].rstrip() in _SIGNATURE_MARKS and _short_block(rest)):
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
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    return "\n".join(lines[start:]).rstrip()


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
# Outlook's reply header, Outlook.com's anchor, Outlook for Mac's container, Zimbra's rule:
# they and everything after are history.
_HISTORY_IDS = frozenset(
    {"divrplyfwdmsg", "appendonsend", "stopspelling", "mail-editor-reference-message-container", "zwchr"}
)
_HISTORY_CLASSES = frozenset({"outlookmessageheader"})  # Outlook 2003
# Outlook 2007+ draws its reply header as a div with only a top border (#E1E1E1, #B5C4DF).
_OUTLOOK_SEPARATOR_RE = re.compile(r"border:\s*none;?\s*border-top:\s*solid", re.IGNORECASE)
_SPACES_RE = re.compile(r"[ \t\n\f]+")
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
            data = _SPACES_RE.sub(" ", data)  # not \xa0: &nbsp; is content
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

    def _mark_cut(self) -> None:
        """Leave a quote mark where history was cut, on a line of its own."""
        self.kept.end_line()
        self.kept.text(_HTML_QUOTE_MARK, pre=True)
        self.kept.line_break()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in _IGNORED_TAGS:
            self._ignored += 1
            return
        if self._skip_tag == tag:
            self._skip_depth += 1
        elif not (self._history or self._skip_tag):
            classes = set(values.get("class", "").lower().split())
            if (
                values.get("id", "").lower() in _HISTORY_IDS
                or _HISTORY_CLASSES & classes
                or (tag == "div" and _OUTLOOK_SEPARATOR_RE.search(values.get("style", "")))
            ):
                self._mark_cut()
                self._history = True
            elif tag == "blockquote" or _QUOTE_CLASSES & classes:
                self._mark_cut()
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
