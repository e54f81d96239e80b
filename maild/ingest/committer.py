"""A parsed mail in; stored (committed or quarantined) or refused out: the `Receipt`.

The one step every transport ends in: the SMTP handler (in a parse worker, over the wire,
or in the daemon), and the IMAP poller. `commit(parsed, envelope)` decides the deliveries
from the envelope, hands the pipeline (ingest.pipeline.ingest_message) to the writer thread
(ingest.writer: group commit), waits for the commit, logs one line per mail, and quarantines
what cannot be processed. A thread (the poller) uses `submit` and finishes the `Pending`,
so that it can queue a whole batch into one commit.

Every log line about a mail carries its message_id and mailbox (structlog contextvars,
bound while the mail is handled here and in the writer's job, and unbound after), and its
case once the pipeline has one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session

from maild.domain.errors import ParseError, StorageError
from maild.domain.message import InboundMessage
from maild.domain.outcome import Outcome, Quarantined
from maild.ingest.delivery import Delivery
from maild.ingest.pipeline import ingest_message
from maild.ingest.quarantine import quarantine
from maild.ingest.wire import Envelope, ParsedMail
from maild.ingest.writer import IngestWriter, is_disk_full
from maild.runtime import Runtime
from maild.threading.tokens import BOUNCE_LOCAL, split_plus_address

log = structlog.get_logger("maild.ingest")

# Builds the deliveries once the mail is parsed (IMAP reads Delivered-To from the headers).
DeliveryPlan = Callable[[InboundMessage, Runtime], list[Delivery]]
# Extra writes that must commit with the mail (the IMAP poller's UID cursor).
AlsoWrite = Callable[[Session], None]


@dataclass(frozen=True)
class Receipt:
    """What became of a mail, for the transport's answer (SMTP reply, IMAP move)."""

    stored: bool  # False: nothing was kept, the sender must retry
    outcomes: list[Outcome]
    quarantined: str | None = None
    disk_full: bool = False  # not stored for want of space (SMTP 452 rather than 451)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Pending:
    """A mail handed to the writer; `finish()` (a thread) or `finish_on_loop()` gives its Receipt
    once it is committed or quarantined. `fields`: what its log lines are bound to."""

    def __init__(self, finish: Callable[[], Receipt], commit: Future[Any] | None = None,
                 fields: dict[str, Any] | None = None):
        self._finish = finish
        self.commit = commit  # the writer's job, when there is one
        self.fields = fields or {}

    def finish(self) -> Receipt:
        """Waits for the commit (or quarantine) in this thread, logs, and says what became of it."""
        with structlog.contextvars.bound_contextvars(**self.fields):
            return self._finish()


    async def finish_on_loop(self, timeout: float | None = None) -> Receipt:
        """finish() for the event loop: awaits the commit instead of holding a thread for it,
        and needs a thread only for a quarantine (file writes). Past `timeout` (a database
        that hangs) the mail is not stored as far as the sender knows: its job is withdrawn
        if the writer has not begun it, and if it has and commits later, the sender's retry
        is a duplicate of it."""
        if self.commit is None:
            return await asyncio.to_thread(self.finish)
        waiting = asyncio.wrap_future(self.commit)
        # read whatever ends the wait, or asyncio logs "Future exception was never retrieved"
        waiting.add_done_callback(_retrieved)
        done, _ = await asyncio.wait([waiting], timeout=timeout)
        if not done and self.commit.cancel():
            with structlog.contextvars.bound_contextvars(**self.fields):
                log.error("message not stored in time, sender must retry", timeout=timeout)
            return Receipt(stored=False, outcomes=[])
        await asyncio.wait([waiting])  # done, or its result on the way
        if self.commit.exception() is None or isinstance(self.commit.exception(), StorageError):
            return self.finish()  # the result is there: finish() only logs
        return await asyncio.to_thread(self.finish)



class DiskFull:
    """A full disk is logged when mail first meets it and when mail is stored again, not once
    a mail: the sender hears 452 meanwhile, and retries."""

    def __init__(self) -> None:
        self.refused = 0
        self._lock = threading.Lock()

    def met(self, error: str, via: str) -> Receipt:
        with self._lock:
            first, self.refused = not self.refused, self.refused + 1
        if first:
            log.error("disk full: mail answered 452 until there is space again", error=error, via=via)
        return Receipt(stored=False, outcomes=[], disk_full=True)

    def stored(self) -> None:
        if not self.refused:
            return
        with self._lock:
            refused, self.refused = self.refused, 0
        if refused:
            log.info("disk space back: mail accepted again", refused=refused)


