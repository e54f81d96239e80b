"""The outbox worker: sends committed mail, retries temporary failures with backoff, and
records permanent ones (visible in the CLI). Runs on the daemon's event loop; database and
network calls run in threads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from maild.notify.transport import DeliveryError, Transport
from maild.store.outbox import claim_due, mark_failed, mark_sent, next_due_at

log = structlog.get_logger("maild.outbox")

BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
IDLE_POLL_SECONDS = 1.0  # mail queued by other processes (the CLI) waits at most this long


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, … capped at an hour."""
    return min(BACKOFF_FIRST * (2 ** max(attempts - 1, 0)), BACKOFF_MAX)


class OutboxWorker:
    def __init__(self, sessions: sessionmaker[Session], transport: Transport,
                 clock: Callable[[], datetime], max_attempts: int):
        self.sessions = sessions
        self.transport = transport
        self.clock = clock
        self.max_attempts = max_attempts
        self.wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                sent = await asyncio.to_thread(self.deliver_due)
            except Exception as e:  # the database may be briefly away; never die
                log.error("outbox pass failed", error=str(e))
                sent = 0
            if sent:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=await asyncio.to_thread(self._sleep_for))

    def _sleep_for(self) -> float:
        with self.sessions() as session:
            due = next_due_at(session)
        if due is None:
            return IDLE_POLL_SECONDS
        return max(0.05, min(IDLE_POLL_SECONDS, (due - self.clock()).total_seconds()))

    def deliver_due(self, limit: int = 20) -> int:
        """One pass: claim due mails, send them over one connection, record every result in one
        transaction. Returns how many were tried. A crash after sending and before recording
        sends those again once the claim's lease runs out: at least once, never lost; the
        stable Message-ID lets the receiving side see the repeat."""
        with self.sessions() as session, session.begin():
            claimed = [(r.id, r.mail_from, r.recipient, r.raw, r.attempts, r.message_id)
                       for r in claim_due(session, self.clock(), limit)]
        if not claimed:
            return 0
        results: list[tuple[int, DeliveryError | None, int]] = []
        with self.transport.batch():
            for row_id, mail_from, recipient, raw, attempts, message_id in claimed:
                try:
                    self.transport.send(mail_from, recipient, raw)
                except DeliveryError as e:
                    results.append((row_id, e, attempts))
                    log.warning("delivery failed", message_id=message_id, recipient=recipient, error=str(e),
                                permanent=e.permanent or attempts + 1 >= self.max_attempts, attempt=attempts + 1)
                    continue
                results.append((row_id, None, attempts))
                log.info("mail sent", message_id=message_id, recipient=recipient)
        now = self.clock()
        with self.sessions() as session, session.begin():
            mark_sent(session, [row_id for row_id, error, _ in results if error is None], now)
            for row_id, error, attempts in results:
                if error is not None:
                    permanent = error.permanent or attempts + 1 >= self.max_attempts
                    mark_failed(session, row_id, str(error), permanent=permanent, retry_at=now + backoff(attempts + 1))
        return len(claimed)
