"""maild deployed as admins deploy it (docs/production-postfix.md): a real Postfix in front of it
hands it the support domain, and relays its outbound mail to the world (the sink). Customers
write through Postfix as real clients do; every mail must become one case with its text intact
and every acknowledgement must reach the sink once, byte-for-byte valid, through a Postfix that
refuses bare newlines (issue 20)."""

from __future__ import annotations

import email.policy
import hashlib
import re
import smtplib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import errors
from email.parser import HeaderParser
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import load_eml, require
from tests.support.daemon import Daemon, write_config
from tests.support.mails import mail, text_of, token_of, wait_count, wait_until
from tests.support.postfix import Postfix, postfix_problem, running_postfix
from tests.support.sink import Caught, Sink, free_port
from tests.unit.test_large_mail import PDF, thunderbird_with_attachments

SUPPORT = "support@example.com"
AGENTS = ("alice@example.com", "bob@example.com", "carol@example.com")
MAILD_MAX = 20_000_000
# below maild's limit with room for the headers Postfix adds (docs/production-postfix.md)
POSTFIX_MAX = MAILD_MAX - 1_000_000
OUTAGE_SECONDS = 30
UTF8 = ["SMTPUTF8", "BODY=8BITMIME"]
EXTRA = """
[protection]
auto_mail_per_day = 1000
"""


class World(Sink):
    """The sink standing in for the Internet, which also notes whether each mail came with
    SMTPUTF8 (raw UTF-8 headers need it, RFC 6531)."""

    def __init__(self) -> None:
        super().__init__(enable_SMTPUTF8=True)
        self.utf8: dict[int, bool] = {}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        with self.lock:
            if self.caught:
                self.utf8.setdefault(id(self.caught[-1]), bool(envelope.smtp_utf8))
        return answer


@dataclass
class Stack:
    desk: Daemon
    postfix: Postfix
    world: World

    def report(self) -> str:
        return f"--- Postfix maillog:\n{self.postfix.log()[-6000:]}\n--- maild log:\n{self.desk.log()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One maild behind one Postfix for the module (starting them is the slow part)."""
    problem = postfix_problem()
    require(problem is None, problem or "")
    folder = tmp_path_factory.mktemp("postfix-desk")
    world = World()
    world.start()
    maild_port = free_port()
    try:
        with running_postfix(maild_port=maild_port, relay_port=world.port, message_size_limit=POSTFIX_MAX,
                             own_transport=AGENTS) as pf:
            cfg = write_config(folder, db_url=f"sqlite:///{folder}/maild.db", smtp_port=maild_port,
                               outbound_url=f"smtp://127.0.0.1:{pf.port}", max_bytes=MAILD_MAX, extra=EXTRA)
            desk = Daemon(folder, cfg, maild_port)
            desk.start()
            try:
                yield Stack(desk, pf, world)
            finally:
                desk.stop()
    finally:
        world.stop()


# --- what customers do ---------------------------------------------------------------------------

def submit(pf: Postfix, raw: bytes, mail_from: str, rcpts: tuple[str, ...] = (SUPPORT,), utf8: bool = False,
           client: smtplib.SMTP | None = None) -> None:
    """Hands a mail to Postfix as a client's submission does (SMTPUTF8 when it needs it)."""
    opts = UTF8 if utf8 else []
    if client is not None:
        assert client.sendmail(mail_from, list(rcpts), raw, mail_options=opts) == {}
        return
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname="pc.client.test", timeout=60) as s:
        assert s.sendmail(mail_from, list(rcpts), raw, mail_options=opts) == {}


# --- what the sink must see ----------------------------------------------------------------------