def deliveries_for(rt: Runtime, recipients: list[str], mail_from: str | None,
                   via: str) -> list[Delivery]:
    """One delivery per configured mailbox among the recipients, in recipient order."""
    by_mailbox: dict[str, list[str]] = {}
    for rcpt in recipients:
        base, _ = split_plus_address(rcpt)
        if base.partition("@")[0] == BOUNCE_LOCAL:  # a VERP return path: the first mailbox of its domain
            domain = base.partition("@")[2]
            base = next((m.address.lower() for m in rt.config.mailboxes if m.address.lower().endswith("@" + domain)),
                        base)
        if rt.config.mailbox(base) is not None:
            by_mailbox.setdefault(base, []).append(rcpt.lower())
    return [Delivery(mailbox=rt.config.mailbox(base), recipients=rcpts,  # type: ignore[arg-type]
                     envelope_sender=mail_from, via=via) for base, rcpts in by_mailbox.items()]


def _mailbox_field(addresses: list[str]) -> str | list[str] | None:
    """The `mailbox` a mail's log lines carry: the address, or all of them for a mail to several."""
    unique = list(dict.fromkeys(addresses))
    return unique[0] if len(unique) == 1 else unique or None


@contextmanager
def _bound(fields: dict[str, Any]) -> Iterator[None]:
    with structlog.contextvars.bound_contextvars(**fields):
        yield


