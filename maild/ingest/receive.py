"""Raw bytes in; stored (or quarantined) and committed out.

Shared by the SMTP receiver (async) and the IMAP poller (a worker thread): parse, hand the
pipeline to the writer thread, log one line per mail, quarantine what cannot be processed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session

from maild.ingest.delivery import Delivery, Outcome, Quarantined
from maild.ingest.parse import InboundMessage, ParseError, parse_message
from maild.ingest.parse_pool import HandedOver, ParsePool, Parsing, parse_spooled
from maild.ingest.pipeline import ingest_message
from maild.ingest.quarantine import quarantine
from maild.ingest.writer import IngestWriter, StorageError, is_disk_full
from maild.runtime import Runtime
from maild.threading.tokens import BOUNCE_LOCAL, split_plus_address

log = structlog.get_logger("maild.ingest")

# Builds the deliveries once the mail is parsed (IMAP reads Delivered-To from the headers).
DeliveryPlan = Callable[[InboundMessage, Runtime], list[Delivery]]
# Extra writes that must commit with the mail (the IMAP poller's UID cursor).
AlsoWrite = Callable[[Session], None]


class PendingReceive:
    """A mail handed to the writer; `finish()` waits for its commit (or quarantine)."""

    def __init__(self, finish: Callable[[], ReceiveResult], commit: Future[Any] | None = None):
        self.finish = finish
        self.commit = commit  # the writer's job, when there is one

    async def finish_on_loop(self, timeout: float | None = None) -> ReceiveResult:
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
            log.error("message not stored in time, sender must retry", timeout=timeout)
            return ReceiveResult(stored=False, outcomes=[])
        await asyncio.wait([waiting])  # done, or its result on the way
        if self.commit.exception() is None or isinstance(self.commit.exception(), StorageError):
            return self.finish()  # the result is there: finish() only logs
        return await asyncio.to_thread(self.finish)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass(frozen=True)
class ReceiveResult:
    stored: bool  # False: nothing was kept, the sender must retry
    outcomes: list[Outcome]
    quarantined: str | None = None
    disk_full: bool = False  # not stored for want of space (SMTP 452 rather than 451)


class DiskFull:
    """A full disk is logged when mail first meets it and when mail is stored again, not once
    a mail: the sender hears 452 meanwhile, and retries."""

    def __init__(self) -> None:
        self.refused = 0
        self._lock = threading.Lock()

    def met(self, error: str, via: str) -> ReceiveResult:
        with self._lock:
            first, self.refused = not self.refused, self.refused + 1
        if first:
            log.error("disk full: mail answered 452 until there is space again", error=error, via=via)
        return ReceiveResult(stored=False, outcomes=[], disk_full=True)

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


def _envelope_plan(recipients: list[str], mail_from: str | None, via: str) -> DeliveryPlan:
    """The SMTP envelope decides the deliveries, whatever the headers say."""
    def plan(msg: InboundMessage, rt: Runtime) -> list[Delivery]:
        return deliveries_for(rt, recipients, mail_from, via)
    return plan


class Receiver:
    def __init__(self, runtime: Runtime, writer: IngestWriter, parser: ParsePool | None = None):
        self.runtime = runtime
        self.writer = writer
        self.parser = parser  # None: parse in the calling thread
        self.disk_full = DiskFull()

    @property
    def commit_wait(self) -> float:
        """How long an SMTP session waits for its commit before answering 451: the SMTP
        timeout ([protection] smtp_idle_timeout_seconds), so that a hung database costs the
        sender a retry, not a session that hangs with it."""
        return self.runtime.config.protection.smtp_idle_timeout_seconds

    def not_stored(self, error: BaseException, via: str, **fields: Any) -> ReceiveResult:
        """Nothing was kept: the sender must retry (451), or, on a full disk, 452."""
        detail = str(error) if isinstance(error, StorageError) else f"{type(error).__name__}: {error}"
        if is_disk_full(error):
            return self.disk_full.met(detail, via)
        log.error("message not stored, sender must retry", **fields, error=detail, via=via)
        return ReceiveResult(stored=False, outcomes=[])

    def swap_runtime(self, runtime: Runtime) -> None:
        """Used by reload: the next mail sees the new config; mails in flight keep theirs."""
        self.runtime = runtime

    async def receive(self, raw: bytes | Path | OSError, *, mail_from: str | None, recipients: list[str],
                      via: str) -> ReceiveResult:
        """The SMTP path: parsing (in the parse pool, or a thread) and waiting happen off the
        event loop. `raw` is an OSError when the DATA could not even be spooled."""
        if isinstance(raw, OSError):
            return await self.receive_parsed(b"", raw, mail_from=mail_from, recipients=recipients, via=via)
        try:
            parsed: InboundMessage | Exception = await self._parse_off_loop(raw)
        except (ParseError, OSError) as e:
            parsed = e
        return await self.receive_parsed(raw, parsed, mail_from=mail_from, recipients=recipients, via=via)

    async def receive_parsed(self, raw: bytes | Path, parsed: InboundMessage | Exception, *, mail_from: str | None,
                             recipients: list[str], via: str) -> ReceiveResult:
        """What follows the parse, wherever it ran (here, or in the worker that served the
        SMTP session): commit, or quarantine (ParseError), or nothing kept (OSError)."""
        if isinstance(parsed, ParseError):
            reason = f"unparseable: {parsed}"
            return await asyncio.to_thread(self._quarantine_now, raw, reason, mail_from, recipients)
        if isinstance(parsed, Exception):  # the blobs could not be written: nothing is kept, retry later
            if isinstance(raw, Path):
                raw.unlink(missing_ok=True)
            return self.not_stored(parsed, via)
        # what a quarantine keeps if processing fails: a worker serving SMTP sends a small
        # mail's bytes inside the parsed mail, a larger one's path
        kept: bytes | Path = Path(parsed.raw_path) if parsed.raw_path else parsed.raw or raw
        return await self.hand_over(kept, parsed, _envelope_plan(recipients, mail_from, via), via=via,
                                    mail_from=mail_from, recipients=recipients).finish_on_loop(self.commit_wait)

    async def receive_handed_over(self, handed: HandedOver) -> ReceiveResult:
        """A mail whose SMTP session a parse worker served and which it parsed."""
        raw: bytes | Path = Path(handed.raw) if isinstance(handed.raw, str) else handed.raw
        return await self.receive_parsed(raw, handed.parsed, mail_from=handed.mail_from, recipients=handed.recipients,
                                         via="smtp")

    async def _parse_off_loop(self, raw: bytes | Path) -> InboundMessage:
        rt = self.runtime
        roots = (str(rt.raw_store.root), str(rt.attachment_store.root))
        max_parts = rt.config.protection.max_mime_parts
        if isinstance(raw, Path):
            if self.parser is not None:
                return await self.parser.parse_spooled(raw)
            return await asyncio.to_thread(parse_spooled, raw, *roots, max_parts)
        if self.parser is None:  # the pipeline keeps the blobs, in the writer's job
            return await asyncio.to_thread(parse_message, raw, max_parts=max_parts)
        return await self.parser.parse(raw)

    def _quarantine_now(self, raw: bytes | Path, reason: str, mail_from: str | None,
                        recipients: list[str]) -> ReceiveResult:
        result = self.start_quarantine(raw, reason, mail_from, recipients).finish()
        if isinstance(raw, Path) and result.stored:
            raw.unlink(missing_ok=True)  # the spool file; quarantine has its copy
        return result

    def receive_blocking(self, raw: bytes, plan: DeliveryPlan, *, via: str, mail_from: str | None,
                         recipients: list[str], also: AlsoWrite | None = None) -> ReceiveResult:
        """Parses, stores and waits for the commit; for callers that are threads already."""
        return self.start(raw, plan, via=via, mail_from=mail_from, recipients=recipients, also=also).finish()

    def parse_soon(self, raw: bytes) -> Parsing | None:
        """Starts parsing in the parse pool (None without one), so that a poller's whole batch is
        parsed in parallel while it hands the mails to the writer in order."""
        return self.parser.submit(raw) if self.parser is not None else None

    def start(self, raw: bytes, plan: DeliveryPlan, *, via: str, mail_from: str | None,
              recipients: list[str], also: AlsoWrite | None = None,
              parsing: Parsing | None = None) -> PendingReceive:
        """Parses (or waits for `parsing`, from parse_soon) and hands the mail to the writer
        without waiting, so that a poller can queue a whole batch into one commit; `finish()`
        waits and logs."""
        try:
            msg = parsing.result() if parsing is not None else parse_message(
                raw, max_parts=self.runtime.config.protection.max_mime_parts)
        except OSError as e:  # the worker could not write the blobs: nothing is kept, retry later
            result = self.not_stored(e, via)
            return PendingReceive(lambda: result)
        except ParseError as e:
            return self.start_quarantine(raw, f"unparseable: {e}", mail_from, recipients, also)
        return self.hand_over(raw, msg, plan, via=via, mail_from=mail_from, recipients=recipients, also=also)

    def hand_over(self, raw: bytes | Path, msg: InboundMessage, plan: DeliveryPlan, *, via: str, mail_from: str | None,
                  recipients: list[str], also: AlsoWrite | None = None) -> PendingReceive:
        """A parsed mail to the writer; `finish()` waits for the commit, logs, and quarantines
        what the pipeline could not process."""
        rt = self.runtime
        deliveries = plan(msg, rt)
        future = self.submit(msg, deliveries, rt, also)

        def finish() -> ReceiveResult:
            try:
                outcomes = future.result()
            except StorageError as e:
                return self.not_stored(e, via, message_id=msg.message_id)
            except Quarantined as e:  # kept aside by decision: the reason says why
                return self.start_quarantine(raw, e.reason, mail_from, recipients, also).finish()
            except Exception as e:
                reason = f"processing failed: {type(e).__name__}: {e}"
                return self.start_quarantine(raw, reason, mail_from, recipients, also).finish()
            for d, o in zip(deliveries, outcomes, strict=True):
                log.info("message ingested", message_id=msg.message_id, mailbox=d.mailbox.address,
                         case=o.case_number, outcome=o.action, matched_by=o.matched_by, is_agent=o.is_agent,
                         agent_reason=o.agent_reason or None, reason=o.reason or None,
                         classification=o.classification, visibility=o.visibility,
                         acknowledgement=o.acknowledgement, via=via, size=msg.size)
            self.disk_full.stored()
            return ReceiveResult(stored=True, outcomes=outcomes)
        return PendingReceive(finish, future)

    def submit(self, msg: InboundMessage, deliveries: list[Delivery], rt: Runtime,
               also: AlsoWrite | None = None) -> Future[list[Outcome]]:
        def job(session: Session) -> list[Outcome]:
            outcomes = [ingest_message(session, msg, d, rt) for d in deliveries]
            if also is not None:
                also(session)
            return outcomes
        return self.writer.submit(job)

    def start_quarantine(self, raw: bytes | Path, reason: str, mail_from: str | None, recipients: list[str],
                         also: AlsoWrite | None = None) -> PendingReceive:
        """Keeps the raw bytes with the reason; `also` (a poller's cursor) still commits."""
        rt = self.runtime
        try:
            path = quarantine(rt.config.data_dir, raw, reason, mail_from=mail_from, recipients=recipients,
                              now=rt.clock())
        except OSError as e:
            if is_disk_full(e):
                result = self.disk_full.met(f"quarantine: {type(e).__name__}: {e}", "quarantine")
            else:
                log.error("quarantine failed, sender must retry", reason=reason, error=str(e))
                result = ReceiveResult(stored=False, outcomes=[])
            return PendingReceive(lambda: result)
        if also is None:
            return PendingReceive(lambda: ReceiveResult(stored=True, outcomes=[], quarantined=str(path)))
        future = self.writer.submit(also)

        def finish() -> ReceiveResult:
            try:
                future.result()
            except Exception as e:
                log.error("quarantined, but its cursor was not stored", reason=reason, error=str(e))
                return ReceiveResult(stored=False, outcomes=[], quarantined=str(path))
            return ReceiveResult(stored=True, outcomes=[], quarantined=str(path))
        return PendingReceive(finish)
