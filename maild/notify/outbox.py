"""The outbox worker: builds and sends committed mail, retries temporary failures with backoff,
and records permanent ones (visible in the CLI). Runs on the daemon's event loop; database and
network calls run in threads.

A row holds what its mail needs as data; the worker renders its template and composes it just
before the send (notify.outgoing), with the templates of the runtime it is given, which SIGHUP
replaces. A mail that cannot be built (a template that fails, an attachment gone) fails alone,
with the error in `maild outbox list`; such rows go out again when the templates are read
again: at the worker's start and when the runtime changes (a reload).

Each send is noted right after it in a journal file of this process (one write, no fsync: it
outlives a killed process, not a power cut), which the next start records; the database gets
the sends of the last RECORD_EVERY_SECONDS in one transaction (one a send without a journal).
So a SIGKILL sends a mail twice only if it falls in the microseconds between the relay's 250
and that write. A result the database does not take is
kept in memory and recorded when it answers again, never sent again. Claimed
rows carry a lease a little longer than one send's timeout, renewed after every send and given
back on a clean stop or a pass cut short, so a mail a dead worker held waits one lease at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker

from maild.notify.outgoing import MailNotBuilt, build_mail
from maild.notify.render import SharedRenders
from maild.notify.transport import DeliveryError, Transport
from maild.runtime import Runtime, build_runtime
from maild.store.outbox import (
    Claimed,
    claim_due,
    hold_until,
    mark_failed,
    mark_sent,
    mark_sent_if_pending,
    mark_unbuilt,
    next_due_at,
    retry_unbuilt,
)
from maild.supervise import Incident, TaskHealth, describe

log = structlog.get_logger("maild.outbox")

BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
IDLE_POLL_SECONDS = 1.0  # mail queued by other processes (the CLI) waits at most this long
CLAIM_BATCH = 20
LEASE_MARGIN_SECONDS = 5.0  # a claim outlasts one send by this much: the send's record commits in it
RECORD_EVERY_SECONDS = 0.2  # with a journal, sends reach the database in one transaction this often
ORPHAN_CHECK_SECONDS = 30.0  # how often journals of dead processes (of this data_dir) are looked for


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, … capped at an hour."""
    return min(BACKOFF_FIRST * (2 ** max(attempts - 1, 0)), BACKOFF_MAX)


@dataclass(frozen=True)
class _Result:
    row_id: int
    message_id: str
    at: datetime
    attempts: int  # before this one
    error: DeliveryError | None
    unbuilt: str | None = None  # the mail could not be built: why (no send was tried)

    @property
    def sent(self) -> bool:
        return self.error is None and self.unbuilt is None