def wire_problems(c: Caught, utf8: bool | None) -> list[str]:
    """Everything wrong with one mail as it reached the world: line ends, line lengths, header
    syntax (RFC 5322, RFC 6532 for raw UTF-8), and U+FFFD where text was garbled."""
    raw = c.raw
    found: list[str] = []
    if re.search(rb"\r(?!\n)", raw):
        found.append("bare CR")
    if re.search(rb"(?<!\r)\n", raw):
        found.append("bare LF")
    if not raw.endswith(b"\r\n"):
        found.append("no CRLF at the end")
    long = [len(line) for line in raw.split(b"\r\n") if len(line) > 998]
    if long:
        found.append(f"lines over 998 octets: {long}")
    head = raw.split(b"\r\n\r\n", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        return [*found, f"header section is not UTF-8: {e}"]
    if not text.isascii() and utf8 is False:
        found.append("raw UTF-8 in headers sent without SMTPUTF8")
    msg = HeaderParser(policy=email.policy.default).parsestr(text + "\r\n\r\n")
    found += [f"message: {d!r}" for d in msg.defects]
    for name, value in msg.items():
        # the stdlib parses by RFC 5322; a UTF-8 local part is right under RFC 6532 (SMTPUTF8)
        found += [f"{name}: {d!r}" for d in getattr(value, "defects", ())
                  if not (utf8 and isinstance(d, errors.NonASCIILocalPartDefect))]
        if "\ufffd" in str(value):
            found.append(f"{name} garbled: {value!r}")
    for part in c.message.walk():
        if part.get_content_maintype() == "text" and "\ufffd" in part.get_content():
            found.append(f"{part.get_content_type()} part garbled")
    return found


def assert_all_valid(stack: Stack, since: int) -> None:
    """Every mail that reached the world since the test's start (index `since`) is valid on the wire."""
    with stack.world.lock:
        caught = list(stack.world.caught[since:])
    bad = {f"{c.rcpt_tos} {c.message['Subject']!r}": p for c in caught
           if (p := wire_problems(c, stack.world.utf8.get(id(c))))}
    assert not bad, f"{bad}\n{stack.report()}"


def one_ack(stack: Stack, address: str, timeout: float = 30) -> Caught:
    return wait_count(stack.world, address, 1, timeout, explain=stack.report)[0]


def settle(stack: Stack) -> None:
    """Waits until Postfix has nothing left for anyone and maild's outbox nothing pending, so
    that counting at the sink counts everything."""
    wait_until(lambda: not stack.postfix.queued() and not stack.desk.cli_json("outbox", "list", "--status", "pending"),
               60, interval=0.5, explain=lambda: f"still queued: {stack.postfix.queued()}\n{stack.report()}")


def assert_nothing_lost(stack: Stack) -> None:
    """No outbound mail failed for good (a refused bare newline shows up here) and Postfix
    rejected or bounced nothing."""
    failed = stack.desk.cli_json("outbox", "list", "--status", "failed")
    assert failed == [], f"{failed}\n{stack.report()}"
    log = stack.postfix.log()
    for bad in ("bare <LF> received", "status=bounced", "breaking line", "fatal:", "panic:"):
        assert bad not in log, f"{bad!r} in the maillog\n{stack.report()}"


def cases_by_subject(desk: Daemon) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for c in desk.cases():
        found.setdefault(c["subject"], []).append(c)
    return found


def the_case(stack: Stack, subject: str, by_subject: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    matching = by_subject.get(subject, [])
    assert len(matching) == 1, f"{len(matching)} cases for {subject!r}: {sorted(by_subject)}\n{stack.report()}"
    return stack.desk.case(matching[0]["number"])


# --- the tests -----------------------------------------------------------------------------------

@dataclass
class Sent:
    fixture: str
    sender: str
    subject: str
    name: str
    text: str
    utf8: bool = False


CLIENT_MAILS = [
    Sent("postfix_plain_thunderbird.eml", "petra.mala@firma.test", "Cannot download the November invoice",
         "Petra Malá", 'returns "404 Not Found"'),
    Sent("postfix_html_only_outlook.eml", "martin.horak@stavby.test", "Order 5521 arrived damaged",
         "Martin Horak", "arrived today with a cracked lid"),
    Sent("utf8_headers_czech.eml", "zdenek.novak@firma.test",
         "Příliš žluťoučký kůň úpěl ďábelské ódy — faktura č. 2026/118 má špatnou částku",
         "Zdeněk Novák", "místo 12 400 Kč je tam 124 000 Kč", utf8=True),
    Sent("utf8_headers_russian.eml", "a.smirnov@pochta.test",
         "Не работает вход в личный кабинет после обновления пароля",
         "Алексей Смирнов", "не могу войти в личный кабинет", utf8=True),
    Sent("utf8_headers_german.eml", "juergen.groessmann@kunde.test",
         "Rückfrage zur Lieferung: Größe der Türdichtung passt nicht (Bestellnr. 4711)",
         "Jürgen Größmann", "nächstkleinere Größe schicken", utf8=True),
    Sent("utf8_sender_address.eml", "jiří@příklad.example", "Dotaz k objednávce 7730",
         "Jiří Dvořák", "„zpracovává se“", utf8=True),
    Sent("postfix_long_line.eml", "ops@exports.test", "Import rejects our order export", "Export Tool Admin",
         "END-OF-EXPORT"),
]


def forms(address: str) -> set[str]:
    """An address with its domain as written and in IDNA form: both name the same mailbox."""
    local, _, domain = address.partition("@")
    return {address.lower(), f"{local}@{domain.encode('idna').decode()}".lower()}


def acks_to(world: World, address: str) -> list[Caught]:
    """Mail to `address`, whichever form of its domain maild chose (IDNA where that suffices)."""
    with world.lock:
        return [c for c in world.caught if forms(address) & {r.lower() for r in c.rcpt_tos}]


def test_client_mail_through_postfix_becomes_cases_and_acknowledgements(stack: Stack) -> None:
    since = len(stack.world.caught)
    big_pdf = PDF * 9  # 5.4 MB
    for s in CLIENT_MAILS:
        submit(stack.postfix, load_eml(s.fixture), s.sender, utf8=s.utf8)
    submit(stack.postfix, thunderbird_with_attachments(pdf=big_pdf), "tereza@firma.test")

    senders = [s.sender for s in CLIENT_MAILS] + ["tereza@firma.test"]
    wait_until(lambda: all(acks_to(stack.world, a) for a in senders), 60, interval=0.2, explain=stack.report)
    settle(stack)
    by_subject = cases_by_subject(stack.desk)

    for s in CLIENT_MAILS:
        case = the_case(stack, s.subject, by_subject)
        assert case["requester"]["name"] == s.name, f"{s.fixture}: {case['requester']}\n{stack.report()}"
        assert case["requester"]["email"].lower() in forms(s.sender), case["requester"]
        (post,) = case["posts"]
        assert s.text in post["body"], f"{s.fixture}: {post['body']!r}"
        acks = acks_to(stack.world, s.sender)
        assert len(acks) == 1, f"{s.fixture}: {len(acks)} acknowledgements\n{stack.report()}"
        assert s.subject in str(acks[0].message["Subject"]), acks[0].message["Subject"]
        assert token_of(acks[0])

    long_line = next(line for line in load_eml("postfix_long_line.eml").decode().split("\r\n") if len(line) == 2000)
    (post,) = the_case(stack, "Import rejects our order export", by_subject)["posts"]
    assert long_line in post["body"]  # one line, as sent: Postfix broke nothing on its way to maild

    (post,) = the_case(stack, "Výpis účtu", by_subject)["posts"]
    pdf = next(a for a in post["attachments"] if a["filename"] == "výpis-účtu.pdf")
    assert pdf["size"] == len(big_pdf) and pdf["sha256"] == hashlib.sha256(big_pdf).hexdigest()
    assert len(acks_to(stack.world, "tereza@firma.test")) == 1

    # the team's agents live on the support domain too: their notifications reach them (their own
    # transport entries) instead of looping back into maild, which would mark them bouncing
    for agent in ("alice@example.com", "bob@example.com"):
        assert len(stack.world.to(agent)) >= len(CLIENT_MAILS) + 1, f"{agent}\n{stack.report()}"
    assert stack.desk.cli_json("contact", "list", "--state", "bouncing") == []
    assert not any(c["requester"]["email"] in AGENTS for cs in by_subject.values() for c in cs)
    assert_nothing_lost(stack)
    assert_all_valid(stack, since)


def test_customer_reply_threads_by_the_token_of_the_acknowledgement(stack: Stack) -> None:
    since = len(stack.world.caught)
    customer = "eva.kralova@firma.test"
    subject = f"Heslo nefunguje {uuid.uuid4().hex[:6]}"
    submit(stack.postfix, mail(f"Eva Králová <{customer}>", SUPPORT, subject, "Dobrý den,\nheslo nefunguje."),
           customer, utf8=True)
    ack = one_ack(stack, customer)
    token = token_of(ack)
    # a webmail reply that lost In-Reply-To and References: only the token in To can thread it
    reply = mail(f"Eva Králová <{customer}>", token, f"Re: {ack.message['Subject']}",
                 "Už to funguje, díky. Ještě dotaz: jde změnit i PIN?")
    submit(stack.postfix, reply, customer, rcpts=(token,), utf8=True)


    def the_reply_case() -> dict[str, Any]:
        (found,) = cases_by_subject(stack.desk)[subject]
        return stack.desk.case(found["number"])

    wait_until(lambda: len(the_reply_case()["posts"]) >= 2, 30, interval=0.5, explain=stack.report)
    case = the_reply_case()
    assert [p["author"] for p in case["posts"]] == [customer, customer], f"{case['posts']}\n{stack.report()}"
    assert "jde změnit i PIN?" in case["posts"][1]["body"]
    settle(stack)
    assert len(cases_by_subject(stack.desk)[subject]) == 1
    assert len(acks_to(stack.world, customer)) == 1
    assert_nothing_lost(stack)
    assert_all_valid(stack, since)


def test_burst_of_fifty_through_postfix(stack: Stack) -> None:
    since = len(stack.world.caught)
    run = uuid.uuid4().hex[:6]
    customers = [f"burst{i:02d}-{run}@kunde{i % 7}.test" for i in range(50)]
    with smtplib.SMTP("127.0.0.1", stack.postfix.port, local_hostname="pc.client.test", timeout=60) as client:
        for i, c in enumerate(customers):
            submit(stack.postfix, mail(f"Kunde {i} <{c}>", SUPPORT, f"Störung {run} Nr. {i}",
                                       f"Meldung {i}: der Zähler zeigt falsche Werte."), c, utf8=True, client=client)
    wait_until(lambda: all(stack.world.to(c) for c in customers), 120, interval=0.5, explain=stack.report)
    settle(stack)
    by_subject = cases_by_subject(stack.desk)
    for i, c in enumerate(customers):
        matching = by_subject.get(f"Störung {run} Nr. {i}", [])
        assert [m["requester"]["email"] for m in matching] == [c], f"{c}: {matching}\n{stack.report()}"
        assert len(stack.world.to(c)) == 1, f"{c}: {len(stack.world.to(c))} acknowledgements"
    assert_nothing_lost(stack)
    assert_all_valid(stack, since)


def test_maild_down_for_thirty_seconds_then_a_queue_flush(stack: Stack) -> None:
    since = len(stack.world.caught)
    run = uuid.uuid4().hex[:6]
    before = f"before-{run}@firma.test"
    submit(stack.postfix, mail(before, SUPPORT, f"Before the outage {run}", "Still up."), before)
    one_ack(stack, before)

    assert stack.desk.stop() == 0, stack.desk.log()
    down_since = time.monotonic()
    customers = [f"outage{i}-{run}@firma.test" for i in range(6)]
    for i, c in enumerate(customers):
        body = f"Během výpadku č. {i}: objednávka se neuložila.\nŘádek dva."
        submit(stack.postfix, mail(f"Zákazník {i} <{c}>", SUPPORT, f"Výpadek {run} č. {i}", body), c, utf8=True)
    # Postfix holds them, deferred: maild refuses connections

    def deferred() -> list[dict[str, Any]]:
        held = [q for q in stack.postfix.queued() if q["sender"] in customers]
        return held if len(held) == len(customers) and all(q["queue_name"] == "deferred" for q in held) else []

    held = wait_until(deferred, 20, interval=0.2, explain=stack.report)
    assert all("refused" in r.get("delay_reason", "").lower() for q in held for r in q["recipients"]), held
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))

    stack.desk.start()
    stack.postfix.flush()
    wait_until(lambda: all(stack.world.to(c) for c in customers), 60, interval=0.2, explain=stack.report)
    settle(stack)
    by_subject = cases_by_subject(stack.desk)
    for i, c in enumerate(customers):
        case = the_case(stack, f"Výpadek {run} č. {i}", by_subject)
        assert case["requester"] == {"email": c, "name": f"Zákazník {i}"}
        (post,) = case["posts"]
        assert f"Během výpadku č. {i}: objednávka se neuložila.\nŘádek dva." in post["body"]
        acks = stack.world.to(c)
        assert len(acks) == 1, f"{c}: {len(acks)} acknowledgements"
        assert f"Výpadek {run} č. {i}" in str(acks[0].message["Subject"])
        assert "Během výpadku" not in text_of(acks[0])  # an acknowledgement never quotes the sender
    assert len(stack.world.to(before)) == 1
    assert_nothing_lost(stack)
    assert_all_valid(stack, since)


