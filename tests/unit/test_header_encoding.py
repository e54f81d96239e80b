"""Every header maild writes reads back, with the standard library, as exactly what maild meant
to write (SPEC §11): arbitrary Unicode names, subjects and file names, control characters and
encoded-word look-alikes included, never add a header, break a line or pass 998 octets."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maild.headers import clean_filename, clean_name, clean_subject, is_plain_address
from maild.ingest.parse import parse_message
from maild.notify.compose import compose_mail

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
DESK, REPLY_TO, CUSTOMER = "support@example.com", "support+12cabcdefghijklmnop@example.com", "jane@acme.test"
WRITTEN = {"from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to", "references",
           "auto-submitted", "x-auto-response-suppress", "precedence", "mime-version", "content-type"}
INJECTION = "Support\r\nReply-To: mallory@evil.test\r\nBcc: all@evil.test\r\n\r\nYour account is closed."
ENCODED_INJECTION = "=?utf-8?q?Support=0D=0AReply-To=3A_mallory=40evil.test=0D=0A=0D=0AFake_body?="

# Pieces that have broken header writers: line breaks of every kind, quotes, backslashes,
# encoded-word look-alikes, address punctuation, folding-length words, non-ASCII.
SNIPPETS = ["\r\n", "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", '"', "\\", "=?", "?=",
            "=?utf-8?q?x?=", "=?utf-8?b?SGk=?=", "<", ">", ",", ";", ":", "(", ")", "@", "Reply-To: x@evil.test",
            "  ", "ü", "Ж", "中文", "😀", "\u00a0", "x" * 80, "ü" * 40]
pieces = st.one_of(st.text(), st.sampled_from(SNIPPETS), st.characters(codec="utf-8"))
tricky = st.lists(pieces, max_size=25).map("".join)
long_text = st.tuples(tricky, st.integers(1, 300)).map(lambda t: t[0] * t[1])
values = st.one_of(tricky, long_text)
mime_types = st.one_of(st.sampled_from(["application/pdf", "image/png", "text/plain", "TEXT/CSV", "multipart/mixed",
                                        "message/rfc822", "", "pdf", "image/png; name=x", "a/b\r\nBcc: x@evil.test"]),
                       st.text(max_size=30))


def compose(from_name: str = "Support", to_name: str = "Jane", subject: str = "Hello",
            attachments: list[tuple[str, str, bytes]] | None = None, **kw: object) -> bytes:
    args: dict = dict(mail_from=DESK, from_name=from_name, to=CUSTOMER, to_name=to_name, reply_to=REPLY_TO,
                      subject=subject, text="Body line one\nline two\n", html="<p>Body</p>",
                      message_id="0123abcd@maild.test", in_reply_to="orig-1@client.test",
                      references=["orig-1@client.test", "n2@maild.test"], now=NOW, auto_submitted="auto-generated",
                      attachments=attachments or ())
    return compose_mail(**{**args, **kw})


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def assert_wire_shape(raw: bytes) -> None:
    """CRLF only, no line over 998 octets (RFC 5322 §2.1.1), headers in ASCII."""
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, line[:100]
        assert len(line) <= 998, line[:100]
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()


def assert_headers(msg: EmailMessage, from_name: str, to_name: str, subject: str) -> None:
    """Exactly the headers maild writes, each once, reading as the cleaned values."""
    assert sorted(k.lower() for k in msg) == sorted(WRITTEN)
    for field, address, name in (("From", DESK, from_name), ("To", CUSTOMER, to_name),
                                 ("Reply-To", REPLY_TO, from_name)):
        header = msg[field]
        assert not header.defects, (field, header.defects)
        assert [(a.display_name, a.addr_spec) for a in header.addresses] == [(clean_name(name), address)]
    assert not msg["Subject"].defects
    assert str(msg["Subject"]) == clean_subject(subject)
    assert msg["Message-ID"] == "<0123abcd@maild.test>"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Body line one\nline two\n"
    assert "<p>Body</p>" in msg.get_body(("html",)).get_content()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_name=values, to_name=values, subject=values)
@example(from_name=INJECTION, to_name=INJECTION, subject=INJECTION)
@example(from_name="Smith, John", to_name='"Quoted" \\ back\\slash', subject="=?utf-8?q?not_decoded?=")
@example(from_name="Ж" * 500, to_name="😀" * 300, subject="ü" * 5000)
@example(from_name="x" * 5000, to_name="", subject="y" * 5000)
@example(from_name="\x00\x01\x1f\x7f\x85\x9f", to_name=" \t ", subject="\r\n")
def test_names_and_subjects_read_back_as_cleaned(from_name: str, to_name: str, subject: str) -> None:
    raw = compose(from_name=from_name, to_name=to_name, subject=subject)
    assert_wire_shape(raw)
    assert_headers(parse(raw), from_name, to_name, subject)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.tuples(values, mime_types, st.binary(max_size=64)), min_size=1, max_size=3))
@example(files=[("Rechnung für März.pdf", "application/pdf", b"%PDF"), ('a "b" \\c.txt', "text/plain", b"x"),
                ("=?utf-8?q?evil?=.exe", "application/x-msdownload", b"MZ"),
                ("r\r\nContent-Type: text/html\r\n\r\n<script>.html", "a/b\r\nBcc: x@evil.test", b"<")])
def test_file_names_and_types_read_back_as_cleaned(files: list[tuple[str, str, bytes]]) -> None:
    raw = compose(attachments=files)
    assert_wire_shape(raw)
    msg = parse(raw)
    assert_headers(msg, "Support", "Jane", "Hello")
    parts = list(msg.iter_attachments())
    assert len(parts) == len(files)
    for part, (filename, kind, data) in zip(parts, files, strict=True):
        assert not part["Content-Disposition"].defects
        assert part.get_filename() == clean_filename(filename)
        token = kind.partition(";")[0].strip().lower()
        assert part.get_content_type() in (token, "application/octet-stream")
        if token in ("application/pdf", "image/png", "text/plain", "text/csv"):
            assert part.get_content_type() == token
        elif "/" not in token or token.startswith(("multipart/", "message/")) or not token.isascii():
            assert part.get_content_type() == "application/octet-stream"
        assert part.get_payload(decode=True) == data


@pytest.mark.parametrize("subject", ["Printer on floor three is broken again " * 25, "Drucker kaputt " * 50])
def test_a_long_subject_folds_at_78(subject: str) -> None:
    head = compose(subject=subject).split(b"\r\n\r\n", 1)[0].decode()
    folded = head[head.index("Subject:"):head.index("\r\nDate:")]
    assert folded.count("\r\n") > 5 and all(len(line) <= 78 for line in folded.split("\r\n"))


@pytest.mark.parametrize("address", ["a b@x.test", "a@x.test\r\nBcc: y@evil.test", "<a@x.test>", "a@x.test,b@y.test",
                                     'a"@x.test', "a;b@x.test", "a\x00@x.test", "jösé@x.test", "a@x.test>", "",
                                     "no-at-sign", "a@", "@x.test", "a@x test", "a@" + "x" * 300 + ".test"])
@pytest.mark.parametrize("field", ["mail_from", "to", "reply_to"])
def test_an_address_that_is_not_plain_is_never_written(field: str, address: str) -> None:
    with pytest.raises(ValueError, match="not a plain address"):
        compose(**{field: address})


def test_message_ids_from_other_mail_that_are_not_plain_are_left_out() -> None:
    msg = parse(compose(in_reply_to="x@y\r\nBcc: evil@evil.test", references=["ok@client.test", "a b@c", "<x>@y"]))
    assert "in-reply-to" not in {k.lower() for k in msg} and "bcc" not in {k.lower() for k in msg}
    assert str(msg["References"]) == "<ok@client.test>"


@pytest.mark.parametrize("header", [
    f"From: {ENCODED_INJECTION} <eve@evil.test>",
    "From: =?utf-8?b?U3VwcG9ydA0KUmVwbHktVG86IG1hbGxvcnlAZXZpbC50ZXN0DQoNCkJvZHk=?= <eve@evil.test>",
    "From: =?iso-8859-1?q?Support=0AReply-To=3A_mallory=40evil.test?= <eve@evil.test>",
])
def test_an_injecting_name_from_a_customer_mail_reaches_no_header(header: str) -> None:
    """The whole path: what ingest decodes, compose writes, and a reader sees one Reply-To."""
    inbound = parse_message((f"{header}\r\nTo: {DESK}\r\nSubject: =?utf-8?q?Hi=0D=0ABcc=3A_x=40evil.test?=\r\n"
                             "Message-ID: <m1@evil.test>\r\n\r\nHello\r\n").encode())
    assert inbound.sender is not None and inbound.sender.address == "eve@evil.test"
    assert "\r" not in inbound.sender.name and "\n" not in inbound.sender.name
    assert inbound.sender.name.startswith("Support Reply-To: mallory@evil.test")
    assert inbound.subject == "Hi Bcc: x@evil.test"
    raw = compose(from_name=inbound.sender.name, to_name=inbound.sender.name, subject=f"[#1] {inbound.subject}")
    msg = parse(raw)
    assert_headers(msg, inbound.sender.name, inbound.sender.name, f"[#1] {inbound.subject}")
    assert msg.get_all("Reply-To") == [REPLY_TO] or [a.addr_spec for a in msg["Reply-To"].addresses] == [REPLY_TO]
    assert b"mallory@evil.test>" not in raw and b"\r\nBcc" not in raw and b"\r\nReply-To: mallory" not in raw


@settings(max_examples=200, deadline=None)
@given(header=st.lists(st.one_of(st.sampled_from([*SNIPPETS, "a@b.test", "<c@d.test>", "=?utf-8?q?=0D=0A?=",
                                                   "x@y.test\r\n Bcc: z@evil.test", "\"q\" <e@f.test>"]),
                                 st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126))),
                       max_size=12).map("".join),
       subject=values)
def test_parse_gives_only_plain_addresses_and_clean_names(header: str, subject: str) -> None:
    """Whatever the From, To and Subject said, ingest hands on plain addresses, clean names
    and a clean subject of at most 1,000 characters."""
    head = header.replace("\r", " ").replace("\n", " ")
    subject_line = subject.encode("utf-8", "surrogatepass").replace(b"\r", b" ").replace(b"\n", b" ")
    raw = (b"From: " + head.encode() + b"\r\nTo: " + head.encode() + b", ok@x.test\r\nSubject: " + subject_line
           + b"\r\nMessage-ID: <p1@x.test>\r\n\r\nbody\r\n")
    try:
        inbound = parse_message(raw)
    except Exception as e:  # a ParseError goes to quarantine; nothing else may escape
        assert type(e).__name__ == "ParseError"
        return
    for a in [*([inbound.sender] if inbound.sender else []), *inbound.to]:
        assert is_plain_address(a.address), a
        assert a.name == clean_name(a.name), a
    assert inbound.subject == clean_subject(inbound.subject) and len(inbound.subject) <= 1000