class SentJournal:
    """Sends not yet recorded in the database, one line each, in `outbox-sent.<pid>.<ns>.journal`
    under the data folder, flock'ed while its process lives. A journal whose lock can be taken
    belongs to a dead process: its lines are recorded (if still pending) and it is removed."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        # unique even where every start has the same pid (pid 1 in a container)
        self.path = folder / f"outbox-sent.{os.getpid()}.{time.time_ns()}.journal"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lines = 0

    def note(self, row: Claimed, at: datetime) -> None:
        line = f"{row.id}\t{row.message_id}\t{row.recipient}\t{at.isoformat()}\n"
        try:
            os.write(self.fd, line.encode("utf-8"))  # an internationalized recipient: read back as UTF-8
            self.lines += 1
        except OSError as e:  # a full disk: the database record follows anyway
            log.warning("outbox journal not written", error=describe(e), message_id=row.message_id)

    def clear(self) -> None:
        if self.lines:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            self.lines = 0

    def close(self, *, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def orphans(self) -> list[tuple[Path, int, list[tuple[int, str, str, datetime]]]]:
        """(path, locked fd, sends) of every journal whose process is gone."""
        found = []
        for path in sorted(self.folder.glob("outbox-sent.*.journal")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its process is alive
                os.close(fd)
                continue
            sends = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and parts[0].isdigit():
                    with contextlib.suppress(ValueError):
                        sends.append((int(parts[0]), parts[1], parts[2], datetime.fromisoformat(parts[3])))
            found.append((path, fd, sends))
        return found


class OutboxWorker:
    def __init__(self, sessions: sessionmaker[Session], transport: Transport,
                 clock: Callable[[], datetime], max_attempts: int, *, send_timeout: float = 30.0,
                 health: TaskHealth | None = None, journal_dir: Path | None = None,
                 runtime: Callable[[], Runtime] | None = None):
        """`send_timeout`: the transport's bound on one send; claims last a little longer.
        `journal_dir`: where sends are noted before they are recorded (the daemon's data folder).
        `runtime`: the daemon's current Runtime (its templates and attachments); without it, one
        built now from the transport's config, with every template read now."""
        self.sessions = sessions
        self.transport = transport
        self.clock = clock
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=send_timeout + LEASE_MARGIN_SECONDS)
        self.health = health or TaskHealth("outbox")
        self.incident = Incident(self.health, log, failing="outbox pass failed", recovered="outbox works again")
        self.wake = asyncio.Event()  # mail was committed: look now
        self._stop = asyncio.Event()
        self._stopping = False
        self._unrecorded: list[_Result] = []  # sent or failed, but the database did not take it yet
        self._unreleased: set[int] = set()  # claimed, not tried, not given back yet
        self.relay_problem: str | None = None  # why the last pass stopped early, if the relay was the cause
        self.journal = SentJournal(journal_dir) if journal_dir is not None else None
        self._orphans_checked = float("-inf")
        self.runtime = runtime or _own_runtime(transport, clock)
        self._templates_of: Runtime | None = None  # the runtime whose templates unbuilt rows last met

    def _renderer(self) -> tuple[Runtime | None, SharedRenders | None]:
        """This pass's runtime and renders; the first pass with a runtime (a start, a reload) sends
        the mails that could not be built before out again."""
        rt = self.runtime() if self.runtime is not None else None
        if rt is None:
            return None, None
        if rt is not self._templates_of:
            with self.sessions() as session, session.begin():
                again = retry_unbuilt(session, self.clock())
            if again:
                log.info("mails that could not be built are tried again with the templates read now", count=again)
            self._templates_of = rt
        return rt, SharedRenders(rt.renderer)

    def stop(self) -> None:
        """The pass under way ends after the send in flight (at most one send's timeout)."""
        self._stopping = True
        self._stop.set()
        self.wake.set()

    async def run(self) -> None:
        """Until stop(); never raises: a failing pass backs off (1 s … 30 s), and the incident is
        logged when it starts and when it ends."""
        while not self._stopping:
            self.wake.clear()  # a commit during the pass sets it again: the next pass follows at once
            try:
                tried = await asyncio.to_thread(self.deliver_due)
                if self.relay_problem is not None:
                    await self._pause(self.incident.failed(self.relay_problem))
                    continue
                self.incident.succeeded()
                if tried or self._stopping:
                    continue
                timeout = await asyncio.to_thread(self._sleep_for)
            except Exception as e:  # the database may be away: back off, never end
                await self._pause(self.incident.failed(e))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
        await asyncio.to_thread(self._last_flush)

    def _adopt_orphans(self) -> None:
        """Records the sends of journals left by killed processes, then removes them."""
        if self.journal is None or time.monotonic() - self._orphans_checked < ORPHAN_CHECK_SECONDS:
            return
        orphans = self.journal.orphans()
        try:
            sends = [s for _, _, found in orphans for s in found]
            if sends:
                with self.sessions() as session, session.begin():
                    marked = mark_sent_if_pending(session, sends)
                log.info("sends of a stopped process recorded from its journal", noted=len(sends), recorded=marked)
            for path, _, _ in orphans:
                path.unlink(missing_ok=True)
        finally:
            for _, fd, _ in orphans:
                os.close(fd)
        self._orphans_checked = time.monotonic()

    async def _pause(self, seconds: float) -> None:
        """Backoff: new mail does not cut it short (that would hammer what is failing), a stop does."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _sleep_for(self) -> float:
        with self.sessions() as session:
            due = next_due_at(session)
        if due is None:
            return IDLE_POLL_SECONDS
        return max(0.05, min(IDLE_POLL_SECONDS, (due - self.clock()).total_seconds()))

    def deliver_due(self, limit: int = CLAIM_BATCH) -> int:
        """One pass: claim due mails, send them over one connection, record each result right
        after its send. Returns how many were tried. The pass ends early on a stop and at the
        first failure of the relay itself (no answer in time, unreachable, 421 twice): the
        rows not tried go back uncharged, and `relay_problem` says why."""
        self.relay_problem = None
        self._flush()
        self._adopt_orphans()
        rt, renders = self._renderer()
        with self.sessions() as session, session.begin():
            claimed = claim_due(session, self.clock(), limit, self.lease)
        if not claimed:
            return 0
        held = [r.id for r in claimed]
        pending: list[_Result] = []  # sent or failed, not in the database yet
        recorded_at = time.monotonic()
        try:
            with self.transport.batch():
                for row in claimed:
                    if self._stopping:
                        break
                    held.remove(row.id)
                    result = self._send(row, rt, renders)
                    pending.append(result)
                    if self.journal is None or time.monotonic() - recorded_at >= RECORD_EVERY_SECONDS:
                        self._record(pending, held)
                        recorded_at = time.monotonic()
                    if result.error is not None and result.error.relay:
                        self.relay_problem = str(result.error)
                        break
                self._record(pending, held)
        finally:
            self._unrecorded.extend(pending)  # an error on its way out: kept for the next pass
            if held:
                self._give_back(held)
        return len(claimed) - len(held)

    def _build(self, row: Claimed, rt: Runtime | None, renders: SharedRenders | None) -> bytes:
        if row.raw is not None:
            return row.raw
        if rt is None or renders is None:
            raise MailNotBuilt("no templates: this outbox worker was given no runtime")
        return build_mail(row, renders, rt.attachment_store)

    def _send(self, row: Claimed, rt: Runtime | None = None, renders: SharedRenders | None = None) -> _Result:
        try:
            raw = self._build(row, rt, renders)
        except MailNotBuilt as e:
            log.error("mail not built, not sent", message_id=row.message_id, recipient=row.recipient,
                      case=row.case_number, template=row.kind, error=str(e))
            return _Result(row.id, row.message_id, self.clock(), row.attempts, None, unbuilt=str(e))
        try:
            self.transport.send(row.mail_from, row.recipient, raw)
        except DeliveryError as e:
            attempt = row.attempts + 1
            fields = {"message_id": row.message_id, "recipient": row.recipient, "error": str(e), "attempt": attempt}
            if e.relay:  # the relay's incident is logged once by run(); this is the mail's line
                log.info("delivery deferred", **fields)
            else:
                log.warning("delivery failed", permanent=e.permanent or attempt >= self.max_attempts, **fields)
            return _Result(row.id, row.message_id, self.clock(), row.attempts, e)
        at = self.clock()
        if self.journal is not None:
            self.journal.note(row, at)  # first: from here a crash must not send it again
        log.info("mail sent", message_id=row.message_id, recipient=row.recipient)
        return _Result(row.id, row.message_id, at, row.attempts, None)

    def _apply(self, session: Session, results: list[_Result]) -> None:
        sent = [r for r in results if r.sent]
        if sent:  # one UPDATE; sent_at is the last send's time (they lie RECORD_EVERY_SECONDS apart at most)
            mark_sent(session, [r.row_id for r in sent], sent[-1].at)
        for r in results:
            if r.unbuilt is not None:
                mark_unbuilt(session, r.row_id, r.unbuilt)
            elif r.error is not None:
                permanent = r.error.permanent or r.attempts + 1 >= self.max_attempts
                mark_failed(session, r.row_id, str(r.error), permanent=permanent,
                            retry_at=r.at + backoff(r.attempts + 1))

    def _record(self, pending: list[_Result], held: list[int]) -> None:
        """The pending results, and a renewed lease for the rows the pass still holds, in one
        transaction; if the database does not take it, the results wait in memory (and in the
        journal) and the pass ends."""
        if not pending:
            return
        try:
            with self.sessions() as session, session.begin():
                self._apply(session, pending)
                hold_until(session, held, pending[-1].at + self.lease)
        except Exception:
            self._unrecorded.extend(pending)
            pending.clear()
            raise
        pending.clear()
        if self.journal is not None and not self._unrecorded:
            self.journal.clear()

    def _give_back(self, row_ids: list[int]) -> None:
        """Claimed rows not tried: due again now, for any worker. Never raises (it runs while
        another error may be on its way out); the database away, they wait in memory."""
        self._unreleased.update(row_ids)
        with contextlib.suppress(Exception):
            self._flush()

    def _flush(self) -> None:
        """Records what the database did not take before; raises while it still does not."""
        if not self._unrecorded and not self._unreleased:
            return
        results, unreleased = list(self._unrecorded), sorted(self._unreleased)
        with self.sessions() as session, session.begin():
            self._apply(session, results)
            hold_until(session, unreleased, self.clock())
        del self._unrecorded[:len(results)]
        self._unreleased.difference_update(unreleased)
        if self.journal is not None and not self._unrecorded:
            self.journal.clear()
        if results:
            log.info("outbox results recorded late", count=len(results))

    def _last_flush(self) -> None:
        try:
            self._flush()
        except Exception as e:  # the journal keeps the sends; the next start records them
            log.warning("outbox results not recorded at stop; the next start records them from the journal",
                        error=describe(e), message_ids=[r.message_id for r in self._unrecorded if r.sent])
            if self.journal is not None:
                self.journal.close(remove=False)
            return
        if self.journal is not None:
            self.journal.close(remove=True)


def _own_runtime(transport: Transport, clock: Callable[[], datetime]) -> Callable[[], Runtime] | None:
    """A worker not given the daemon's runtime builds one from its transport's config (see
    notify.transport.make_transport), reading every template now: like the daemon's, it keeps
    the templates it read at start. None without a config (a test's transport)."""
    cfg = getattr(transport, "config", None)
    if cfg is None:
        return None
    rt = build_runtime(cfg, clock)
    rt.renderer.preload()
    return lambda: rt
