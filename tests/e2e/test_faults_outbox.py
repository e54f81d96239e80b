"""The outgoing side under faults, as an operator meets them, over real sockets: the database
refusing connections for a while, a storm of SIGKILLs during a burst of mail, and a relay that
answers 421, then hangs, then recovers. Mail is counted at the sink: nothing lost, nothing sent
twice (beyond the SIGKILL target of 1 in 1,000), nothing waiting on a lease long after a restart,
and the daemon's log holds no traceback."""

from __future__ import annotations

import json
import os
import random
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Database
from tests.support.daemon import Daemon
from tests.support.mails import mail
from tests.support.sink import Sink
from tests.support.tcp_proxy import TcpProxy

SEND_TIMEOUT = 2  # [outbound] timeout_seconds: a claim's lease is this plus 5 s


def make_desk(folder: Path, db_url: str, relay_port: int, timeout: float = SEND_TIMEOUT) -> Daemon:
    d = Daemon.with_config(folder, db_url, f"smtp://127.0.0.1:{relay_port}")
    assert d.config is not None
    cfg = d.config.read_text()
    d.config.write_text(cfg.replace("[outbound]\n", f"[outbound]\ntimeout_seconds = {timeout}\n", 1))
    return d


def customer(i: int) -> str:
    return f"customer{i:04d}@acme.test"


def events(d: Daemon, event: str) -> list[dict]:
    out = []
    for line in d.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append(rec)
    return out


def assert_no_traceback(d: Daemon) -> None:
    log = d.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


class Customers:
    """Threads that write new cases as a sending MTA does: each mail is retried (4xx, a refused
    or cut connection) until it is answered 250."""

    def __init__(self, d: Daemon, numbers: range, threads: int = 4, pause: float = 0.0):
        self.d = d
        self.numbers = list(numbers)
        self.accepted: list[int] = []
        self.retries = 0
        self.last_accepted = 0.0
        self.pause = pause
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(self.numbers[k::threads],), daemon=True)
                         for k in range(threads)]

    def start(self) -> Customers:
        for t in self._threads:
            t.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0))
        assert not any(t.is_alive() for t in self._threads), f"only {len(self.accepted)} accepted"

    def _run(self, numbers: list[int]) -> None:
        for i in numbers:
            raw = mail(customer(i), "support@example.com", f"Order {i} did not arrive", "Where is it?",
                       msgid=f"order-{i}@acme.test")
            while True:
                try:
                    with smtplib.SMTP("127.0.0.1", self.d.smtp_port, timeout=30) as s:
                        s.sendmail(customer(i), ["support@example.com"], raw)
                    break
                except (OSError, smtplib.SMTPException):
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.2)
            with self._lock:
                self.accepted.append(i)
                self.last_accepted = time.monotonic()
            if self.pause:
                time.sleep(self.pause)


def deliveries(sink: Sink) -> Counter[tuple[str, str]]:
    """(Message-ID, recipient) of every mail the sink took: a count above 1 is a duplicate."""
    with sink.lock:
        return Counter((str(c.message["Message-ID"]), r.lower()) for c in sink.caught for r in c.rcpt_tos)


