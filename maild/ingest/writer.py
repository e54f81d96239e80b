"""The database writer: one thread, group commit.

Jobs queue up while a transaction commits; the next transaction takes all of them, each in
its own SAVEPOINT, and commits once. Every job's caller hears its result only after that
commit, so a 250 never precedes durability, while one fsync serves many mails.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

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
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._sessions() as session, session.begin():
                for job, fut in batch:
                    try:
                        with session.begin_nested():
                            results.append((fut, job(session), None))
                    except DBAPIError as e:
                        results.append((fut, None, StorageError(f"{type(e.orig).__name__}: {e.orig}")))
                    except Exception as e:  # a bug on one mail must not fail the others
                        log.exception("job failed", error=str(e))
                        results.append((fut, None, e))
        except Exception as e:  # the commit itself failed: nothing of this batch is stored
            log.error("commit failed", error=str(e), jobs=len(batch))
            for _, fut in batch:
                fut.set_exception(StorageError(f"commit failed: {e}"))
            return
        for fut, value, error in results:
            if error is None:
                fut.set_result(value)
            else:
                fut.set_exception(error)
        if self.after_commit is not None:
            self.after_commit()
