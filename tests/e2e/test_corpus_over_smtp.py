"""The mail corpus (tests/eml/*.eml) over real sockets, checked as an admin would check it.

One `maild run` per database sends every fixture with smtplib to support@example.com, envelope
sender the fixture's From address ("" for the bounce), delivering acknowledgements to a real
SMTP sink. Then `maild case list/show --json` and the sink are read once, and each test below
asserts on that snapshot for one fixture.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import hashlib
import json
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EML_DIR, Database, load_eml
from tests.support.daemon import Daemon
from tests.support.sink import Caught, Sink

MAILBOX = "support@example.com"
BOUNCE = "bounce-dsn-postfix.eml"
MALFORMED = "malformed-broken-mime.eml"
ACK_TIMEOUT = 15.0  # for all acknowledgements together
QUIET_SECONDS = 2.0  # how long after the last mail the sink must stay quiet about automatic mail


@dataclass(frozen=True)
class Customer:
    """What a customer's mail must become: a case of its own, as `case show --json` has it."""

    email: str
    name: str
    subject: str  # the case subject: Re:/RE:/Fwd: prefixes and [#N] tags stripped
    phrases: tuple[str, ...]  # decoded text that must be in the first post
    quoted: tuple[str, ...] = ()  # quoted history that must not be in it
    attachments: tuple[str, ...] = ()  # filenames, in order; size and sha256 from the fixture
    participants: tuple[tuple[str, str], ...] = ()  # (email, name) of cc'd colleagues


