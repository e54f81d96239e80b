"""The database writer: one thread, group commit.

Jobs queue up while a transaction commits; the next transaction takes all of them and commits
once, and a job that fails is rolled back alone (`_commit_batch`). Every job's caller hears
its result only after that commit, so a 250 never precedes durability, while one fsync
serves many mails.

The thread must outlive anything a job or the database does to it: a failure is the result
of the job it belongs to, a failed commit is retried job by job, a conflict with another
writer on the same database (two daemons storing the same mail) is run again alone, and a
bug outside any job fails its batch, not the thread. If the thread ends anyway, a
supervisor starts it again; `health` says how it is, for /healthz.

A job runs with the structlog context its caller had bound when it submitted it (a mail's
message_id, mailbox), in a context of its own: the lines the job logs, and the writer's about
the job, carry them and what the job bound (its case), and the thread's context is as it was
after each job.

Each transaction's own state (store.rows' connection and deferred rows, the caches of
store.contacts and notify.casemail) is one `store.transaction.TxState`, which begins and
ends with the transaction, and goes with a rolled-back SAVEPOINT: nothing to clear here.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from maild.domain.errors import StorageError as StorageError  # raised here, and by the committer
from maild.domain.outcome import Quarantined
from maild.store.rows import write_later

log = structlog.get_logger("maild.writer")

Job = Callable[[Session], Any]
_Item = tuple[Job, "Future[Any]"]
# job, its future, its value, its error (the original exception; mapped for the caller at the end)
_Result = tuple[Job, "Future[Any]", Any, BaseException | None]

# How often a job that conflicted with another writer (unique violation, deadlock) runs again alone.
CONFLICT_RETRIES = 3
# SQLSTATEs of PostgreSQL that only say another transaction was in the way.
_CONFLICT_STATES = frozenset({"23505", "40P01", "40001"})
_DISK_FULL_STATES = frozenset({"53100"})  # disk_full
_SQLITE_FULL = 13
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(e: BaseException) -> bool:
    """A full disk (or quota), whoever met it: a file write (ENOSPC), SQLite ("database or disk
    is full"), PostgreSQL (SQLSTATE 53100), or a StorageError that says so."""
    if isinstance(e, StorageError):
        return e.disk_full
    if isinstance(e, OSError):
        return e.errno in _DISK_FULL_ERRNOS
    if isinstance(e, DBAPIError):
        orig = e.orig
        if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(orig):
            return True
        return _sqlstate(orig) in _DISK_FULL_STATES
    return False


def _sqlstate(orig: BaseException | None) -> str | None:
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _is_conflict(e: BaseException | None) -> bool:
    """Another transaction was in the way (a unique key it took first, a deadlock): running the
    job again alone sees what it committed (a duplicate mail is then a duplicate)."""
    return isinstance(e, DBAPIError) and _sqlstate(e.orig) in _CONFLICT_STATES


@dataclass
class WriterHealth:
    """What /healthz reads: plain values the writer thread keeps up to date."""

    running: bool = False  # the thread is serving the queue
    restarts: int = 0  # times the supervisor started it again
    failing_since: float | None = None  # wall time of the first failed commit of the incident going on
    last_error: str | None = None  # the latest commit failure or thread failure
    last_commit: float | None = None  # wall time of the latest successful commit


class _Incident:
    """A failure logged once when it starts and once when it ends, not once a batch."""

    def __init__(self, health: WriterHealth):
        self.health = health
        self.failures = 0

    def failed(self, error: BaseException, jobs: int) -> None:
        self.health.last_error = f"{type(error).__name__}: {error}"
        if self.failures == 0:
            self.health.failing_since = time.time()
            log.error("commit failed; mail is refused until commits succeed again", error=str(error), jobs=jobs,
                      disk_full=is_disk_full(error))
        self.failures += 1

    def committed(self) -> None:
        self.health.last_commit = time.time()
        if self.failures:
            log.info("commits succeed again", failed_commits=self.failures,
                     seconds=round(time.time() - (self.health.failing_since or time.time()), 1))
            self.failures = 0
            self.health.failing_since = None


class IngestWriter:
    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 64):
        self._sessions = sessions
        self._max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = self._new_thread()
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self.after_commit: Callable[[], None] | None = None
        self.health = WriterHealth()
        self._incident = _Incident(self.health)

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._supervise, name="maild-writer", daemon=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        """Finishes queued jobs, then ends the thread."""
        self._stopping = True
        self._queue.put(None)
        self._thread.join()

    def submit(self, job: Job) -> Future[Any]:
        """Queues `job`; its future has the job's result after the commit. The caller's bound
        log context goes with it (`_Bound`)."""
        job = _Bound(job, structlog.contextvars.get_contextvars())
        fut: Future[Any] = Future()
        self._queue.put((job, fut))
        self._ensure_running()
        return fut

    async def run(self, job: Job) -> Any:
        return await asyncio.wrap_future(self.submit(job))

    def _ensure_running(self) -> None:
        """The supervisor's second line: a thread that ended although nobody stopped it is
        started again (the queue kept its jobs)."""
        if not self._started or self._stopping or self._thread.is_alive():
            return
        with self._lock:
            if self._thread.is_alive() or self._stopping:
                return
            self.health.restarts += 1
            log.error("writer thread had ended; started again", restarts=self.health.restarts)
            self._thread = self._new_thread()
            self._thread.start()

    def _supervise(self) -> None:
        """Runs the queue until stopped; whatever escapes it restarts it after a short pause."""
        self.health.running = True
        pause = 0.1
        try:
            while True:
                try:
                    self._run()
                    return
                except BaseException as e:  # a bug must not end intake
                    self.health.restarts += 1
                    self.health.last_error = f"{type(e).__name__}: {e}"
                    log.error("writer thread failed; started again", error=self.health.last_error,
                              restarts=self.health.restarts)
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            self.health.running = False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, stopping = [item], False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                self._commit_batch(batch)
            except BaseException as e:  # outside any job: the batch fails, not the thread
                log.error("writer failed on a batch", error=f"{type(e).__name__}: {e}", jobs=len(batch))
                self.health.last_error = f"{type(e).__name__}: {e}"
                for _, fut in batch:
                    _tell(fut, None, StorageError(f"writer failed: {type(e).__name__}: {e}"))
            if stopping:
                return

    def _commit_batch(self, batch: list[_Item]) -> None:
        """The batch in one transaction, without a SAVEPOINT per job (two statements and the
        session's bookkeeping, ~5 % of a mail's CPU) as long as every job succeeds. When one
        fails, the transaction is rolled back and the batch runs again with a SAVEPOINT per
        job, so that the others still commit; when the commit itself fails, each job is tried
        in a transaction of its own; a job that met another writer's transaction runs again
        alone. Jobs write only to the database and to blobs (which are idempotent), so running
        one twice is harmless. A job whose caller stopped waiting before it began is skipped."""
        batch = [(job, fut) for job, fut in batch if not fut.cancelled()]
        if not batch:
            return
        try:
            results = self._attempt(batch)
        except Exception as e:  # the commit failed: nothing of this batch is stored
            self._incident.failed(e, len(batch))
            results = self._one_by_one(batch) if len(batch) > 1 else [(*batch[0], None, _commit_error(e))]
        results = [self._again_alone(r) if _is_conflict(r[3]) else r for r in results]
        stored = False
        for job, fut, value, error in results:
            stored = stored or error is None
            _tell(fut, value, None if error is None else _job_error(error, job))
        if stored and self.after_commit is not None:
            try:
                self.after_commit()
            except Exception as e:  # the loop is closing: nothing to wake
                log.warning("after-commit hook failed", error=f"{type(e).__name__}: {e}")

    def _attempt(self, batch: list[_Item]) -> list[_Result]:
        """One transaction for the batch; a failing job makes it run again with SAVEPOINTs.
        Raises what the commit (or the connection) raised."""
        try:
            results = self._run_batch(batch, isolated=False)
        except _JobFailed as failed:
            if len(batch) == 1:  # nothing else to keep: the rollback was all a SAVEPOINT does
                return [(*batch[0], None, failed.error)]
            results = self._run_batch(batch, isolated=True)
        self._incident.committed()
        return results

    def _one_by_one(self, batch: list[_Item]) -> list[_Result]:
        """After a failed commit: each job in its own transaction, so that the failure stays
        with the job that caused it. Once the database itself fails (not a job), the rest
        hear of that without waiting for it again."""
        results: list[_Result] = []
        broken: BaseException | None = None
        for job, fut in batch:
            if broken is not None or fut.cancelled():
                results.append((job, fut, None, broken or StorageError("not waited for")))
                continue
            try:
                results += self._attempt([(job, fut)])
            except Exception as e:
                self._incident.failed(e, 1)
                error = _commit_error(e)
                results.append((job, fut, None, error))
                if not _is_conflict(e):
                    broken = error
        return results

    def _again_alone(self, result: _Result) -> _Result:
        """A job that met another writer's transaction, in a transaction of its own: it now
        sees what that one committed."""
        job, fut, _, error = result
        for _ in range(CONFLICT_RETRIES):
            if fut.cancelled():
                break
            try:
                (result,) = self._attempt([(job, fut)])
            except Exception as e:
                result = (job, fut, None, e)
            if not _is_conflict(result[3]):
                break
        with _context_of(job):
            log.info("job ran again after a conflict with another transaction", error=str(error),
                     outcome="failed" if result[3] is not None else "stored")
        return result

    def _run_batch(self, batch: list[_Item], isolated: bool) -> list[_Result]:
        """One transaction. `isolated`: each job in a SAVEPOINT, a failure is that job's result;
        otherwise a failure rolls back everything and raises _JobFailed."""
        results: list[_Result] = []
        with self._sessions() as session, session.begin():
            for job, fut in batch:
                if fut.cancelled():  # its caller stopped waiting (answered 451) before it began
                    continue
                if not isolated:
                    try:
                        results.append((job, fut, job(session), None))
                        write_later(session)
                    except Exception as e:
                        raise _JobFailed(e) from e
                    continue
                savepoint = session.begin_nested()  # outside the try: a failure here is the whole batch's
                # SQLAlchemy emits the SAVEPOINT when the session next asks for its connection, but
                # store.rows keeps the connection and runs statements on it without asking: without
                # this, what a job writes that way is outside its SAVEPOINT, and a failure there
                # aborts the whole transaction (PostgreSQL) or is not rolled back (SQLite)
                session.connection()
                try:
                    with savepoint:
                        value = job(session)
                        write_later(session)  # inside the job's SAVEPOINT, before the next job
                        # and every change of the job's objects, or the next SAVEPOINT's flush
                        # sends them outside this one: a deadlock there aborts the transaction
                        session.flush()
                        results.append((job, fut, value, None))
                except Exception as e:
                    # What the job left in the session may describe rows its rollback removed
                    # (store.rows puts new rows' objects there as loaded, and SQLite hands their
                    # ids out again); the jobs before it are flushed, so nothing else is lost.
                    # (The transaction's state, store.transaction, went with the SAVEPOINT.)
                    session.expunge_all()
                    results.append((job, fut, None, e))
        return results


