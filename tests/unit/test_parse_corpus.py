"""parse_message and loops.classify over a corpus of realistic inbound mails (tests/eml/*.eml).

Each fixture is written the way its client really sends it. Every mail is parsed twice: with
CRLF line endings (as SMTP delivers it) and with bare LF (as a maildir or a test file holds it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from maild.domain.errors import ParseError
from maild.domain.message import InboundMessage
from maild.ingest.parse import parse_message
from maild.rules.loops import classify

EML_DIR = Path(__file__).resolve().parent.parent / "eml"
OWN = {"support@example.com"}
HOSTNAME = "support.example.com"
MALFORMED = "malformed-broken-mime.eml"
EOLS = pytest.mark.parametrize("eol", ["\r\n", "\n"], ids=["crlf", "lf"])


def load(name: str, eol: str = "\r\n") -> bytes:
    raw = (EML_DIR / name).read_bytes().replace(b"\r\n", b"\n")
    return raw.replace(b"\n", eol.encode("ascii"))


def unix(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class Att:
    filename: str
    content_type: str
    size: int
    magic: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True)
class Expected:
    sender: str
    name: str
    subject: str
    phrases: tuple[str, ...]  # each must be in .text, decoded
    absent: tuple[str, ...] = ()  # must not be in .text (transfer-encoding or markup leftovers)
    envelope: str | None = None  # SMTP MAIL FROM for classify; None: the From address
    kind: str = "normal"
    bounced: tuple[str, ...] = ()
    to: tuple[str, ...] = ("support@example.com",)
    cc: tuple[tuple[str, str], ...] = ()
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    content_type: str = "multipart/alternative"
    has_html: bool = True
    attachments: tuple[Att, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # header(name) == value


ENCODED = ("=E2", "=C3", "=\n", "=20", "=?")

EXPECTED: dict[str, Expected] = {
    "gmail-new-plain-and-html.eml": Expected(
        sender="jane.doe@acme.test", name="Jane Doe", subject="Cannot log in to the customer portal",
        # the first phrase spans a QP soft line break, the second holds a QP-encoded en dash
        phrases=("keeps saying my password is wrong, even right after a reset", "reset – I tried Chrome"),
        absent=ENCODED,
        message_id="CAJ8xq2Vb+3mP0s_Kq=Hn1cTzQ1rR9u@mail.gmail.example",
    ),
    "gmail-reply-with-quote.eml": Expected(
        sender="jane.doe@acme.test", name="Jane Doe", subject="Re: [#3] Cannot log in to the customer portal",
        phrases=(
            "Clearing the browser cookies fixed it!",
            "On Mon, Mar 3, 2025 at 10:15\u202fAM Support <support@example.com> wrote:",
            "> we received your request and opened case #3.",
        ),
        absent=ENCODED,
        in_reply_to=("ack-3@support.example.com",),
        references=("CAJ8xq2Vb+3mP0s_Kq=Hn1cTzQ1rR9u@mail.gmail.example", "ack-3@support.example.com"),
    ),
    "outlook-reply-no-in-reply-to.eml": Expected(
        sender="john.smith@firma.test", name="Smith, John", subject="RE: [#7] Printer on fire",
        phrases=(
            "We unplugged it and put it on the balcony.",
            "From: Support <support@example.com>\nSent: Monday, March 3, 2025 11:02 AM\n"
            "To: Smith, John <john.smith@firma.test>\nSubject: [#7] Printer on fire",
        ),
        absent=ENCODED,
        headers=(("Thread-Topic", "[#7] Printer on fire"),
                 ("Thread-Index", "AQHbjBz1mN4tq8r0S0e7oJ5mGk3Xg7NhYk3w")),
    ),
    "apple-mail-new.eml": Expected(
        sender="amelie.laurent@acme.test", name="Amélie Laurent", subject="Invoice export shows wrong totals",
        phrases=("wrong totals for the café branch — every line is counted twice.", "Cheers,\nAmélie"),
        absent=ENCODED,
        message_id="6E1F3C2A-9B47-4D8E-A2C5-3F7B1E0D9A64@acme.test",
        headers=(("X-Mailer", "Apple Mail (2.3826.400.131.1.6)"),),
    ),
    "thunderbird-new-iso-8859-2-czech.eml": Expected(
        sender="petr.novak@firma.test", name="Petr Novák", subject="Nefunguje tiskárna v účtárně",
        phrases=("tiskárna v účtárně od rána netiskne", "Papír tam ale žádný není.", "Příčná 12"),
        content_type="text/plain", has_html=False,
        headers=(("User-Agent", "Mozilla Thunderbird"),),
    ),
    "russian-koi8r.eml": Expected(
        sender="ivan.petrov@acme.test", name="Иван Петров", subject="Не работает принтер",
        phrases=("Не работает принтер в бухгалтерии", "выдаёт ошибку", "С уважением,\nИван Петров"),
        content_type="text/plain", has_html=False,
        headers=(("X-Mailer", "The Bat! (v10.5.3) Professional"),),
    ),
    "russian-windows-1251-outlook.eml": Expected(
        sender="o.smirnova@acme.test", name="Ольга Смирнова",
        subject="Счёт № 345 не отображается как оплаченный",
        phrases=("Счёт № 345 от 28.02.2025 оплачен", "статус по-прежнему «не оплачен»",
                 "Платёжное поручение"),
    ),
    "german-utf8-umlauts.eml": Expected(
        sender="juergen.mueller@firma.test", name="Jürgen Müller", subject="Rechnung für März ist fehlerhaft",
        phrases=("Große Straße 5, 80331 München", "Außerdem fehlen die Überstunden", "Grüßen"),
        content_type="text/plain", has_html=False,
    ),
    "html-only-newsletter-style-client.eml": Expected(
        sender="shop@acme.test", name="ACME Shop", subject="Checkout error 502 with PayPal",
        phrases=("Our shop’s checkout page returns error 502 whenever a customer pays with",
                 "PayPal & a coupon code.", "10442, 10447, 10451"),
        absent=(*ENCODED, "<p>", "<b>", "&amp;", "&nbsp;", "font-family", "\xa0"),
        content_type="text/html",
    ),
    "iphone-reply-sent-from-my-iphone.eml": Expected(
        sender="jane.doe@acme.test", name="Jane Doe", subject="Re: [#3] Cannot log in to the customer portal",
        phrases=("Still broken on my phone", "Sent from my iPhone",
                 "> On 3 Mar 2025, at 11:20, Support <support@example.com> wrote:"),
        absent=ENCODED,
        in_reply_to=("reply-3-2@support.example.com",),
        references=("ack-3@support.example.com", "reply-3-2@support.example.com"),
    ),
    "attachments-non-ascii-names.eml": Expected(
        sender="eva.svobodova@firma.test", name="Eva Svobodová", subject="Faktura č. 12 – nesouhlasí částka",
        phrases=("v příloze posílám fakturu č. 12, částka nesouhlasí s objednávkou.",),
        content_type="multipart/mixed",
        attachments=(
            Att("logo.png", "image/png", 69, b"\x89PNG\r\n\x1a\n",
                content_id="part1.Xb3kT9qA.Lm2vR8cE@firma.test", inline=True),
            Att("Faktura č. 12.pdf", "application/pdf", 251, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3"),
        ),
    ),
    "cc-colleagues.eml": Expected(
        sender="jane@acme.test", name="Jane Doe", subject="Access to reporting for two colleagues",
        phrases=("Bob and Carol from our accounting team need access to the reporting module",),
        absent=ENCODED,
        cc=(("bob@acme.test", "Bob Builder"), ("carol.kowalski@acme.test", "Kowalski, Carol")),
    ),
    "outlook-auto-reply-out-of-office.eml": Expected(
        sender="john.smith@firma.test", name="Smith, John", subject="Automatic reply: [#7] Printer on fire",
        phrases=("I am out of the office until 10 March",),
        kind="auto_reply",
        in_reply_to=("ack-7@support.example.com",), references=("ack-7@support.example.com",),
        headers=(("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All")),
    ),
    "bounce-dsn-postfix.eml": Expected(
        sender="mailer-daemon@mx.example.com", name="Mail Delivery System",
        subject="Undelivered Mail Returned to Sender",
        phrases=("This is the mail system at host mx.example.com.",
                 "<gone@acme.test>: host mx1.acme.test[198.51.100.25] said: 550 5.1.1"),
        envelope="", kind="bounce", bounced=("gone@acme.test",),
        content_type="multipart/report", has_html=False,
    ),
    "mailing-list-post.eml": Expected(
        sender="tom.berger@acme.test", name="Tom Berger",
        subject="[acme-users] Anyone else seeing API timeouts since Friday?",
        phrases=("our nightly sync job gets API timeouts",),
        envelope="users-bounces+support=example.com@lists.acme.test", kind="list",
        to=("users@lists.acme.test",), content_type="text/plain", has_html=False,
        headers=(("List-Id", "ACME users <users.lists.acme.test>"), ("Precedence", "list")),
    ),
    # RFC 6532: raw UTF-8 in headers, as SMTPUTF8 clients and MTAs send it (issue 20 §1)
    "utf8-headers-thunderbird-smtputf8.eml": Expected(
        sender="zdenek.novak@firma.test", name="Zdeněk Novák",
        subject="Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118",
        phrases=("místo 12 400 Kč je tam 124 000 Kč.", "S pozdravem\nZdeněk Novák"),
        content_type="text/plain", has_html=False,
        message_id="8c1f2a7e-5d3b-4b6e-9f0a-2c7d1e4b9a35@firma.test",
        headers=(("User-Agent", "Mozilla Thunderbird"),
                 ("From", "Zdeněk Novák <zdenek.novak@firma.test>")),
    ),
    # RFC 6531: an internationalized sender address becomes a contact like any other (issue 20 §2)
    "utf8-sender-internationalized-address.eml": Expected(
        sender="jiří@příklad.example", name="Jiří Dvořák", subject="Nelze se přihlásit do portálu",
        phrases=("portál hlásí „neplatné heslo“.",),
        content_type="text/plain", has_html=False, envelope="jiří@příklad.example",
        message_id="A7D2E9F1-3B4C-4E5A-9C8D-1F2E3D4C5B6A@příklad.example",
    ),
    # The real-Postfix suite's mails (tests/e2e/test_postfix_mta.py), read here without the MTA
    "postfix_plain_thunderbird.eml": Expected(
        sender="petra.mala@firma.test", name="Petra Malá", subject="Cannot download the November invoice",
        phrases=('returns "404 Not Found". Could you send the PDF by mail, please?',),
        content_type="text/plain", has_html=False, message_id="3b6f0c2e-postfix-plain-7d41@firma.test",
    ),
    "postfix_html_only_outlook.eml": Expected(
        sender="martin.horak@stavby.test", name="Martin Horak", subject="Order 5521 arrived damaged",
        phrases=("order 5521 arrived today with a cracked lid on two of the three boxes.", "Martin Horák"),
        absent=("<p", "MsoNormal"), content_type="text/html",
    ),
    "postfix_long_line.eml": Expected(
        sender="ops@exports.test", name="Export Tool Admin", subject="Import rejects our order export",
        phrases=("order-0000;paid;shipped;CZK;1240.00 order-0001;paid;shipped;CZK;1240.00",),
        content_type="text/plain", has_html=False,
    ),
    "utf8_headers_czech.eml": Expected(
        sender="zdenek.novak@firma.test", name="Zdeněk Novák",
        subject="Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118 má špatnou částku",
        phrases=("místo 12 400 Kč je tam 124 000 Kč.",), content_type="text/plain", has_html=False,
    ),
    "utf8_headers_german.eml": Expected(
        sender="juergen.groessmann@kunde.test", name="Jürgen Größmann",
        subject="Rückfrage zur Lieferung: Größe der Türdichtung passt nicht (Bestellnr. 4711)",
        phrases=("die gelieferte Türdichtung ist zu groß.",), content_type="text/plain", has_html=False,
    ),
    "utf8_headers_russian.eml": Expected(
        sender="a.smirnov@pochta.test", name="Алексей Смирнов",
        subject="Не работает вход в личный кабинет после обновления пароля",
        phrases=("пишет «неверный логин».",), content_type="text/plain", has_html=False,
    ),
    "utf8_sender_address.eml": Expected(
        sender="jiří@příklad.example", name="Jiří Dvořák", subject="Dotaz k objednávce 7730",
        phrases=("Na webu je stále „zpracovává se“.",), content_type="text/plain", has_html=False,
        envelope="jiří@příklad.example", message_id="7f2e61d4-utf8-sender-c03a@xn--pklad-zsa96e.example",
    ),
    # Legacy: unencoded 8-bit headers in the body's charset (no RFC 2047), not UTF-8
    "legacy-8bit-koi8r-header-outlook-express.eml": Expected(
        sender="ivan.petrov@zavod.test", name="Петров Иван", subject="Не работает выгрузка отчётов",
        phrases=("Выгрузка отчётов за ноябрь падает с ошибкой.",),
        content_type="text/plain", has_html=False,
    ),
    "forwarded-chain.eml": Expected(
        sender="martin@firma.test", name="Martin Sales", subject="Fwd: Fwd: Order 4711 never arrived",
        phrases=(
            "Can you look into this one?",
            "---------- Forwarded message ---------\nFrom: Klara Weiss <klara.weiss@acme.test>",
            "From: Customer Service Bot <no-reply@shop.example.org>",
            "your parcel with order 4711 was returned to the warehouse as undeliverable.",
        ),
        absent=ENCODED,
        in_reply_to=("CAK9w1bQd7vJ0xN3e=Tz4Lr5Yp2sUq8m@mail.gmail.example",),
        references=("CAK9w1bQd7vJ0xN3e=Tz4Lr5Yp2sUq8m@mail.gmail.example",
                    "20250228161200.8f3c2a1b@shop.example.org"),
    ),
}


def test_every_fixture_is_covered() -> None:
    on_disk = {p.name for p in EML_DIR.glob("*.eml")}
    assert on_disk == {*EXPECTED, MALFORMED}


@EOLS
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse(name: str, eol: str) -> None:
    exp = EXPECTED[name]
    raw = load(name, eol)
    msg = parse_message(raw)

    assert msg.raw_mail.data == raw
    assert msg.sender is not None
    assert (msg.sender.address, msg.sender.name) == (exp.sender, exp.name)
    assert msg.subject == exp.subject
    text = unix(msg.text)
    for phrase in exp.phrases:
        assert phrase in text
    for leftover in exp.absent:
        assert leftover not in text
    assert "\ufffd" not in text, "a charset was decoded wrongly"
    assert [a.address for a in msg.to] == list(exp.to)
    assert [(a.address, a.name) for a in msg.cc] == list(exp.cc)
    assert msg.in_reply_to == list(exp.in_reply_to)
    assert msg.references == list(exp.references)
    if exp.message_id is not None:
        assert msg.message_id == exp.message_id
    else:
        assert msg.message_id and "@" in msg.message_id and "<" not in msg.message_id
    assert msg.content_type == exp.content_type
    assert (msg.html is not None) == exp.has_html
    for header, value in exp.headers:
        assert msg.header(header) == value

    assert [a.filename for a in msg.attachments] == [e.filename for e in exp.attachments]
    for a, e in zip(msg.attachments, exp.attachments, strict=True):
        assert (a.content_type, len(a.data), a.content_id, a.inline) == (e.content_type, e.size, e.content_id,
                                                                         e.inline)
        assert a.data.startswith(e.magic)


@EOLS
def test_inline_image_is_referenced_from_html(eol: str) -> None:
    msg = parse_message(load("attachments-non-ascii-names.eml", eol))
    (image,) = [a for a in msg.attachments if a.inline]
    assert msg.html is not None and f'src="cid:{image.content_id}"' in msg.html
    pdf = next(a for a in msg.attachments if a.content_type == "application/pdf")
    assert pdf.data.endswith(b"%%EOF\n") and b"\x00\x01\x02\xff\xfe\xfd\x80\x81" in pdf.data


@EOLS
def test_html_only_mail_keeps_html_and_gets_text(eol: str) -> None:
    msg = parse_message(load("html-only-newsletter-style-client.eml", eol))
    assert msg.html is not None and "<b>error&nbsp;502</b>" in msg.html
    assert "<" not in msg.text


@EOLS
def test_bounce_carries_original_message_id(eol: str) -> None:
    msg = parse_message(load("bounce-dsn-postfix.eml", eol))
    assert msg.report_type == "delivery-status"
    assert msg.returned_message_ids == ["ack-1@support.example.com"]
    assert msg.dsn_failed_recipients == ["gone@acme.test"]


@EOLS
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classify(name: str, eol: str) -> None:
    exp = EXPECTED[name]
    msg = parse_message(load(name, eol))
    envelope = exp.sender if exp.envelope is None else exp.envelope
    result = classify(msg, envelope, own_addresses=OWN, hostname=HOSTNAME)
    assert result.kind == exp.kind, result.reason
    assert result.bounced_addresses == list(exp.bounced)
    if exp.kind == "normal":
        assert result.automatic_reply_allowed, result.no_auto_reason
    else:
        assert not result.automatic_reply_allowed


def test_classify_unknown_envelope_sender() -> None:
    """Over IMAP the envelope is unknown (None): headers alone must still decide."""
    for name, exp in EXPECTED.items():
        result = classify(parse_message(load(name)), None, own_addresses=OWN, hostname=HOSTNAME)
        assert (result.kind, result.bounced_addresses) == (exp.kind, list(exp.bounced)), name


def _parse_or_parse_error(raw: bytes) -> InboundMessage | None:
    try:
        msg = parse_message(raw)
    except ParseError:
        return None
    assert isinstance(msg, InboundMessage)
    return msg


@EOLS
def test_malformed_mail_parses_or_raises_parse_error(eol: str) -> None:
    msg = _parse_or_parse_error(load(MALFORMED, eol))
    if msg is not None:
        result = classify(msg, "broken@acme.test", own_addresses=OWN, hostname=HOSTNAME)
        assert result.kind in {"normal", "auto_reply", "bounce", "list", "loop"}


ADDR_SPEC_RE = re.compile(r"^[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+$")


def test_malformed_sender_is_an_address_or_none() -> None:
    msg = _parse_or_parse_error(load(MALFORMED))
    assert msg is None or msg.sender is None or ADDR_SPEC_RE.match(msg.sender.address)


@pytest.mark.parametrize("header", [
    "Message-ID",
    "In-Reply-To",
    "References",
    "From",
    "Subject",
    "Cc",
])
def test_raw_8bit_bytes_in_a_header_never_crash(header: str) -> None:
    """Spam and broken mailers put unencoded 8-bit bytes in any header; only ParseError may come out."""
    raw = load("gmail-new-plain-and-html.eml")
    raw = re.sub(rb"(?im)^" + re.escape(header.encode()) + rb":[^\r\n]*\r\n", b"", raw)
    raw = header.encode() + b": <caf\xe9-\xff@acme.test>\r\n" + raw
    _parse_or_parse_error(raw)


@pytest.mark.parametrize("name", sorted(p.name for p in EML_DIR.glob("*.eml")))
def test_reply_and_safe_html_come_with_the_parse(name: str) -> None:
    """Worked out in the parse worker; the pipeline takes them as they are."""
    import dataclasses

    from maild.ingest.pipeline import reply_of
    from maild.ingest.sanitize import sanitize_html

    msg = parse_message(load(name, "\r\n"))
    assert msg.reply == reply_of(dataclasses.replace(msg, reply=None))  # what the pipeline would work out
    assert msg.safe_html == (sanitize_html(msg.html) if msg.html else None)
