"""The database writer: one thread, group commit.

Jobs queue up while a transaction commits; the next transaction takes all of them and commits
once, and a job that fails is rolled back alone (`_commit_batch`). Every job's caller hears
its result only after that commit, so a 250 never precedes durability, while one fsync
serves many mails.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from maild.ingest.delivery import Quarantined
from maild.store.rows import write_later

log = structlog.get_logger("maild.writer")

Job = Callable[[Session], Any]


class StorageError(Exception):
    """The database did not take the transaction; the sender should retry later (SMTP 451)."""


class IngestWriter:
    def __init__(self, sessions: sessionmaker[Session], max_batch: int = 64):
        self._sessions = sessions
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[Job, Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="maild-writer", daemon=True)
        self.after_commit: Callable[[], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finishes queued jobs, then ends the thread."""
        self._queue.put(None)
        self._thread.join()

    def submit(self, job: Job) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((job, fut))
        return fut

    async def run(self, job: Job) -> Any:
        return await asyncio.wrap_future(self.submit(job))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Job, Future[Any]]]) -> None:
        """The batch in one transaction, without a SAVEPOINT per job (two statements and the
        session's bookkeeping, ~5 % of a mail's CPU) as long as every job succeeds. When one
        fails, the transaction is rolled back and the batch runs again with a SAVEPOINT per
        job, so that the others still commit. Jobs write only to the database and to blobs
        (which are idempotent), so running one twice is harmless."""
        try:
            try:
                results = self._run_batch(batch, isolated=False)
            except _JobFailed as failed:
                if len(batch) == 1:  # nothing else to keep: the rollback was all a SAVEPOINT does
                    results = [(batch[0][1], None, _job_error(failed.error))]
                else:
                    results = self._run_batch(batch, isolated=True)
        except Exception as e:  # the commit itself failed: nothing of this batch is stored
            log.error("commit failed", error=str(e), jobs=len(batch))
            for _, fut in batch:
                _tell(fut, None, StorageError(f"commit failed: {e}"))
            return
        for fut, value, error in results:
            _tell(fut, value, error)
        if self.after_commit is not None:
            self.after_commit()

    def _run_batch(self, batch: list[tuple[Job, Future[Any]]],
                   isolated: bool) -> list[tuple[Future[Any], Any, BaseException | None]]:
        """One transaction. `isolated`: each job in a SAVEPOINT, a failure is that job's result;
        otherwise a failure rolls back everything and raises _JobFailed."""
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        with self._sessions() as session, session.begin():
            for job, fut in batch:
                if not isolated:
                    try:
                        results.append((fut, job(session), None))
                        write_later(session)
                    except Exception as e:
                        raise _JobFailed(e) from e
                    continue
                try:
                    with session.begin_nested():
                        value = job(session)
                        write_later(session)  # inside the job's SAVEPOINT, before the next job
                        results.append((fut, value, None))
                except Exception as e:
                    # What the job left in the session may describe rows its rollback removed
                    # (store.rows puts new rows' objects there as loaded, and SQLite hands their
                    # ids out again); the jobs before it are flushed, so nothing else is lost.
                    session.expunge_all()
                    session.info.clear()  # per-transaction caches (store.contacts, notify.casemail)
                    results.append((fut, None, _job_error(e)))
        return results


def _tell(fut: Future[Any], value: Any, error: BaseException | None) -> None:
    """A job's result to its caller, unless the caller stopped waiting (a scheduler job
    cancelled at shutdown): that must not end the writer thread."""
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


def _job_error(e: Exception) -> BaseException:
    """What the job's caller hears: a database failure is StorageError (the sender retries,
    451); anything else is a bug on this one mail, logged, which must not fail the others."""
    if isinstance(e, DBAPIError):
        return StorageError(f"{type(e.orig).__name__}: {e.orig}")
    if not isinstance(e, Quarantined):  # a decision, logged where it was taken
        log.error("job failed", error=str(e), exc_info=e)
    return e
