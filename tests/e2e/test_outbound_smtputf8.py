"""Mail to internationalized addresses (RFC 6531, issue 20 §2) and the EHLO name (§4), composed by
maild and sent by its outbox worker to real SMTP servers: an ASCII local part travels in IDNA
form without SMTPUTF8, a UTF-8 local part with SMTPUTF8 where the relay offers it, and fails
permanently with a reason a person can act on where it does not, costing no other mail."""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine

from maild.config import load_config
from maild.notify.compose import compose_mail, new_message_id
from maild.notify.transport import MaildirTransport, SmtpTransport, make_transport
from maild.store.db import make_sessionmaker
from maild.store.outbox import enqueue_mail
from tests.e2e.test_outbox_delivery import T0, Clock, rows, worker
from tests.support.daemon import write_config
from tests.support.sink import Sink, free_port

IDN_ASCII_LOCAL = "jiri@příklad.example"
IDN_ASCII_LOCAL_WIRE = "jiri@xn--pklad-zsa96e.example"
UTF8_LOCAL = "jiří@příklad.example"
DESK = "support@example.com"


class RecordingSink(Sink):
    """A sink that also keeps each session's EHLO name and each mail's SMTPUTF8 flag and MAIL
    options, as the relay saw them."""

    def __init__(self, **smtp_options: object) -> None:
        super().__init__(**smtp_options)
        self.ehlo_names: list[str] = []
        self.envelopes: list[tuple[str, list[str], bool, list[str]]] = []  # from, to, SMTPUTF8, options
        self._record = threading.Lock()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        with self._record:
            self.ehlo_names.append(hostname)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._record:
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos), bool(envelope.smtp_utf8),
                                   [o.upper() for o in envelope.mail_options]))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def relay(*, smtputf8: bool) -> RecordingSink:
    sink = RecordingSink(enable_SMTPUTF8=smtputf8)
    sink.start()
    return sink


def ack(to: str, name: str = "Jiří Novák", message_id: str = "ack-1@support.example.com") -> bytes:
    """An acknowledgement to `to` as maild composes it."""
    return compose_mail(mail_from=DESK, from_name="Example Support", to=to, to_name=name,
                        reply_to="support+c1tokentokentoken@example.com", subject="[#1] Tiskárna nefunguje",
                        text="Dobrý den,\nřešíme to.\n", html="<p>Dobrý den</p>", message_id=message_id,
                        in_reply_to=None, references=[], now=T0, auto_submitted="auto-replied")


def queue(engine: Engine, to: str) -> bytes:
    """An acknowledgement queued to `to`."""
    message_id = new_message_id("support.example.com")
    raw = ack(to, message_id=message_id)
    with make_sessionmaker(engine)() as s, s.begin():
        enqueue_mail(s, case_number=None, message_id=message_id, kind="case_created", mail_from=DESK, recipient=to,
                     raw=raw, automatic=True, now=T0)
    return raw


def test_an_ascii_local_part_at_an_internationalized_domain_goes_in_idna_form(engine: Engine, clock: Clock) -> None:
    sink = relay(smtputf8=False)  # nothing about this mail needs SMTPUTF8
    try:
        raw = queue(engine, IDN_ASCII_LOCAL)
        assert raw.isascii()
        worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock).deliver_due()
        (row,) = rows(engine)
        assert (row.status, row.last_error) == ("sent", None)
        assert sink.envelopes == [(DESK, [IDN_ASCII_LOCAL_WIRE], False, ["SIZE=" + str(len(raw))])]
        (caught,) = sink.caught
        assert caught.raw == raw
        assert [a.addr_spec for a in caught.message["To"].addresses] == [IDN_ASCII_LOCAL_WIRE]
    finally:
        sink.stop()


def test_a_utf8_local_part_goes_with_smtputf8_where_the_relay_offers_it(engine: Engine, clock: Clock) -> None:
    sink = relay(smtputf8=True)
    try:
        raw = queue(engine, UTF8_LOCAL)
        worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock).deliver_due()
        (row,) = rows(engine)
        assert (row.status, row.last_error) == ("sent", None)
        ((mail_from, rcpt_tos, smtputf8, options),) = sink.envelopes
        assert (mail_from, rcpt_tos, smtputf8) == (DESK, [UTF8_LOCAL], True)
        assert "SMTPUTF8" in options and "BODY=8BITMIME" in options
        (caught,) = sink.caught
        assert caught.raw == raw
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert f"\r\nTo: =?utf-8?b?SmnFmcOtIE5vdsOhaw==?= <{UTF8_LOCAL}>\r\n".encode() in head  # RFC 6532
        msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)
        (to,) = msg["To"].addresses
        assert (to.display_name, to.addr_spec) == ("Jiří Novák", UTF8_LOCAL)
        assert str(msg["Subject"]) == "[#1] Tiskárna nefunguje"
    finally:
        sink.stop()


