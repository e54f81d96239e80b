"""Authentication-Results as an attacker writes them (SPEC §6): only the MX's own header, parsed
by RFC 8601, aligned with the From domain, counts; and DKIM only for the From domain."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from maild.domain.message import RawMail
from maild.ingest.parse import parse_message
from maild.rules.authresults import (
    SenderAuthentication,
    dkim_aligned,
    evaluate,
    header_values,
    raw_header_section,
    sender_authentication,
)
from maild.rules.senders import dkim_verifies_for
from tests.support.mails import mail

TRUSTED = ["mx.example.com"]
ALICE, DESK = "Alice <alice@example.com>", "support@example.com"


def verdict(*headers: str, from_domain: str = "example.com", trusted: list[str] = TRUSTED) -> SenderAuthentication:
    return evaluate(list(headers), from_domain, trusted)


# --- reading the headers ----------------------------------------------------------------------

def test_headers_are_read_top_to_bottom_as_in_the_mail() -> None:
    raw = mail(ALICE, DESK, "test", "Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n",
               lines=["Authentication-Results: mx.example.com; dkim=fail header.d=example.com",
                      "Authentication-Results: mx.other.test; none",
                      "Authentication-Results: mx.example.com;\r\n\tdkim=pass header.d=example.com"])
    msg = parse_message(raw)
    # what the stdlib parse keeps is in the mail's order too (the decoded form, folding unfolded)
    assert [v.split(";")[0] for v in msg.headers["authentication-results"]] == \
        ["mx.example.com", "mx.other.test", "mx.example.com"]
    values = header_values(raw_header_section(msg), "Authentication-Results")
    assert values == ["mx.example.com; dkim=fail header.d=example.com", "mx.other.test; none",
                      "mx.example.com;\r\n\tdkim=pass header.d=example.com"]  # a body line is no header
    auth = sender_authentication(msg, TRUSTED)
    assert not auth.authenticated and auth.authserv_id == "mx.example.com"


def test_a_large_mail_kept_on_disk_is_read_the_same(tmp_path: Path) -> None:
    raw = mail(ALICE, DESK, "test", "x" * 300_000,
               lines=["Authentication-Results: mx.example.com; dkim=pass header.d=example.com"])
    path = tmp_path / "raw.eml"
    path.write_bytes(raw)
    msg = dataclasses.replace(parse_message(raw), raw_mail=RawMail(path=str(path)))
    assert sender_authentication(msg, TRUSTED).passed == ("dkim",)


def test_an_encoded_word_in_a_property_is_not_decoded_into_a_result() -> None:
    # an envelope sender of the attacker's choosing, written unquoted by the MX: decoded as
    # RFC 2047 it would read "x; dkim=pass header.d=example.com (@evil.test)"
    header = ("Authentication-Results: mx.example.com; spf=fail smtp.mailfrom="
              "=?utf-8?q?x=3B_dkim=3Dpass_header.d=3Dexample.com_=28?=@evil.test=?utf-8?q?=29?=")
    msg = parse_message(mail(ALICE, DESK, "test", lines=[header]))
    assert "dkim=pass header.d=example.com" in msg.headers["authentication-results"][0]  # the decoded view
    auth = sender_authentication(msg, TRUSTED)
    assert not auth.authenticated and auth.failed == (("spf", "fail"),)


def test_a_line_that_is_no_header_ends_the_section_as_for_the_stdlib() -> None:
    raw = mail(ALICE, DESK, "test", lines=["X-Broken line without a colon",
                                          "Authentication-Results: mx.example.com; dkim=pass header.d=example.com"])
    msg = parse_message(raw)
    assert "authentication-results" not in msg.headers
    assert not sender_authentication(msg, TRUSTED).authenticated


# --- the attacks ------------------------------------------------------------------------------

def test_an_untrusted_authserv_id_is_not_believed() -> None:
    auth = verdict("mx.evil.test; dkim=pass header.d=example.com; dmarc=pass header.from=example.com")
    assert not auth.authenticated and auth.authserv_id is None
    assert auth.reason == "no trusted Authentication-Results (untrusted: mx.evil.test)"
    # nor one that only starts like the trusted one
    assert not verdict("mx.example.com.evil.test; dkim=pass header.d=example.com").authenticated
    assert not verdict("dkim=pass header.d=example.com").authenticated


def test_without_trusted_ids_nothing_is_believed() -> None:
    assert not verdict("mx.example.com; dkim=pass header.d=example.com", trusted=[]).authenticated


def test_trusted_but_unaligned_dkim_does_not_count() -> None:
    auth = verdict("mx.example.com; dkim=pass header.d=evil.test")
    assert not auth.authenticated
    assert auth.reason == "authentication-results from mx.example.com not aligned with example.com: header.d=evil.test"
    # a pass with no domain at all, or a top-level domain, or a sibling, or a child of From
    for d in ("", " header.d=com", " header.d=other.example.com", " header.d=evil-example.com"):
        assert not verdict(f"mx.example.com; dkim=pass{d}").authenticated, d
    assert not verdict("mx.example.com; dkim=pass header.d=sub.example.com").authenticated


def test_trusted_but_unaligned_dmarc_does_not_count() -> None:
    auth = verdict("mx.example.com; dmarc=pass header.from=evil.test")
    assert not auth.authenticated and "header.from=evil.test" in auth.reason
    assert not verdict("mx.example.com; dmarc=pass").authenticated  # no header.from: aligned with nothing
    # dmarc aligns exactly: a parent domain's pass says nothing of a subdomain's From
    assert not verdict("mx.example.com; dmarc=pass header.from=example.com",
                       from_domain="sub.example.com").authenticated


def test_a_result_in_a_comment_is_no_result() -> None:
    for value in ("mx.example.com; (dmarc=pass) dkim=fail header.d=example.com",
                  "mx.example.com (dmarc=pass header.from=example.com); none",
                  "mx.example.com; dkim=fail header.d=example.com (dkim=pass header.d=example.com)",
                  "mx.example.com; spf=fail (dmarc=pass header.from=example.com) smtp.mailfrom=example.com"):
        assert not verdict(value).authenticated, value


def test_a_result_in_a_property_value_is_no_result() -> None:
    auth = verdict("mx.example.com; spf=fail smtp.mailfrom=dmarc=pass@evil.test")
    assert not auth.authenticated and auth.failed == (("spf", "fail"),)
    assert not verdict('mx.example.com; spf=none smtp.mailfrom="dkim=pass header.d=example.com"@evil.test'
                       ).authenticated
    assert not verdict('mx.example.com; dkim=fail reason="dkim=pass header.d=example.com" header.d=example.com'
                       ).authenticated


def test_only_the_topmost_trusted_header_is_believed() -> None:
    mx = "mx.example.com; dkim=fail header.d=example.com; dmarc=none header.from=example.com"
    forged = "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com"
    auth = verdict(mx, forged)
    assert not auth.authenticated and auth.authserv_id == "mx.example.com"
    assert auth.reason == "authentication-results from mx.example.com: no dkim or dmarc pass (dkim=fail, dmarc=none)"
    assert not verdict("mx.example.com; none", forged).authenticated
    # an untrusted header above does not push the MX's own out of the way
    assert not verdict("mx.evil.test; dkim=pass header.d=example.com", mx, forged).authenticated


def test_a_sender_written_header_below_the_mx_one_adds_nothing() -> None:
    # the MX says dkim passed for example.com but DMARC failed; the sender's own header below
    # says otherwise, and does not clear the failure that stops the acknowledgement
    auth = verdict("mx.example.com; dkim=pass header.d=example.com; dmarc=fail header.from=example.com",
                   "mx.example.com; dmarc=pass header.from=example.com")
    assert auth.passed == ("dkim",) and auth.failed == (("dmarc", "fail"),)
    auth = verdict("mx.example.com; spf=pass smtp.mailfrom=example.com",
                   "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=example.com")
    assert not auth.authenticated and auth.failed == ()


def test_garbage_is_not_believed_and_says_why() -> None:
    auth = verdict("mx.example.com; dkim=pass header.d=example.com ;;; ===",
                   "mx.example.com; dkim=pass header.d=example.com")
    assert not auth.authenticated and auth.authserv_id == "mx.example.com"
    assert auth.reason.startswith("authentication-results from mx.example.com cannot be parsed (")
    assert auth.reason.endswith("): not believed")
    assert "\n" not in auth.reason and "\r" not in auth.reason
    # unparseable with an id nobody trusts: skipped, the trusted one below still counts
    assert verdict("garbage ;;; = =", "", "\x00\x01", "mx.example.com; dkim=pass header.d=example.com").authenticated
    assert not verdict("", ";", "(unclosed comment mx.example.com; dkim=pass").authenticated


def test_results_of_a_failing_header_feed_the_acknowledgement_refusal() -> None:
    assert verdict("mx.example.com; spf=permerror smtp.mailfrom=x@evil.test; dmarc=fail header.from=example.com"
                   ).failed == (("dmarc", "fail"), ("spf", "permerror"))
    assert verdict("mx.evil.test; dmarc=fail header.from=example.com").failed == ()


# --- what still counts ------------------------------------------------------------------------

def test_aligned_results_of_the_mx_count() -> None:
    auth = verdict("mx.example.com; dkim=pass header.d=example.com")
    assert auth.passed == ("dkim",)
    assert auth.reason == "authentication-results: dkim=pass header.d=example.com by mx.example.com"
    auth = verdict("mx.example.com; dmarc=pass header.from=example.com")
    assert auth.passed == ("dmarc",)
    auth = verdict("mx.example.com; dkim=pass header.d=example.com; dkim=pass header.d=evil.test;"
                   " dmarc=pass header.from=example.com")
    assert auth.passed == ("dkim", "dmarc")
    # a parent domain signs for its subdomain's From
    assert verdict("mx.example.com; dkim=pass header.d=example.com", from_domain="sub.example.com").authenticated
    # one unaligned pass next to an aligned one does not spoil it
    assert verdict("mx.example.com; dkim=pass header.d=evil.test; dkim=pass header.d=example.com").authenticated


def test_authserv_id_with_a_version_and_case_differences() -> None:
    assert verdict("mx.example.com 1; dkim=pass header.d=example.com").authenticated
    assert verdict("MX.Example.COM; DKIM=Pass Header.D=EXAMPLE.com.").authenticated
    assert verdict("mx.example.com; dmarc=PASS header.from=Example.COM", from_domain="EXAMPLE.com").authenticated
    assert verdict("mx.example.com; dkim=pass header.d=example.com", trusted=["MX.EXAMPLE.COM"]).authenticated
    assert verdict("(received by) mx.example.com;\r\n dkim=pass (2048-bit key)\r\n\theader.d=example.com"
                   " header.i=@example.com header.s=mail2026 header.b=abcdefgh").authenticated
    assert not verdict("mx.example.com 2; dkim=pass header.d=example.com").authenticated  # an unknown version


def test_alignment_rule() -> None:
    assert dkim_aligned("example.com", "example.com") and dkim_aligned("example.com", "a.b.example.com")
    assert dkim_aligned("Example.COM.", "sub.example.com")
    assert not dkim_aligned("com", "example.com") and not dkim_aligned("", "example.com")
    assert not dkim_aligned("ample.com", "example.com") and not dkim_aligned("sub.example.com", "example.com")
    assert dkim_aligned("xn--bcher-kva.example", "büCher.example")


# --- DKIM checked by maild itself -------------------------------------------------------------

@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, str]]:
    out = {}
    for domain in ("example.com", "evil.test"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        out[domain] = (private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")
    return out


def sign(raw: bytes, domain: str, keys: dict[str, tuple[bytes, str]], **kw: object) -> bytes:
    return dkim.sign(raw, b"s1", domain.encode(), keys[domain][0],
                     include_headers=[b"from", b"to", b"subject", b"message-id", b"date"], **kw) + raw


def test_dkim_counts_only_for_the_from_domain_and_the_whole_body(keys: dict[str, tuple[bytes, str]]) -> None:
    records = {f"s1._domainkey.{d}.": k[1].encode() for d, k in keys.items()}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode())

    raw = mail(ALICE, DESK, "test", "#note\n/priority low\n")
    ok = dkim_verifies_for(sign(raw, "example.com", keys), "example.com", lookup)
    assert ok.verified and ok.reason == "dkim: signature d=example.com verified"
    assert dkim_verifies_for(sign(raw, "example.com", keys), "sub.example.com", lookup).verified

    other = dkim_verifies_for(sign(raw, "evil.test", keys), "example.com", lookup)
    assert not other.verified and other.reason == "DKIM signature d=evil.test is not the From domain"

    altered = sign(raw, "example.com", keys).replace(b"/priority low", b"/priority urgent")
    bad = dkim_verifies_for(altered, "example.com", lookup)
    assert not bad.verified and bad.reason.startswith("DKIM signature d=example.com did not verify")

    partial = sign(raw, "example.com", keys, length=True) + b"/forward mallory@evil.test notes\r\n"
    assert not dkim_verifies_for(partial, "example.com", lookup).verified

    assert not dkim_verifies_for(raw, "example.com", lookup).verified
    # an evil.test signature above a good one does not hide it
    both = sign(sign(raw, "example.com", keys), "evil.test", keys)
    assert dkim_verifies_for(both, "example.com", lookup).verified