class Committer:
    """The commit step of every transport (module docstring). `runtime` is swapped by a reload:
    the next mail sees the new config; mails in flight keep theirs."""

    def __init__(self, runtime: Runtime, writer: IngestWriter):
        self.runtime = runtime
        self.writer = writer
        self.disk_full = DiskFull()

    @property
    def commit_wait(self) -> float:
        """How long an SMTP session waits for its commit before answering 451: the SMTP
        timeout ([protection] smtp_idle_timeout_seconds), so that a hung database costs the
        sender a retry, not a session that hangs with it."""
        return self.runtime.config.protection.smtp_idle_timeout_seconds

    def swap_runtime(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def commit(self, parsed: ParsedMail, envelope: Envelope) -> Receipt:
        """For the event loop (SMTP): the Receipt once the mail is committed, quarantined
        (unparseable, or the pipeline failed on it) or refused (nothing kept: the sender retries).
        The wait for the commit is bounded by `commit_wait`."""
        if isinstance(parsed.mail, InboundMessage):
            return await self.submit(parsed, envelope).finish_on_loop(self.commit_wait)
        if isinstance(parsed.mail, ParseError):  # a quarantine writes files: not on the loop
            return await asyncio.to_thread(lambda: self.submit(parsed, envelope).finish())
        return self.submit(parsed, envelope).finish()  # nothing kept: only logged

    def commit_blocking(self, parsed: ParsedMail, envelope: Envelope, *, plan: DeliveryPlan | None = None,
                        also: AlsoWrite | None = None) -> Receipt:
        """commit() for a caller that is a thread; no bound on the wait."""
        return self.submit(parsed, envelope, plan=plan, also=also).finish()

    def submit(self, parsed: ParsedMail, envelope: Envelope, *, plan: DeliveryPlan | None = None,
               also: AlsoWrite | None = None) -> Pending:
        """Hands the mail to the writer without waiting. `plan`: the deliveries, when the
        envelope does not decide them (IMAP); `also`: writes that commit with the mail, or with
        its quarantine (the poller's cursor)."""
        mail = parsed.mail
        if isinstance(mail, InboundMessage):
            deliveries = plan(mail, self.runtime) if plan is not None else deliveries_for(
                self.runtime, envelope.recipients, envelope.mail_from, envelope.via)
            fields = {"message_id": mail.message_id,
                      "mailbox": _mailbox_field([d.mailbox.address for d in deliveries])}
            with _bound(fields):
                return self._hand_over(parsed.kept(), mail, deliveries, envelope, also, fields)
        fields = {"message_id": None, "mailbox": _mailbox_field(
            [d.mailbox.address for d in deliveries_for(self.runtime, envelope.recipients, None, envelope.via)]
            if plan is None else [split_plus_address(r)[0] for r in envelope.recipients])}
        with _bound(fields):
            if isinstance(mail, ParseError):
                return self._quarantine_unparseable(parsed.raw, f"unparseable: {mail}", envelope, also, fields)
            # the blobs (or the spool file) could not be written: nothing is kept, retry later
            if isinstance(parsed.raw, Path):
                parsed.raw.unlink(missing_ok=True)
            receipt = self.not_stored(mail, envelope.via)
        return Pending(lambda: receipt, fields=fields)

    def not_stored(self, error: BaseException, via: str, **fields: Any) -> Receipt:
        """Nothing was kept: the sender must retry (451), or, on a full disk, 452."""
        detail = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
        if is_disk_full(error):
            return self.disk_full.met(detail, via)
        log.error("message not stored, sender must retry", **fields, error=detail, via=via)
        return Receipt(stored=False, outcomes=[])

    def _quarantine_unparseable(self, raw: bytes | Path, reason: str, envelope: Envelope, also: AlsoWrite | None,
                                fields: dict[str, Any]) -> Pending:
        pending = self.quarantine(raw, reason, envelope, also)

        def finish() -> Receipt:
            receipt = pending.finish()
            if isinstance(raw, Path) and receipt.stored:
                raw.unlink(missing_ok=True)  # the spool file; quarantine has its copy
            return receipt
        return Pending(finish, fields=fields)

    def _hand_over(self, raw: bytes | Path, msg: InboundMessage, deliveries: list[Delivery], envelope: Envelope,
                   also: AlsoWrite | None, fields: dict[str, Any]) -> Pending:
        """A parsed mail to the writer; its Pending waits for the commit, logs, and quarantines
        what the pipeline could not process."""
        rt = self.runtime
        future = self.writer.submit(self._job(msg, deliveries, rt, also))  # the writer keeps the bound fields
        via = envelope.via

        def finish() -> Receipt:
            try:
                outcomes = future.result()
            except StorageError as e:
                return self.not_stored(e, via)
            except Quarantined as e:  # kept aside by decision: the reason says why
                return self.quarantine(raw, e.reason, envelope, also).finish()
            except Exception as e:
                reason = f"processing failed: {type(e).__name__}: {e}"
                return self.quarantine(raw, reason, envelope, also).finish()
            for d, o in zip(deliveries, outcomes, strict=True):
                log.info("message ingested", message_id=msg.message_id, mailbox=d.mailbox.address,
                         case=o.case_number, outcome=o.action, matched_by=o.matched_by, is_agent=o.is_agent,
                         agent_reason=o.agent_reason or None, reason=o.reason or None,
                         classification=o.classification, visibility=o.visibility,
                         acknowledgement=o.acknowledgement, via=via, size=msg.size)
            self.disk_full.stored()
            return Receipt(stored=True, outcomes=outcomes)
        return Pending(finish, future, fields)

    def _job(self, msg: InboundMessage, deliveries: list[Delivery], rt: Runtime,
             also: AlsoWrite | None) -> Callable[[Session], list[Outcome]]:
        """The writer's job: the pipeline for each delivery, and `also`, in one transaction."""
        def job(session: Session) -> list[Outcome]:
            if len(deliveries) == 1:
                outcomes = [self._ingest(session, msg, deliveries[0], rt)]
            else:
                outcomes = []
                for d in deliveries:
                    with structlog.contextvars.bound_contextvars(mailbox=d.mailbox.address):
                        outcomes.append(self._ingest(session, msg, d, rt))
            if also is not None:
                also(session)
            return outcomes
        return job

    def _ingest(self, session: Session, msg: InboundMessage, delivery: Delivery, rt: Runtime) -> Outcome:
        return ingest_message(session, msg, delivery, rt)

    def quarantine(self, raw: bytes | Path, reason: str, envelope: Envelope,
                   also: AlsoWrite | None = None) -> Pending:
        """Keeps the raw bytes with the reason; `also` (a poller's cursor) still commits."""
        rt = self.runtime
        fields = structlog.contextvars.get_contextvars()
        try:
            path = quarantine(rt.config.data_dir, raw, reason, mail_from=envelope.mail_from,
                              recipients=envelope.recipients, now=rt.clock())
        except OSError as e:
            if is_disk_full(e):
                result = self.disk_full.met(f"quarantine: {type(e).__name__}: {e}", "quarantine")
            else:
                log.error("quarantine failed, sender must retry", reason=reason, error=str(e))
                result = Receipt(stored=False, outcomes=[])
            return Pending(lambda: result, fields=fields)
        if also is None:
            return Pending(lambda: Receipt(stored=True, outcomes=[], quarantined=str(path)), fields=fields)
        future = self.writer.submit(also)

        def finish() -> Receipt:
            try:
                future.result()
            except Exception as e:
                log.error("quarantined, but its cursor was not stored", reason=reason, error=str(e))
                return Receipt(stored=False, outcomes=[], quarantined=str(path))
            return Receipt(stored=True, outcomes=[], quarantined=str(path))
        return Pending(finish, fields=fields)
