"""Bounces of real MTAs and clients (tests/eml/bounces/): recognized, and the failed addresses
read as permanent or temporary (issue 21 §2).

Each fixture is written here in the format its MTA really sends (Postfix, Exim, qmail, Sendmail,
Exchange/Office 365 in several languages, Gmail, Yahoo, GroupWise, Lotus Notes, Netscape, small
MTAs' "unknown user" texts…), with a sidecar .json: kind, permanent and temporary addresses.
A few are mails people send about bounces, which stay normal. Rates are printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maild.domain.errors import ParseError
from maild.ingest.parse import parse_message
from maild.rules.loops import classify
from tests.support.rates import report_rate

EML = Path(__file__).resolve().parent.parent / "eml"
CORPUS = EML / "bounces"
FIXTURES = sorted(p.stem for p in CORPUS.glob("*.eml"))
OWN = {"support@example.com"}
HOSTNAME = "support.example.com"
EOLS = pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])
# Top-level fixtures of tests/eml/ that are not ordinary mail (tests/unit/test_parse_corpus.py)
NOT_ORDINARY = {"bounce-dsn-postfix.eml": "bounce", "mailing-list-post.eml": "list",
                "outlook-auto-reply-out-of-office.eml": "auto_reply"}


def load(name: str, eol: str = "\r\n") -> bytes:
    raw = (CORPUS / f"{name}.eml").read_bytes().replace(b"\r\n", b"\n")
    return raw.replace(b"\n", eol.encode("ascii"))


def expected(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))


def envelope_for(exp: dict, sender: str) -> str:
    """A bounce comes with the empty return path; a person's mail with its own address."""
    return "" if exp["kind"] == "bounce" else sender



def test_corpus_size() -> None:
    bounces = [n for n in FIXTURES if expected(n)["kind"] == "bounce"]
    assert len(bounces) >= 60
    temporary = [n for n in bounces if expected(n)["temporary"]]
    assert len(temporary) >= 8, "delays and 4.x.x failures are part of the corpus"


@EOLS
@pytest.mark.parametrize("name", FIXTURES)
def test_bounce(name: str, eol: str) -> None:
    exp = expected(name)
    msg = parse_message(load(name, eol))
    sender = msg.sender.address if msg.sender else ""
    for envelope in (envelope_for(exp, sender), None):  # over IMAP the envelope is unknown
        result = classify(msg, envelope, own_addresses=OWN, hostname=HOSTNAME)
        assert result.kind == exp["kind"], result.reason
        assert result.bounced_addresses == exp["permanent"], result.reason
        assert result.delayed_addresses == exp["temporary"], result.reason
    if exp["kind"] == "bounce":
        assert result.reason, "the reason names the rule or detector"
        assert not result.automatic_reply_allowed
        if "returned_message_id" in exp:  # what bounces.py believes a bounce by
            ids = msg.in_reply_to + msg.references + msg.returned_message_ids
            assert exp["returned_message_id"] in ids
    else:
        assert not msg.bounce_detector


def test_corpus_rates(request: pytest.FixtureRequest) -> None:
    bounces = [n for n in FIXTURES if expected(n)["kind"] == "bounce"]
    recognized = found = 0
    misses: list[str] = []
    for name in bounces:
        exp = expected(name)
        msg = parse_message(load(name))
        result = classify(msg, "", own_addresses=OWN, hostname=HOSTNAME)
        recognized += result.kind == "bounce"
        ok = (result.bounced_addresses, result.delayed_addresses) == (exp["permanent"], exp["temporary"])
        found += ok
        if result.kind != "bounce" or not ok:
            misses.append(name)
    n = len(bounces)
    line = (f"bounce corpus: {recognized}/{n} recognized ({100 * recognized / n:.1f} %), "
            f"addresses found {found}/{n} ({100 * found / n:.1f} %)")
    report_rate(request, "bounce-corpus-rate", line)
    print(line)
    assert not misses, f"{line}; misses: {', '.join(misses)}"


def test_detectors_are_named() -> None:
    """The reason says which detector read the bounce: flufl.bounce's and maild's own both serve."""
    reasons = {classify(parse_message(load(n)), "", OWN, HOSTNAME).reason for n in FIXTURES
               if expected(n)["kind"] == "bounce"}
    assert any(r.startswith("flufl.bounce: DSN") for r in reasons)
    assert any(r.startswith("flufl.bounce: ") and "DSN" not in r for r in reasons)
    assert any(r.startswith("maild: ") for r in reasons)


@EOLS
def test_ordinary_fixtures_stay_normal(eol: str) -> None:
    """Every top-level tests/eml/ fixture that is ordinary mail is read as no bounce at all."""
    names = sorted(p.name for p in EML.glob("*.eml"))
    assert names
    for name in names:
        raw = (EML / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", eol.encode("ascii"))
        try:
            msg = parse_message(raw)
        except ParseError:
            continue  # the malformed fixture
        sender = msg.sender.address if msg.sender else None
        result = classify(msg, sender, own_addresses=OWN, hostname=HOSTNAME)
        assert result.kind == NOT_ORDINARY.get(name, "normal"), (name, result.reason)
        if name not in NOT_ORDINARY:
            assert not msg.bounce_detector and not msg.bounce_permanent and not msg.bounce_temporary, name