def _tell(fut: Future[Any], value: Any, error: BaseException | None) -> None:
    """A job's result to its caller, unless the caller stopped waiting (a scheduler job
    cancelled at shutdown, an SMTP session that answered 451 in time): that must not end the
    writer thread."""
    try:
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)
    except InvalidStateError:
        pass


class _JobFailed(Exception):
    """A job of a batch run without SAVEPOINTs failed; the transaction is rolled back."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _commit_error(e: Exception) -> StorageError:
    detail = f"{type(e.orig).__name__}: {e.orig}" if isinstance(e, DBAPIError) else f"{type(e).__name__}: {e}"
    return StorageError(f"commit failed: {detail}", disk_full=is_disk_full(e))


class _Bound:
    """A job with the log context its caller had bound, run in a log context of its own: what
    the job binds (the pipeline binds the mail's case) goes with its lines and with the lines
    the writer logs about it afterwards (`logged`: "job failed"), and ends with the job, not
    with the writer thread's next one."""

    __slots__ = ("context", "job", "logged")

    def __init__(self, job: Job, context: dict[str, Any]):
        self.job = job
        self.context = context  # the caller's: each run (a retry too) starts from it
        self.logged = context  # as the last run left it

    def __call__(self, session: Session) -> Any:
        return contextvars.copy_context().run(self._run, session)

    def _run(self, session: Session) -> Any:
        structlog.contextvars.bind_contextvars(**self.context)
        try:
            return self.job(session)
        finally:
            self.logged = structlog.contextvars.get_contextvars()


def _context_of(job: Job) -> Any:
    """The log context of `job` (what its caller bound, and the job after), bound for a line
    the writer logs about it."""
    return structlog.contextvars.bound_contextvars(**(job.logged if isinstance(job, _Bound) else {}))


def _job_error(e: BaseException, job: Job) -> BaseException:
    """What the job's caller hears: a database or file failure is StorageError (the sender
    retries, 451, or 452 on a full disk); anything else is a bug on this one mail, logged,
    which must not fail the others."""
    if isinstance(e, StorageError):
        return e
    if isinstance(e, DBAPIError):
        return StorageError(f"{type(e.orig).__name__}: {e.orig}", disk_full=is_disk_full(e))
    if isinstance(e, OSError):  # a blob the job writes: the disk, not the mail
        return StorageError(f"{type(e).__name__}: {e}", disk_full=is_disk_full(e))
    if not isinstance(e, Quarantined):  # a decision, logged where it was taken
        with _context_of(job):
            log.error("job failed", error=str(e), exc_info=e)
    return e