def test_without_smtputf8_at_the_relay_that_mail_fails_for_good_and_the_others_go(engine: Engine, clock: Clock,
                                                                                  tmp_path: Path) -> None:
    sink = relay(smtputf8=False)
    try:
        for to in ("jane@acme.test", UTF8_LOCAL, IDN_ASCII_LOCAL, "joe@acme.test"):
            queue(engine, to)
        w = worker(engine, SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5), clock)
        assert w.deliver_due() == 4
        assert sink.connections == 1  # the refusal happened before MAIL: the connection served the rest
        assert [e[1] for e in sink.envelopes] == [["jane@acme.test"], [IDN_ASCII_LOCAL_WIRE], ["joe@acme.test"]]
        states = {r.recipient: (r.status, r.attempts, r.last_error) for r in rows(engine)}
        reason = (f"relay 127.0.0.1:{sink.port} does not offer SMTPUTF8, needed for {UTF8_LOCAL} "
                  "(an internationalized address)")
        assert states[UTF8_LOCAL] == ("failed", 1, reason)
        assert {states[a][0] for a in ("jane@acme.test", "joe@acme.test", IDN_ASCII_LOCAL)} == {"sent"}
        assert w.deliver_due() == 0  # failed for good: not tried again
    finally:
        sink.stop()
    if engine.dialect.name == "sqlite":  # what an admin reads (the CLI on the same database)
        cfg = write_config(tmp_path, db_url=str(engine.url), outbound_url="smtp://127.0.0.1:2526",
                           smtp_port=free_port())
        out = subprocess.run([sys.executable, "-m", "maild", "outbox", "list", "--status", "failed", "--config",
                              str(cfg)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        (line,) = out.stdout.splitlines()
        assert UTF8_LOCAL in line and f"(1 attempts: {reason})" in line


def test_the_maildir_transport_writes_such_mail_with_safe_envelope_lines(engine: Engine, clock: Clock,
                                                                          tmp_path: Path) -> None:
    raws = [queue(engine, IDN_ASCII_LOCAL), queue(engine, UTF8_LOCAL)]
    worker(engine, MaildirTransport(tmp_path / "outbox"), clock).deliver_due()
    files = sorted((tmp_path / "outbox" / "new").iterdir(), key=lambda p: p.name)
    heads = {f.read_bytes().split(b"\r\n", 2)[1]: f.read_bytes() for f in files}
    assert heads[f"Delivered-To: {IDN_ASCII_LOCAL_WIRE}".encode()].endswith(raws[0])
    assert heads[f"Delivered-To: {UTF8_LOCAL}".encode()].endswith(raws[1])
    assert all(f.read_bytes().startswith(f"Return-Path: <{DESK}>\r\n".encode()) for f in files)


def test_maild_greets_its_relay_with_its_configured_hostname(tmp_path: Path, engine: Engine, clock: Clock) -> None:
    """Issue 20 §4: `[server] hostname`, not smtplib's default (this machine's FQDN)."""
    sink = relay(smtputf8=True)
    try:
        cfg = load_config(write_config(tmp_path, db_url="sqlite:///unused.db",
                                       outbound_url=f"smtp://127.0.0.1:{sink.port}", smtp_port=free_port()))
        assert cfg.server.hostname == "support.example.com"
        queue(engine, "jane@acme.test")
        worker(engine, make_transport(cfg), clock).deliver_due()
        assert rows(engine)[0].status == "sent"
        assert sink.ehlo_names == ["support.example.com"]
    finally:
        sink.stop()


@pytest.mark.parametrize(("hostname", "greeting"), [
    ("desk.příklad.example", "desk.xn--pklad-zsa96e.example"), ("192.0.2.7", "[192.0.2.7]"),
    ("2001:db8::7", "[IPv6:2001:db8::7]")])
def test_the_ehlo_name_is_a_domain_in_idna_form_or_an_address_literal(hostname: str, greeting: str) -> None:
    sink = relay(smtputf8=False)
    try:
        transport = SmtpTransport(f"smtp://127.0.0.1:{sink.port}", None, 5, local_hostname=hostname)
        transport.send(DESK, "jane@acme.test", ack("jane@acme.test"))
        assert sink.ehlo_names == [greeting]
    finally:
        sink.stop()


def test_after_starttls_the_second_ehlo_uses_the_name_too(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = RecordingSink(tls_context=server_ctx, require_starttls=True)
    sink.start()
    try:
        transport = SmtpTransport(f"smtp+starttls://127.0.0.1:{sink.port}", None, 5, ca_file,
                                  local_hostname="support.example.com")
        transport.send(DESK, "jane@acme.test", ack("jane@acme.test"))
        assert sink.ehlo_names == ["support.example.com", "support.example.com"] and len(sink.caught) == 1
    finally:
        sink.stop()