def test_unknown_address_at_the_support_domain_is_refused_during_the_dialogue(stack: Stack) -> None:
    """reject_unverified_recipient: Postfix asks maild before it accepts, so nobody@ gets a 550
    at RCPT, not a bounce later to a sender address that may be forged (backscatter)."""
    sender = f"someone-{uuid.uuid4().hex[:6]}@firma.test"
    with (smtplib.SMTP("127.0.0.1", stack.postfix.port, local_hostname="pc.client.test", timeout=60) as s,
          pytest.raises(smtplib.SMTPRecipientsRefused) as refused):
        s.sendmail(sender, ["nobody@example.com"], mail(sender, "nobody@example.com", "Hi", "Hello?"))
    ((code, text),) = refused.value.recipients.values()
    assert code == 550, text
    assert b"nobody@example.com" in text
    settle(stack)
    assert stack.world.to(sender) == []


def test_mail_over_postfix_size_limit_is_refused_before_it_is_taken(stack: Stack) -> None:
    """Postfix's message_size_limit is below maild's max_message_bytes: too big a mail is
    refused to the sender's face (552 5.3.4), never accepted by Postfix and then bounced."""
    sender = f"big-{uuid.uuid4().hex[:6]}@firma.test"
    raw = mail(sender, SUPPORT, "Huge", "x" * 70 + ("\n" + "y" * 76) * (POSTFIX_MAX // 78 + 10))
    with (smtplib.SMTP("127.0.0.1", stack.postfix.port, local_hostname="pc.client.test", timeout=60) as s,
          pytest.raises(smtplib.SMTPSenderRefused) as refused):
        s.sendmail(sender, [SUPPORT], raw)
    assert refused.value.smtp_code == 552 and b"5.3.4" in refused.value.smtp_error, refused.value
    settle(stack)
    assert stack.world.to(sender) == []