def wait_acks(sink: Sink, numbers: range, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    want = {customer(i) for i in numbers}
    while time.monotonic() < deadline:
        if want <= {r for _, r in deliveries(sink)}:
            return True
        time.sleep(0.1)
    return False


def outbox_rows(db_url: str) -> list[tuple[str, str, str, int]]:
    """(Message-ID, recipient, status, attempts) of every outbox row, read straight from the database."""
    eng = create_engine(db_url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT message_id, recipient, status, attempts FROM outbox ORDER BY id"))]  # type: ignore[misc]
    finally:
        eng.dispose()


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(5432)
    proxy.start()
    yield proxy
    proxy.refuse()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_outbox_resumes_by_itself_after_postgresql_refuses_connections(
        database: Database, sink: Sink, tmp_path: Path, postgres_proxy: TcpProxy) -> None:
    url = database.url.replace("127.0.0.1:5432", f"127.0.0.1:{postgres_proxy.port}")
    assert url != database.url
    d = make_desk(tmp_path, url, sink.port)
    d.start()
    try:
        load = Customers(d, range(60), threads=3, pause=0.05).start()
        time.sleep(1.0)
        postgres_proxy.refuse()  # connection refused, live connections cut, for three seconds
        time.sleep(3.0)
        postgres_proxy.restore()
        load.join(60)
        assert wait_acks(sink, range(60), 30), f"acks for {len({r for _, r in deliveries(sink)})} addresses"
        time.sleep(1.5)  # anything sent twice would be here by now
        sent = deliveries(sink)
        acks = Counter(r for (_, r), n in sent.items() for _ in range(n) if r.startswith("customer"))
        print(f"\nPostgreSQL outage: {len(load.accepted)} accepted after {load.retries} retries, "
              f"{sum(sent.values())} mails at the sink, {sum(n - 1 for n in sent.values())} duplicates")
        assert acks == {customer(i): 1 for i in range(60)}
        assert all(n == 1 for n in sent.values()), [k for k, n in sent.items() if n > 1]
        assert len(events(d, "outbox pass failed")) == 1  # one incident, one line: not one per attempt
        assert len(events(d, "outbox works again")) == 1
        assert d.proc is not None and d.proc.poll() is None
    finally:
        assert d.stop() == 0
    assert_no_traceback(d)


def test_sigkill_storm_loses_nothing_and_sends_almost_nothing_twice(database: Database, sink: Sink,
                                                                     tmp_path: Path) -> None:
    total, kills = 400, 5
    d = make_desk(tmp_path, database.url, sink.port)
    d.start()
    last_start = time.monotonic()
    # about 20 new cases a second, each mailed to the customer and two agents: a busy desk whose
    # outbox keeps up, as in production (an outbox always behind would be inside a send at every kill)
    load = Customers(d, range(total), threads=4, pause=0.15).start()
    try:
        for k in range(1, kills + 1):
            while len(load.accepted) < total * k // (kills + 1):
                time.sleep(0.02)
            time.sleep(random.uniform(0, 0.3))  # not in step with the commits the threshold follows
            assert d.proc is not None
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.stop()  # waits for the whole group to be gone
            d.start()
            last_start = time.monotonic()
        load.join(120)
        since = max(last_start, load.last_accepted)  # a mail accepted after the last restart is late from then
        delivered = wait_acks(sink, range(total), 30 - (time.monotonic() - since))
        late = time.monotonic() - since
        time.sleep(1.5)
        sent = deliveries(sink)
        rows = outbox_rows(database.url)
        expected = {(m if m.startswith("<") else f"<{m}>", r) for m, r, _, _ in rows}
        lost = [k for k in expected if k not in sent]
        duplicates = sum(n - 1 for n in sent.values())
        print(f"\nSIGKILL storm on {database.kind}: {kills} kills, {len(load.accepted)} mails accepted "
              f"({load.retries} retries), {len(rows)} outbox rows, {sum(sent.values())} mails at the sink, "
              f"{len(lost)} lost, {duplicates} duplicates, all delivered {late:.1f} s after the last restart or mail")
        assert delivered, f"not every acknowledgement within 30 s of the last restart: {len(lost)} missing"
        assert lost == [] and all(status == "sent" for _, _, status, _ in rows)
        assert set(sent) == expected  # the sink got exactly the outbox's mails
        assert duplicates * 1000 <= max(sum(sent.values()), 1000), duplicates
    finally:
        d.stop()
    assert_no_traceback(d)


class FlakyRelay(Sink):
    """A relay that answers 421 at RCPT while `busy` (smtplib then closes the connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self.refusals = 0

    async def handle_RCPT(self, server: object, session: object, envelope: object, address: str,
                          rcpt_options: list[str]) -> str:
        if self.busy:
            self.refusals += 1
            return "421 4.3.2 too busy, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)  # type: ignore[arg-type]


def hung_up(d: Daemon) -> bool:
    """The outbox has met the hanging relay and given that send up after its timeout."""
    return any(f"no answer within {SEND_TIMEOUT} s" in e["error"] for e in events(d, "delivery deferred"))


def test_relay_that_refuses_then_hangs_then_recovers(database: Database, tmp_path: Path) -> None:
    relay = FlakyRelay()
    relay.start()
    proxy = TcpProxy(relay.port)
    proxy.start()
    d = make_desk(tmp_path, database.url, proxy.port)
    d.start()
    try:
        relay.busy = True
        Customers(d, range(0, 6), threads=1).start().join(30)
        time.sleep(3)
        assert relay.refusals >= 2 and relay.caught == []

        proxy.hang()  # accepts, never answers
        proxy.cut()  # a connection of the busy spell must not carry mail past the hang
        relay.busy = False
        Customers(d, range(6, 10), threads=1).start().join(30)
        # the outbox may still be backing off after the 421s: wait for its first try into the hang
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not hung_up(d):
            time.sleep(0.2)
        assert relay.caught == []
        assert d.proc is not None
        started = time.monotonic()
        os.killpg(d.proc.pid, signal.SIGTERM)
        d.proc.wait(60)
        took = time.monotonic() - started
        assert d.proc.returncode == 0
        assert took < SEND_TIMEOUT + 8, took  # one send's timeout and the drain, well within TimeoutStopSec=60
        assert hung_up(d), events(d, "delivery deferred")
        assert len(events(d, "outbox pass failed")) == 1  # 421s and the hang: one incident

        proxy.restore()
        d.start()
        # a mail charged an attempt waits its backoff (30 s); the rest go at once
        assert wait_acks(relay, range(10), 60), sorted({r for _, r in deliveries(relay)})
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(s != "sent" for _, _, s, _ in outbox_rows(database.url)):
            time.sleep(0.5)
        time.sleep(1.5)
        sent = deliveries(relay)
        rows = outbox_rows(database.url)
        acks = Counter(r for (_, r), n in sent.items() for _ in range(n) if r.startswith("customer"))
        assert acks == {customer(i): 1 for i in range(10)}
        assert all(status == "sent" for _, _, status, _ in rows), rows
        assert set(sent) == {(m if m.startswith("<") else f"<{m}>", r) for m, r, _, _ in rows}
        assert all(n == 1 for n in sent.values()), [k for k, n in sent.items() if n > 1]
        # a 421 costs a mail one attempt at most (tried again on a new connection first), a hang one
        assert max(attempts for _, _, _, attempts in rows) <= 2, rows
    finally:
        d.stop()
        proxy.refuse()
        relay.stop()
    assert_no_traceback(d)
