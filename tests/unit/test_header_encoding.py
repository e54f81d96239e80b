"""Every header maild writes reads back, with the standard library, as exactly what maild meant
to write (SPEC §11): arbitrary Unicode names, subjects and file names, control characters and
encoded-word look-alikes included, never add a header, break a line or pass 998 octets.
Internationalized addresses (RFC 6531) read back too: in IDNA form where the local part is
ASCII (the mail stays ASCII), else as raw UTF-8 (RFC 6532)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maild.headers import ascii_address, clean_filename, clean_name, clean_subject, is_mail_address
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
    """An ASCII mail as bytes; a mail with UTF-8 headers (RFC 6532) as text, with the SMTPUTF8
    policy: Python's bytes parser reads 8-bit header bytes as undecodable."""
    if raw.isascii():
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    else:
        msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert isinstance(msg, EmailMessage)
    return msg


def assert_wire_shape(raw: bytes, *, utf8_header: bool = False) -> None:
    """CRLF only, no line over 998 octets (RFC 5322 §2.1.1), headers in ASCII unless an address
    needs UTF-8 (then valid UTF-8, RFC 6532)."""
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line, line[:100]
        assert len(line) <= 998, line[:100]
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() != utf8_header, head[:200]
    head.decode("utf-8")


def written(address: str) -> str:
    """An address as maild writes it: IDNA where the local part is ASCII, else as it is."""
    return ascii_address(address) or address


def assert_headers(msg: EmailMessage, from_name: str, to_name: str, subject: str, *, to: str = CUSTOMER) -> None:
    """Exactly the headers maild writes, each once, reading as the cleaned values."""
    assert sorted(k.lower() for k in msg) == sorted(WRITTEN)
    for field, address, name in (("From", DESK, from_name), ("To", written(to), to_name),
                                 ("Reply-To", REPLY_TO, from_name)):
        header = msg[field]
        # Python flags every UTF-8 local part, though RFC 6532 allows it
        defects = [d for d in header.defects if not (address.partition("@")[0] != address.partition("@")[0].encode(
            "ascii", "ignore").decode() and type(d).__name__ == "NonASCIILocalPartDefect")]
        assert not defects, (field, header.defects)
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
                                     'a"@x.test', "a;b@x.test", "a\x00@x.test", "a@x.test>", "",
                                     "no-at-sign", "a@", "@x.test", "a@x test", "a@" + "x" * 300 + ".test",
                                     # internationalized look-alikes that are no address
                                     "jö sé@x.test", "jösé@x.test\r\nBcc: y@evil.test", "jö\u2028sé@x.test",
                                     "jö\x85@x.test", "jösé@x test", "jösé@příklad..example", "jö<sé@x.test",
                                     "jösé@-příklad.example", "ö" * 130 + "@x.test", "jösé@" + "ü" * 70 + ".test",
                                     "a@příklad.example\u2029Bcc: y@evil.test", '"jösé"@x.test'])
@pytest.mark.parametrize("field", ["mail_from", "to", "reply_to"])
def test_an_address_that_is_no_mail_address_is_never_written(field: str, address: str) -> None:
    assert not is_mail_address(address)
    with pytest.raises(ValueError, match="not a mail address"):
        compose(**{field: address})


def test_an_internationalized_domain_is_written_in_idna_form() -> None:
    """An ASCII local part: the mail stays ASCII, a relay needs no SMTPUTF8 for it."""
    raw = compose(to="jiri@příklad.example", to_name="Jiří Novák")
    assert_wire_shape(raw)
    assert b"\r\nTo: =?utf-8?b?SmnFmcOtIE5vdsOhaw==?= <jiri@xn--pklad-zsa96e.example>\r\n" in raw
    assert_headers(parse(raw), "Support", "Jiří Novák", "Hello", to="jiri@příklad.example")


