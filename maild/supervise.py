"""The daemon's long-running tasks survive anything: each failure backs off (1 s, 2 s, … 30 s),
an incident is logged twice (a warning when it starts, one info line when it ends) whatever
the number of attempts in between, and a task that ends anyway is started again.

`Health` is the in-memory record of every task (last success, failing since, last error) that
/healthz reads; nothing here touches the database, so it answers while the database does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger("maild.supervise")

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0


def describe(e: BaseException) -> str:
    """One line for a log or /healthz: the type and the first line of the message (a database
    error's message carries the statement and its parameters on further lines)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:500]}" if text else type(e).__name__


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TaskHealth:
    """How one task is doing. `failing_since` is None while it works."""

    name: str
    last_success: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None
    failures: int = 0  # consecutive, since the last success
    restarts: int = 0  # times the supervisor started it again after it ended

    @property
    def ok(self) -> bool:
        return self.failing_since is None


class Incident:
    """Backoff and logging for one task's runs of failures.

    Several Incidents may share one TaskHealth (the task's own and the supervisor's): the
    state is the TaskHealth's, so a success anywhere ends the incident for both."""

    def __init__(self, health: TaskHealth, logger: Any, *, failing: str, recovered: str,
                 first: float = BACKOFF_FIRST_SECONDS, cap: float = BACKOFF_MAX_SECONDS):
        self.health = health
        self.log = logger
        self.failing = failing
        self.recovered = recovered
        self.first = first
        self.cap = cap

    def delay(self) -> float:
        return min(self.first * 2 ** max(self.health.failures - 1, 0), self.cap)

    def failed(self, e: BaseException | str, **fields: Any) -> float:
        """Records a failure; returns how long to wait before the next attempt."""
        h = self.health
        h.failures += 1
        h.last_error = e if isinstance(e, str) else describe(e)
        delay = self.delay()
        if h.failing_since is None:
            h.failing_since = _now()
            self.log.warning(self.failing, error=h.last_error, retry_in_s=delay, **fields)
        else:
            self.log.debug(self.failing, error=h.last_error, attempt=h.failures, retry_in_s=delay, **fields)
        return delay

    def succeeded(self) -> None:
        h = self.health
        h.last_success = _now()
        if h.failing_since is not None:
            self.log.info(self.recovered, after_failures=h.failures,
                          failing_for_s=round((h.last_success - h.failing_since).total_seconds(), 1),
                          last_error=h.last_error)
        h.failing_since = None
        h.failures = 0


@dataclass
class Health:
    """Every task's TaskHealth by name: the plain object a later /healthz reads."""

    tasks: dict[str, TaskHealth] = field(default_factory=dict)

    def task(self, name: str) -> TaskHealth:
        if name not in self.tasks:
            self.tasks[name] = TaskHealth(name)
        return self.tasks[name]

    def failing(self) -> dict[str, str]:
        return {name: h.last_error or "failing" for name, h in self.tasks.items() if not h.ok}


class Supervisor:
    """Runs coroutines that are meant to run until the daemon stops, and starts one again (after
    a backoff) when it ends or raises anyway."""

    def __init__(self, health: Health):
        self.health = health
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._keep(name, run), name=name)

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        health = self.health.task(name)
        incident = Incident(health, log.bind(task=name), failing="task ended unexpectedly; starting it again",
                            recovered="task works again")
        while not self.stopping:
            try:
                await run()
                if self.stopping:
                    return
                delay = incident.failed("ended without being asked to")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug or an error the task did not expect: never end the daemon's work
                if self.stopping:
                    return
                delay = incident.failed(e)
            health.restarts += 1
            await self.sleep(delay)

    async def sleep(self, seconds: float) -> bool:
        """Waits `seconds` or until stop; True if the daemon is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(seconds, 0.0))
        return self.stopping

    def stop(self) -> None:
        """Asks every task to end: supervised loops see `stopping` (and `sleep` returns at once)."""
        self._stopping.set()

    async def wait(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        """Waits for the named tasks (all by default) to end; cancels what is left at the timeout."""
        tasks = [t for n, t in self._tasks.items() if names is None or n in names]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            log.warning("task did not stop in time; cancelled", task=t.get_name(), waited_s=timeout)
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.warning("task failed while stopping", task=t.get_name(), error=describe(t.exception()))