CUSTOMERS: dict[str, Customer] = {
    # Replies first: they name [#3]/[#7] and Message-IDs this fresh help desk never issued (as mail
    # answering a previous system's tickets would), so each must open a case of its own.
    "iphone-reply-sent-from-my-iphone.eml": Customer(
        "jane.doe@acme.test", "Jane Doe", "Cannot log in to the customer portal",
        phrases=("Still broken on my phone, same error as before.",),
        quoted=("On 3 Mar 2025, at 11:20", "please try clearing your cookies first"),
    ),
    "gmail-reply-with-quote.eml": Customer(
        "jane.doe@acme.test", "Jane Doe", "Cannot log in to the customer portal",
        phrases=("Clearing the browser cookies fixed it!",),
        quoted=("wrote:", "we received your request and opened case #3"),
    ),
    "outlook-reply-no-in-reply-to.eml": Customer(
        "john.smith@firma.test", "Smith, John", "Printer on fire",
        phrases=("We unplugged it and put it on the balcony.",),
        quoted=("Sent: Monday, March 3, 2025 11:02 AM", "we received your request and opened case #7"),
    ),
    "gmail-new-plain-and-html.eml": Customer(
        "jane.doe@acme.test", "Jane Doe", "Cannot log in to the customer portal",
        phrases=("keeps saying my password is wrong, even right after a reset", "reset – I tried Chrome"),
    ),
    "apple-mail-new.eml": Customer(
        "amelie.laurent@acme.test", "Amélie Laurent", "Invoice export shows wrong totals",
        phrases=("wrong totals for the café branch — every line is counted twice.",),
    ),
    "thunderbird-new-iso-8859-2-czech.eml": Customer(
        "petr.novak@firma.test", "Petr Novák", "Nefunguje tiskárna v účtárně",
        phrases=("tiskárna v účtárně od rána netiskne", "Papír tam ale žádný není."),
    ),
    "russian-koi8r.eml": Customer(
        "ivan.petrov@acme.test", "Иван Петров", "Не работает принтер",
        phrases=("Не работает принтер в бухгалтерии", "выдаёт ошибку"),
    ),
    "russian-windows-1251-outlook.eml": Customer(
        "o.smirnova@acme.test", "Ольга Смирнова", "Счёт № 345 не отображается как оплаченный",
        phrases=("Счёт № 345 от 28.02.2025 оплачен", "статус по-прежнему «не оплачен»"),
    ),
    "german-utf8-umlauts.eml": Customer(
        "juergen.mueller@firma.test", "Jürgen Müller", "Rechnung für März ist fehlerhaft",
        phrases=("Große Straße 5, 80331 München", "Außerdem fehlen die Überstunden"),
    ),
    "html-only-newsletter-style-client.eml": Customer(
        "shop@acme.test", "ACME Shop", "Checkout error 502 with PayPal",
        phrases=("PayPal & a coupon code.", "10442, 10447, 10451"),
        quoted=("<p>", "&amp;", "&nbsp;"),  # not history here: markup must not leak into the post
    ),
    "attachments-non-ascii-names.eml": Customer(
        "eva.svobodova@firma.test", "Eva Svobodová", "Faktura č. 12 – nesouhlasí částka",
        phrases=("v příloze posílám fakturu č. 12, částka nesouhlasí s objednávkou.",),
        attachments=("logo.png", "Faktura č. 12.pdf"),
    ),
    "cc-colleagues.eml": Customer(
        "jane@acme.test", "Jane Doe", "Access to reporting for two colleagues",
        phrases=("Bob and Carol from our accounting team need access to the reporting module",),
        participants=(("bob@acme.test", "Bob Builder"), ("carol.kowalski@acme.test", "Kowalski, Carol")),
    ),
    "forwarded-chain.eml": Customer(
        "martin@firma.test", "Martin Sales", "Order 4711 never arrived",
        # a forwarded message is content, not quoted history: it stays
        phrases=("Can you look into this one?",
                 "your parcel with order 4711 was returned to the warehouse as undeliverable."),
    ),
    # Raw UTF-8 headers (RFC 6532) and an internationalized sender (RFC 6531), issue 20 §1-2
    "utf8-headers-thunderbird-smtputf8.eml": Customer(
        "zdenek.novak@firma.test", "Zdeněk Novák", "Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118",
        phrases=("místo 12 400 Kč je tam 124 000 Kč.",),
    ),
    "utf8-sender-internationalized-address.eml": Customer(
        "jiří@příklad.example", "Jiří Dvořák", "Nelze se přihlásit do portálu",
        phrases=("portál hlásí „neplatné heslo“.",),
    ),
    "legacy-8bit-koi8r-header-outlook-express.eml": Customer(
        "ivan.petrov@zavod.test", "Петров Иван", "Не работает выгрузка отчётов",
        phrases=("Выгрузка отчётов за ноябрь падает с ошибкой.",),
    ),
    "postfix_plain_thunderbird.eml": Customer(
        "petra.mala@firma.test", "Petra Malá", "Cannot download the November invoice",
        phrases=('returns "404 Not Found". Could you send the PDF by mail, please?',),
    ),
    "postfix_html_only_outlook.eml": Customer(
        "martin.horak@stavby.test", "Martin Horak", "Order 5521 arrived damaged",
        phrases=("order 5521 arrived today with a cracked lid on two of the three boxes.",),
        quoted=("<p", "MsoNormal"),
    ),
    "postfix_long_line.eml": Customer(
        "ops@exports.test", "Export Tool Admin", "Import rejects our order export",
        phrases=("order-0000;paid;shipped;CZK;1240.00 order-0001;paid;shipped;CZK;1240.00",),
    ),
    "utf8_headers_czech.eml": Customer(
        "zdenek.novak@firma.test", "Zdeněk Novák",
        "Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118 má špatnou částku",
        phrases=("místo 12 400 Kč je tam 124 000 Kč.",),
    ),
    "utf8_headers_german.eml": Customer(
        "juergen.groessmann@kunde.test", "Jürgen Größmann",
        "Rückfrage zur Lieferung: Größe der Türdichtung passt nicht (Bestellnr. 4711)",
        phrases=("die gelieferte Türdichtung ist zu groß.",),
    ),
    "utf8_headers_russian.eml": Customer(
        "a.smirnov@pochta.test", "Алексей Смирнов", "Не работает вход в личный кабинет после обновления пароля",
        phrases=("пишет «неверный логин».",),
    ),
    "utf8_sender_address.eml": Customer(
        "jiří@příklad.example", "Jiří Dvořák", "Dotaz k objednávce 7730",
        phrases=("Na webu je stále „zpracovává se“.",),
    ),
}

# Automatic mail: a case may be opened, but nothing automatic may answer it.
AUTOMATIC = ["outlook-auto-reply-out-of-office.eml", "mailing-list-post.eml"]

SEND_ORDER = [*CUSTOMERS, *AUTOMATIC, BOUNCE, MALFORMED]


def test_every_fixture_is_sent() -> None:
    assert sorted(SEND_ORDER) == sorted(p.name for p in EML_DIR.glob("*.eml"))


# --- the fixture files, read with the standard library only ----------------------------------

def _headers(name: str) -> email.message.EmailMessage:
    """Raw UTF-8 headers (RFC 6532) read as text, as an SMTPUTF8 client has them; legacy 8-bit
    ones (not UTF-8) only need their ASCII parts here."""
    raw = load_eml(name)
    return email.message_from_string(raw.decode("utf-8", "replace"), policy=email.policy.compat32)  # type: ignore[return-value]


def message_id(name: str) -> str:
    return str(_headers(name)["Message-ID"]).strip().strip("<>")


def envelope_sender(name: str) -> str:
    if name == BOUNCE:
        return ""
    return email.utils.parseaddr(str(_headers(name)["From"]))[1].lower()


def attachment_bytes(name: str) -> dict[str, bytes]:
    msg = email.message_from_bytes(load_eml(name), policy=email.policy.default)
    return {part.get_filename(): part.get_payload(decode=True)  # type: ignore[misc]
            for part in msg.walk() if part.get_filename()}