def test_a_utf8_local_part_is_written_as_raw_utf8() -> None:
    raw = compose(to="jiří@příklad.example", to_name="Jiří Novák")
    assert_wire_shape(raw, utf8_header=True)
    assert "\r\nTo: =?utf-8?b?SmnFmcOtIE5vdsOhaw==?= <jiří@příklad.example>\r\n".encode() in raw
    assert_headers(parse(raw), "Support", "Jiří Novák", "Hello", to="jiří@příklad.example")


# Internationalized addresses: UTF-8 local parts of every script (letters, marks, emoji, atext
# punctuation, dots between atoms) at internationalized or ASCII domains, up to 254 octets.
_intl_char = st.characters(min_codepoint=0xA0, exclude_categories=("Cc", "Cs", "Zl", "Zp", "Zs"))
_atom = st.lists(st.one_of(_intl_char, st.sampled_from("abcXYZ019!#$%&'*+/=?^_`{|}~-")), min_size=1,
                 max_size=40).map("".join)
_local = st.lists(_atom, min_size=1, max_size=4).map(".".join)
_domain = st.sampled_from(["příklad.example", "xn--pklad-zsa96e.example", "example.com", "münchen.test", "例え.テスト",
                           "mail.пример.рф", "straße.de", "x" * 60 + ".ü" + "y" * 50 + ".test"])
intl_addresses = st.tuples(_local, _domain).map("@".join).filter(is_mail_address)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(to=intl_addresses, to_name=values)
@example(to="jiří@příklad.example", to_name="Jiří Novák")
@example(to="jiri@příklad.example", to_name=INJECTION)
@example(to="用户@例子.广告", to_name="😀" * 300)
@example(to="ö" * 100 + "@" + "x" * 40 + ".test", to_name="Ж" * 500)
@example(to="δοκιμή.user+tag@παράδειγμα.δοκιμή", to_name="")
@example(to="öööööööööö@x.test", to_name="a" * 50)  # 74 characters on one line, but 84 octets
def test_internationalized_addresses_read_back(to: str, to_name: str) -> None:
    raw = compose(to=to, to_name=to_name)
    utf8 = ascii_address(to) is None
    assert_wire_shape(raw, utf8_header=utf8)
    assert_headers(parse(raw), "Support", to_name, "Hello", to=to)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    to_lines = head[head.index("\r\nTo: ") + 2:head.index("\r\nReply-To: ")].split("\r\n")
    # folded by octets, not characters: on one line of at most 78, or the address on a line of its own
    if clean_name(to_name):
        assert (len(to_lines) == 1 and len(to_lines[0].encode()) <= 78) or to_lines[-1] == f" <{written(to)}>", to_lines
    else:
        assert to_lines == [f"To: {written(to)}"]


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
    """Whatever the From, To and Subject said, ingest hands on addresses compose can write, clean names
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
        assert is_mail_address(a.address), a  # plain or RFC 6531: what compose can write
        assert a.name == clean_name(a.name), a
    assert inbound.subject == clean_subject(inbound.subject) and len(inbound.subject) <= 1000


def test_a_utf8_message_id_threads_only_mail_that_travels_with_smtputf8() -> None:
    """The customer's SMTPUTF8 client wrote `<…@příklad.example>`: the answer to that customer
    (a UTF-8 address, so SMTPUTF8 anyway) refers to it; a mail to an ASCII address stays ASCII."""
    theirs = "A7D2E9F1@příklad.example"
    to_utf8 = compose(to="jiří@příklad.example", in_reply_to=theirs, references=[theirs, "n2@maild.test"])
    msg = parse(to_utf8)
    assert str(msg["In-Reply-To"]) == f"<{theirs}>" and theirs in str(msg["References"])
    to_ascii = compose(to="jiri@příklad.example", in_reply_to=theirs, references=[theirs, "n2@maild.test"])
    assert to_ascii.isascii() and b"In-Reply-To" not in to_ascii and b"<n2@maild.test>" in to_ascii
    assert b"In-Reply-To" not in compose(to="jiří@příklad.example", in_reply_to="bad id@x\u2028y")
