"""Auto-replies of real clients and servers (tests/eml/auto-replies/): recognized by header
(RFC 3834 Auto-Submitted, X-Autoreply, Precedence: auto_reply, Exchange's inbox-rule marks) or by
a localized out-of-office subject or first line; mails people write about auto-replies stay
normal (issue 21 §3). Each fixture has a sidecar .json with its kind. Rates are printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maild.ingest.parse import parse_message
from maild.rules.auto_reply_detect import subject_reason
from maild.rules.loops import classify
from tests.support.rates import report_rate

CORPUS = Path(__file__).resolve().parent.parent / "eml" / "auto-replies"
FIXTURES = sorted(p.stem for p in CORPUS.glob("*.eml"))
OWN = {"support@example.com"}
HOSTNAME = "support.example.com"
EOLS = pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])


def load(name: str, eol: str = "\r\n") -> bytes:
    raw = (CORPUS / f"{name}.eml").read_bytes().replace(b"\r\n", b"\n")
    return raw.replace(b"\n", eol.encode("ascii"))


def expected(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))



def test_corpus_size() -> None:
    assert len([n for n in FIXTURES if expected(n)["kind"] == "auto_reply"]) >= 20
    assert len([n for n in FIXTURES if expected(n)["kind"] == "normal"]) >= 5


@EOLS
@pytest.mark.parametrize("name", FIXTURES)
def test_auto_reply(name: str, eol: str) -> None:
    exp = expected(name)
    msg = parse_message(load(name, eol))
    assert msg.sender is not None
    for envelope in (msg.sender.address, None):
        result = classify(msg, envelope, own_addresses=OWN, hostname=HOSTNAME)
        assert result.kind == exp["kind"], result.reason
        assert not result.bounced_addresses and not result.delayed_addresses
    if exp["kind"] == "auto_reply":
        assert result.reason and not result.automatic_reply_allowed


def test_corpus_rate(request: pytest.FixtureRequest) -> None:
    autos = [n for n in FIXTURES if expected(n)["kind"] == "auto_reply"]
    normals = [n for n in FIXTURES if expected(n)["kind"] == "normal"]
    kinds = {n: classify(parse_message(load(n)), None, OWN, HOSTNAME).kind for n in FIXTURES}
    hit = sum(kinds[n] == "auto_reply" for n in autos)
    false = sum(kinds[n] != "normal" for n in normals)
    line = (f"auto-reply corpus: {hit}/{len(autos)} recognized ({100 * hit / len(autos):.1f} %), "
            f"{false}/{len(normals)} ordinary mails misread")
    report_rate(request, "auto-reply-corpus-rate", line)
    print(line)
    assert hit == len(autos) and false == 0, line


@pytest.mark.parametrize(("subject", "is_reply", "auto"), [
    ("Automatic reply: [#7] Printer on fire", True, True),
    ("Automatic reply: [#7] Printer on fire", False, True),  # echoes our case tag
    ("Out of Office AutoReply: Invoice", True, True),
    ("[Auto-Reply] Your request", True, True),
    ("Out of Office", True, True),
    ("Réponse automatique : Votre demande", True, True),
    ("自动回复：您好", True, True),
    ("Afwezig: Re: uw vraag", False, True),
    ("Re: your automatic reply did not help", True, False),
    ("AW: Automatische Antwort: Rückfrage", True, False),
    ("Automatic reply did not arrive", True, False),
    ("Out of office - how do I set it up for the shared inbox?", False, False),
    ("Out of office: how do I set it up?", False, False),  # a new mail, no echo
    ("Absence: sick note for Monday and Tuesday", False, False),
    ("Poissa: sairausloma maanantaina", False, False),
    ("Afwezig", True, False),
    ("Auto: Kaufvertrag fehlt", True, False),
    ("On vacation - please hold my parcel", False, False),
])
def test_subject_rule_is_anchored(subject: str, is_reply: bool, auto: bool) -> None:
    """The tag opens the subject and ends in a colon or is bracketed (or is the whole subject),
    and the mail answers one (In-Reply-To/References, or it echoes "[#n]" or "Re:")."""
    assert bool(subject_reason(subject, is_reply)) is auto