# --- one daemon per database, every fixture sent, the results kept ---------------------------

@dataclass
class Corpus:
    folder: Path
    send_errors: dict[str, str]  # fixture -> why smtplib raised or a recipient was refused
    cases: dict[int, dict[str, Any]]  # number -> `case show N --json`
    listed: list[dict[str, Any]]  # `case list --json`, at the end
    caught: list[Caught]  # what reached the sink
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # fixture -> cases before, after
    quarantine: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes
    alive_after_malformed: bool = False
    log: str = ""

    def opened_by(self, name: str) -> dict[str, Any] | None:
        """The case whose first post is this fixture's mail."""
        mid = message_id(name)
        found = [c for c in self.cases.values() if c["posts"] and c["posts"][0]["message_id"] == mid]
        assert len(found) <= 1, f"{name} opened {len(found)} cases"
        return found[0] if found else None

    def to(self, address: str) -> list[Caught]:
        return [c for c in self.caught if address.lower() in (r.lower() for r in c.rcpt_tos)]


def _smtp_answers(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            return s.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def _send(daemon: Daemon, name: str, errors: dict[str, str]) -> None:
    raw, sender = load_eml(name), envelope_sender(name)
    options = ["SMTPUTF8", "BODY=8BITMIME"] if not (sender.isascii() and raw.split(b"\r\n\r\n", 1)[0].isascii()) \
        else []  # as an MTA relays raw UTF-8 headers
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            refused = client.sendmail(sender, [MAILBOX], raw, mail_options=options)
    except smtplib.SMTPException as e:
        errors[name] = f"{type(e).__name__}: {e}"
    else:
        if refused:
            errors[name] = f"refused: {refused}"


def _acknowledged(caught: list[Caught], address: str, number: int) -> bool:
    return any(address in (r.lower() for r in c.rcpt_tos) and f"[#{number}]" in str(c.message["Subject"])
               for c in caught)


def run_corpus(database: Database, sink: Sink, folder: Path) -> Corpus:
    daemon = Daemon.with_config(folder, db_url=database.url, outbound_url=f"smtp://127.0.0.1:{sink.port}")
    daemon.start()
    try:
        errors: dict[str, str] = {}
        counts: dict[str, tuple[int, int]] = {}
        for name in SEND_ORDER:
            before = len(daemon.cases()) if name in (BOUNCE, MALFORMED) else 0
            _send(daemon, name, errors)
            if name in (BOUNCE, MALFORMED):
                counts[name] = (before, len(daemon.cases()))
        last_sent = time.monotonic()
        alive = daemon.proc is not None and daemon.proc.poll() is None and _smtp_answers(daemon.smtp_port)

        listed = daemon.cases()
        with ThreadPoolExecutor(8) as pool:
            cases = {c["number"]: c for c in pool.map(daemon.case, [c["number"] for c in listed])}
        corpus = Corpus(folder, errors, cases, listed, [], counts, alive_after_malformed=alive)

        expected_acks = [(exp.email, case["number"]) for name, exp in CUSTOMERS.items()
                         if (case := corpus.opened_by(name)) is not None]
        sink.wait_for(lambda _: all(_acknowledged(sink.caught, *ack) for ack in expected_acks), ACK_TIMEOUT)
        time.sleep(max(0.0, last_sent + QUIET_SECONDS - time.monotonic()))
        with sink.lock:
            corpus.caught = list(sink.caught)
    finally:
        daemon.stop()
        corpus_log = daemon.log()
    quarantine = folder / "data" / "quarantine"
    if quarantine.is_dir():
        corpus.quarantine = {p.name: p.read_bytes() for p in quarantine.iterdir()}
    corpus.log = corpus_log
    return corpus


_CORPUS: dict[str, Corpus | str] = {}  # database kind -> the run, or why it failed


@pytest.fixture
def corpus(database: Database, sink: Sink, tmp_path: Path) -> Corpus:
    """The corpus run on this database kind: done by the first test that asks, then shared."""
    if database.kind not in _CORPUS:
        try:
            _CORPUS[database.kind] = run_corpus(database, sink, tmp_path)
        except Exception as e:
            _CORPUS[database.kind] = f"{type(e).__name__}: {e}"
            raise
    result = _CORPUS[database.kind]
    if isinstance(result, str):
        pytest.fail(f"the corpus run on {database.kind} failed earlier: {result}")
    return result


# --- customers' mail: one case each, decoded, without history, acknowledged -------------------

CUSTOMER_NAMES = pytest.mark.parametrize("name", list(CUSTOMERS))


@CUSTOMER_NAMES
def test_customer_mail_opens_one_case(corpus: Corpus, name: str) -> None:
    exp = CUSTOMERS[name]
    assert name not in corpus.send_errors
    case = corpus.opened_by(name)
    assert case is not None, f"no case starts with {message_id(name)}:\n{corpus.log}"
    assert case["requester"] == {"email": exp.email, "name": exp.name}
    assert case["subject"] == exp.subject
    assert case["stage"] == "new" and case["queue"] == "support"
    assert [(p["email"], p["name"]) for p in case["participants"]] == list(exp.participants)
    assert [p["message_id"] for p in case["posts"]] == [message_id(name)]
    assert case["number"] in {c["number"] for c in corpus.listed}


@CUSTOMER_NAMES
def test_first_post_has_the_new_text_only(corpus: Corpus, name: str) -> None:
    exp = CUSTOMERS[name]
    case = corpus.opened_by(name)
    assert case is not None
    post = case["posts"][0]
    assert (post["visibility"], post["author"], post["source"]) == ("public", exp.email, "email")
    body = post["body"].replace("\r\n", "\n")
    for phrase in exp.phrases:
        assert phrase in body
    for history in exp.quoted:
        assert history not in body
    assert "\ufffd" not in body, "a charset was decoded wrongly"


@CUSTOMER_NAMES
def test_attachments_are_listed(corpus: Corpus, name: str) -> None:
    exp = CUSTOMERS[name]
    case = corpus.opened_by(name)
    assert case is not None
    data = attachment_bytes(name)
    expected = [(f, len(data[f]), hashlib.sha256(data[f]).hexdigest()) for f in exp.attachments]
    listed = case["posts"][0]["attachments"]
    assert [(a["filename"], a["size"], a["sha256"]) for a in listed] == expected


@CUSTOMER_NAMES
def test_requester_gets_an_acknowledgement(corpus: Corpus, name: str) -> None:
    exp = CUSTOMERS[name]
    case = corpus.opened_by(name)
    assert case is not None
    acks = [c for c in corpus.to(exp.email) if f"[#{case['number']}]" in str(c.message["Subject"])]
    assert len(acks) == 1, f"acknowledgements of case #{case['number']}: {len(acks)}\n{corpus.log}"
    ack = acks[0].message
    assert str(ack["Subject"]).startswith(f"[#{case['number']}] ")
    assert str(ack["In-Reply-To"]).strip("<>") == message_id(name)
    assert acks[0].mail_from.startswith("bounces+") and acks[0].mail_from.endswith("@" + MAILBOX.partition("@")[2])


def test_cc_participants_get_the_acknowledgement(corpus: Corpus) -> None:
    case = corpus.opened_by("cc-colleagues.eml")
    assert case is not None
    for address, _ in CUSTOMERS["cc-colleagues.eml"].participants:
        assert any(f"[#{case['number']}]" in str(c.message["Subject"]) for c in corpus.to(address)), address


# --- automatic mail, bounces, broken mail -----------------------------------------------------

@pytest.mark.parametrize("name", AUTOMATIC)
def test_automatic_mail_is_not_answered(corpus: Corpus, name: str) -> None:
    assert name not in corpus.send_errors
    sender = envelope_sender(name)
    # the sender may hear of the cases its own human mails opened, and of nothing else
    own_cases = {case["number"] for n, exp in CUSTOMERS.items()
                 if exp.email == sender and (case := corpus.opened_by(n)) is not None}
    other = [str(c.message["Subject"]) for c in corpus.to(sender)
             if not any(f"[#{n}]" in str(c.message["Subject"]) for n in own_cases)]
    assert other == []
    assert not [c for c in corpus.caught if message_id(name) in str(c.message["In-Reply-To"])]


def test_bounce_opens_no_case_and_is_not_answered(corpus: Corpus) -> None:
    assert BOUNCE not in corpus.send_errors
    before, after = corpus.counts[BOUNCE]
    assert after == before
    assert corpus.opened_by(BOUNCE) is None
    daemons = [c.rcpt_tos for c in corpus.caught
               if any(r.lower().startswith(("mailer-daemon@", "postmaster@")) for r in c.rcpt_tos)]
    assert daemons == []


def test_malformed_mail_is_kept_and_the_daemon_lives_on(corpus: Corpus) -> None:
    assert MALFORMED not in corpus.send_errors  # 250: smtplib raised nothing
    before, after = corpus.counts[MALFORMED]
    raw = load_eml(MALFORMED)
    kept = [n for n, data in corpus.quarantine.items() if n.endswith(".eml") and data.rstrip() == raw.rstrip()]
    if after == before:
        assert len(kept) == 1, f"neither a case nor quarantined: {sorted(corpus.quarantine)}"
        note = json.loads(corpus.quarantine[kept[0].removesuffix(".eml") + ".json"])
        assert note["reason"]
    else:
        assert after == before + 1
    assert corpus.alive_after_malformed
