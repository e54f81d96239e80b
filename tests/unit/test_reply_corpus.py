"""The new text of every reply in tests/replies/, read the way the parse worker reads it.

Each fixture is a mail as its client puts it on the wire (`<name>.eml`, CRLF) with a sidecar
`<name>.expected.txt` holding the exact new text maild must find: what a post or a
notification shows. The mail goes through `parse_message`, so the MIME decoding and the
choice between the text and the HTML part are those of production.

Normalization, decided once for all fixtures: line endings are LF, trailing whitespace of
each line is dropped, and blank lines at either end are dropped. Nothing else: inner blank
lines, indentation and punctuation must match exactly.

What the new text is, where it is a choice:
- quoted history, its attribution or header block, the signature (after "-- ", "--", "__")
  and a mobile tagline ("Sent from my iPhone", in any language) are not part of it;
- a forwarded message is content: it stays whole, header block included;
- inline answers between ">" lines: the new text is the unquoted lines (the answers and
  any greeting), in order, without the quoted questions or their attribution.

The exact-match rate is written to the terminal summary of every run (`reply corpus:
n/m exact`), and the corpus test fails with the list of misses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maild.ingest.parse import parse_message
from maild.threading.reply import extract_reply
from tests.support.rates import report_rate

CORPUS = Path(__file__).resolve().parent.parent / "replies"
FIXTURES = sorted(p.stem for p in CORPUS.glob("*.eml"))


def normalize(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def new_text(name: str) -> str:
    msg = parse_message((CORPUS / f"{name}.eml").read_bytes())
    assert msg.reply is not None
    return normalize(msg.reply.text)


def expected(name: str) -> str:
    return normalize((CORPUS / f"{name}.expected.txt").read_text(encoding="utf-8"))



def test_corpus_size() -> None:
    assert len(FIXTURES) >= 120
    for name in FIXTURES:
        assert (CORPUS / f"{name}.expected.txt").is_file(), f"{name}.eml has no sidecar"


@pytest.mark.parametrize("name", FIXTURES)
def test_reply_text(name: str) -> None:
    assert new_text(name) == expected(name)


def test_corpus_exact_rate(request: pytest.FixtureRequest) -> None:
    misses = [name for name in FIXTURES if new_text(name) != expected(name)]
    ok = len(FIXTURES) - len(misses)
    line = f"reply corpus: {ok}/{len(FIXTURES)} exact ({100 * ok / len(FIXTURES):.1f} %)"
    report_rate(request, "reply-corpus-rate", line)
    print(line)
    assert not misses, f"{line}; misses: {', '.join(misses)}"


def test_one_megabyte_of_quote_lines_returns() -> None:
    body = "Thanks.\n\nOn Fri, Nov 20, 2026 at 10:00 AM Support <support@example.com> wrote:\n" + (
        "> " + "x" * 60 + " 10:00 support@example.com:\n"
    ) * 12_000
    assert len(body) > 1_000_000
    r = extract_reply(body)
    assert r.text == "Thanks."


def test_twenty_thousand_lines_return() -> None:
    lines = [f"line {n}: From: a@b.test Sent: 10:{n % 60:02d} To: c wrote" for n in range(20_000)]
    body = "\n".join(lines)
    r = extract_reply(body)
    assert r.text.startswith("line 0:")


def test_pathological_lines_return() -> None:
    """Long lines of the characters the patterns look for, with no end to match."""
    for unit in ("On ", "wrote ", "a@", "10:00 ", "- ", "_", "=", "> ", " ", "\u00a0", ":"):
        body = "Hi\n" + unit * (200_000 // len(unit)) + "\n" + unit * 2000 + "\nbye"
        r = extract_reply(body)
        assert r.text.startswith("Hi")
