"""The wire check the test sink runs on every mail maild sends (issue 20 §3): it passes mails
fit to travel, plain and SMTPUTF8, and names each kind of fault, so it cannot pass everything."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maild.notify.compose import compose_mail
from tests.support.sink import Sink, bad_mails
from tests.support.wire_check import maildir_problems, wire_problems

HEAD = [b"From: Example Support <support@example.com>", b"To: Jane Doe <jane@acme.test>",
        b"Subject: [#12] Your printer", b"Date: Fri, 20 Nov 2026 10:00:00 +0000",
        b"Message-ID: <a1b2c3@support.example.com>", b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: quoted-printable"]
BODY = [b"Hello Jane,", b"", b"we are on it. Zden=C4=9Bk", b"-- ", b"Example Support"]

# As a mail client sends it under SMTPUTF8 (RFC 6532): raw UTF-8 names, subject and address.
UTF8_MAIL = "\r\n".join([
    "From: Podpora <podpora@příklad.example>", "To: Jiří Novák <jiří@příklad.example>",
    "Subject: Příliš žluťoučký kůň úpěl ďábelské ódy", "Date: Fri, 20 Nov 2026 10:00:00 +0100",
    "Message-ID: <d4e5@support.example.com>", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable", "", "Dobr=C3=BD den", ""]).encode("utf-8")


def build(head: list[bytes] = HEAD, body: list[bytes] = BODY) -> bytes:
    return b"\r\n".join([*head, b"", *body]) + b"\r\n"


def replaced(name: bytes, line: bytes | None) -> list[bytes]:
    """HEAD with the header `name` replaced by `line` (None: left out)."""
    key = name + b":"
    return [(line if h.startswith(key) else h) for h in HEAD if line is not None or not h.startswith(key)]


def one(problems: list[str], *words: str) -> str:
    """The single problem, which must name all `words`."""
    assert len(problems) >= 1, "the check passed a faulty mail"
    hits = [p for p in problems if all(w.lower() in p.lower() for w in words)]
    assert hits, f"no problem names {words}: {problems}"
    return hits[0]


def test_a_mail_fit_to_travel_has_no_problems() -> None:
    assert wire_problems(build()) == []


def test_folded_headers_and_a_line_of_998_octets_are_fine() -> None:
    head = [*replaced(b"Subject", b"Subject: =?utf-8?b?UMWZw61sacWhIMW+bHXFpW91xI1rw70=?=\r\n"
                                  b" =?utf-8?b?IGvFr8WIIMO6cMSbbA==?="),
            b"References: <a@support.example.com>\r\n\t<b@support.example.com>"]
    assert wire_problems(build(head, [b"x" * 998])) == []


def test_a_valid_smtputf8_mail_passes_only_with_smtputf8_in_the_envelope() -> None:
    assert wire_problems(UTF8_MAIL, ["SMTPUTF8", "BODY=8BITMIME"]) == []
    assert wire_problems(UTF8_MAIL, ["SMTPUTF8"]) == []
    without = wire_problems(UTF8_MAIL)
    one(without, "header line 1", "8-bit", "SMTPUTF8")
    one(without, "header line 3", "8-bit", "SMTPUTF8")


def test_a_bare_lf_in_a_folded_subject_is_named() -> None:
    head = replaced(b"Subject", b"Subject: =?utf-8?b?UMWZw61sacWhIMW+bHXFpW91xI1rw70=?=\n"
                                b" =?utf-8?b?IGvFr8WIIMO6cMSbbA==?=")
    one(wire_problems(build(head)), "bare LF", "Subject header")


def test_a_bare_lf_in_the_body_is_named() -> None:
    one(wire_problems(build(body=[b"Hello\nJane"])), "bare LF", "body")


def test_a_mail_written_with_lf_only_is_all_bare_lf() -> None:
    problems = wire_problems(build().replace(b"\r\n", b"\n"))
    one(problems, "last line does not end in CRLF")
    one(problems, "no empty line ends the header section")


def test_a_bare_cr_is_named() -> None:
    head = replaced(b"To", b"To: Jane Doe\r <jane@acme.test>")
    one(wire_problems(build(head)), "bare CR", "To header")
    one(wire_problems(build(body=[b"50 %\r off"])), "bare CR", "body")


def test_a_nul_is_named() -> None:
    one(wire_problems(build(body=[b"a\x00b"])), "NUL")


def test_a_line_of_999_octets_is_too_long() -> None:
    one(wire_problems(build(body=[b"y" * 999])), "longer than 998", "999 octets", "body")
    long_subject = replaced(b"Subject", b"Subject: " + b"z" * 990)
    one(wire_problems(build(long_subject)), "longer than 998", "Subject header")


def test_raw_utf8_in_a_header_needs_smtputf8() -> None:
    head = replaced(b"Subject", "Subject: Příliš žluťoučký kůň".encode())
    one(wire_problems(build(head)), "8-bit", "SMTPUTF8")
    assert wire_problems(build(head), ["SMTPUTF8"]) == []


def test_8bit_octets_that_are_not_utf8_fail_even_with_smtputf8() -> None:
    head = replaced(b"Subject", "Subject: Příliš".encode("iso8859_2"))
    one(wire_problems(build(head), ["SMTPUTF8"]), "not UTF-8")


def test_an_8bit_body_needs_8bitmime_or_smtputf8() -> None:
    mail = build(body=["Dobrý den".encode()])
    one(wire_problems(mail), "8-bit", "body", "8BITMIME")
    assert wire_problems(mail, ["BODY=8BITMIME"]) == []
    assert wire_problems(mail, ["SMTPUTF8"]) == []


@pytest.mark.parametrize("name", [b"From", b"Date", b"Message-ID"])
def test_a_missing_required_header_is_named(name: bytes) -> None:
    one(wire_problems(build(replaced(name, None))), name.decode(), "0 times")


def test_a_second_date_or_subject_is_named() -> None:
    one(wire_problems(build([*HEAD, b"Date: Fri, 20 Nov 2026 10:00:01 +0000"])), "Date", "2 times")
    one(wire_problems(build([*HEAD, b"Subject: again"])), "Subject", "at most once")


def test_a_header_section_without_an_empty_line_is_named() -> None:
    one(wire_problems(b"\r\n".join(HEAD) + b"\r\n"), "no empty line")


@pytest.mark.parametrize(("line", "words"), [
    (b"X Tracking: 1", ("field name", "X Tracking")),
    (b"X-Tracking 1", ("neither a field", "continuation")),
    (b"X-Tr\xc3\xa4cking: 1", ("field name",)),
])
def test_an_invalid_field_name_is_named(line: bytes, words: tuple[str, ...]) -> None:
    one(wire_problems(build([*HEAD, line]), ["SMTPUTF8"]), *words)


def test_a_continuation_must_start_with_white_space_and_continue_something() -> None:
    one(wire_problems(build([b" continues nothing", *HEAD])), "header line 1", "continuing nothing")
    one(wire_problems(build([*HEAD, b"Subject-Extra: a", b" ", b" b"])), "white space only")


def test_a_control_character_in_a_header_is_named() -> None:
    one(wire_problems(build(replaced(b"Subject", b"Subject: ring \x07 bell"))), "control character")


def test_header_defects_the_standard_parser_finds_are_named() -> None:
    one(wire_problems(build(replaced(b"To", b"To: Jane Doe <jane@acme.test"))), "To header", "Defect")
    one(wire_problems(build(replaced(b"From", b"From: Jane Doe <jane@>"))), "From header", "Defect")


def test_a_non_ascii_local_part_is_accepted_only_under_smtputf8() -> None:
    head = replaced(b"To", "To: <jiří@příklad.example>".encode())
    assert wire_problems(build(head), ["SMTPUTF8"]) == []
    one(wire_problems(build(head)), "NonASCIILocalPart")


def test_the_sink_checks_what_it_catches_and_records_the_envelope() -> None:
    """Over real SMTP: a good plain mail, a good SMTPUTF8 mail, a bad one with a 999-octet line
    (caught, not refused with 500), and a refused one (not caught, so not checked)."""
    s = Sink()
    s.start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as client:
            client.sendmail("support@example.com", ["jane@acme.test"], build())
            client.sendmail("podpora@příklad.example", ["jiří@příklad.example"], UTF8_MAIL,
                            mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            client.sendmail("support@example.com", ["bob@acme.test"], build(body=[b"w" * 999]))
            s.answers = ["550 5.7.1 refused"]
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail("support@example.com", ["carol@acme.test"], b"no header at all\r\n")
    finally:
        s.stop()
    plain, utf8, long_line = s.caught
    assert (plain.problems, plain.smtputf8) == ([], False)
    assert (utf8.problems, utf8.smtputf8) == ([], True)
    assert "SMTPUTF8" in utf8.mail_options and "BODY=8BITMIME" in utf8.mail_options
    assert str(utf8.message["Subject"]) == "Příliš žluťoučký kůň úpěl ďábelské ódy"
    one(long_line.problems, "999 octets")
    (report,) = bad_mails([s])
    assert "bob@acme.test" in report and "[#12] Your printer" in report and "999 octets" in report
    assert bad_mails([s]) == []  # reported once: the autouse check after this test finds nothing new


def test_maildir_files_are_checked(tmp_path: Path) -> None:
    maildir = tmp_path / "out" / "outbox"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    prefix = b"Return-Path: <support@example.com>\r\nDelivered-To: jane@acme.test\r\n"
    (maildir / "new" / "1.good").write_bytes(prefix + build())
    (maildir / "new" / "2.utf8").write_bytes(prefix + UTF8_MAIL)
    assert maildir_problems(tmp_path) == []
    (maildir / "new" / "3.bad").write_bytes(prefix + build(body=["Dobrý den\n".encode()]))
    problems = maildir_problems(tmp_path)
    assert len(problems) == 1 and "3.bad" in problems[0]
    one(problems, "bare LF")
    one(problems, "8-bit octets in the body")
    (maildir / "new" / "3.bad").unlink()  # else the autouse check fails this test for it


# What has broken mail writers: every kind of line break, NUL, dots and "From " at a line's
# start, lines far past 998 octets, non-ASCII; names, subjects, bodies and file names.
_PIECES = st.one_of(st.text(max_size=40), st.sampled_from(
    ["\r\n", "\n", "\r", "\x00", "\u2028", "\x85", "\t", ".", "\n.\n", "From x", "=?", "ü" * 700, "x" * 1500]))
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_TEXT, subject=_TEXT, text=_TEXT, html=_TEXT, file_name=_TEXT, data=st.binary(max_size=300),
       to=st.sampled_from(["jane@acme.test", "jane@příklad.example", "jiří@příklad.example"]))
def test_every_mail_maild_composes_is_fit_to_travel(name: str, subject: str, text: str, html: str, file_name: str,
                                                    data: bytes, to: str) -> None:
    """compose_mail is the one writer of maild's mail: over arbitrary text its output passes,
    under SMTPUTF8 exactly when it has raw UTF-8 (an address with a UTF-8 local part)."""
    raw = compose_mail(mail_from="support@example.com", from_name=name, to=to, to_name=name,
                       reply_to="support+abc123@example.com", subject=subject, text=text, html=html,
                       message_id="m1@support.example.com", in_reply_to="x@client.test", references=["x@client.test"],
                       now=datetime(2026, 11, 20, 10, 0, tzinfo=UTC), auto_submitted="auto-replied",
                       attachments=[(file_name, "application/pdf", data)] if data else ())
    assert wire_problems(raw, [] if raw.isascii() else ["SMTPUTF8"]) == []
