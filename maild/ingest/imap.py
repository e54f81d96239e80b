"""The IMAP poller: every message in a hosted mailbox becomes exactly one stored message.

A message is moved (or flagged \\Seen) only after the transaction that stores it has
committed, and the UID cursor commits in that same transaction, so a kill at any moment
loses nothing and stores nothing twice; Message-ID idempotency covers the rest (a changed
UIDVALIDITY, a commit whose move did not happen). imapclient blocks, so each poller runs
in a worker thread, started by the daemon's scheduler.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy.orm import Session, sessionmaker

from maild.config import Config, ImapConfig, MailboxConfig
from maild.domain.errors import ParseError
from maild.domain.message import InboundMessage
from maild.ingest.committer import Committer, Pending
from maild.ingest.delivery import Delivery, header_envelope_sender, header_recipients
from maild.ingest.parse import parse_message
from maild.ingest.parse_pool import ParsePool, Parsing
from maild.ingest.wire import Envelope, ParsedMail
from maild.runtime import Runtime
from maild.store.models import MailboxState
from maild.supervise import Incident, TaskHealth, describe
from maild.threading.tokens import split_plus_address

log = structlog.get_logger("maild.imap")

FETCH_BATCH = 50
BACKOFF_FIRST_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 60.0  # a mailbox back up is polled again within a minute
IDLE_CHECK_SECONDS = 1.0


class MailboxUnavailable(Exception):
    """Connecting, logging in or selecting failed; carries what the server said."""


def imap_credentials(cfg: Config, imap: ImapConfig) -> tuple[str, str]:
    """("password", secret) or ("oauth2", access token): read fresh on every connect, so an
    expired OAuth2 token is replaced by the file's or the command's newer one."""
    if imap.oauth2 is not None:
        if imap.oauth2.token_command:
            r = subprocess.run(imap.oauth2.token_command, shell=True, capture_output=True, text=True,
                               timeout=60, cwd=cfg.base_dir)
            if r.returncode != 0:
                raise MailboxUnavailable(f"oauth2 token_command exited {r.returncode}: {r.stderr.strip()[:300]}")
            return "oauth2", r.stdout.strip()
        if imap.oauth2.token_file:
            return "oauth2", cfg.path(imap.oauth2.token_file).read_text().strip()
    if imap.password_file:
        return "password", cfg.path(imap.password_file).read_text().rstrip("\r\n")
    raise MailboxUnavailable("no password_file or oauth2 configured")


def connect(cfg: Config, imap: ImapConfig, timeout: float = 30.0) -> IMAPClient:
    """A logged-in client; raises MailboxUnavailable with the server's answer."""
    context = ssl.create_default_context(cafile=str(cfg.path(imap.ca_file)) if imap.ca_file else None)
    try:
        client = IMAPClient(imap.host, port=imap.port, ssl=imap.tls == "implicit", ssl_context=context,
                            timeout=timeout)
        if imap.tls == "starttls":
            client.starttls(context)
        kind, secret = imap_credentials(cfg, imap)
        if kind == "oauth2":
            client.oauth2_login(imap.username, secret)
        else:
            client.login(imap.username, secret)
    except LoginError as e:
        raise MailboxUnavailable(f"login as {imap.username} refused: {_server_text(e)}") from e
    except (IMAPClientError, OSError, ssl.SSLError) as e:
        raise MailboxUnavailable(f"{imap.host}:{imap.port}: {type(e).__name__}: {_server_text(e)}") from e
    return client


def _server_text(e: BaseException) -> str:
    text = str(e)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text


def probe_mailbox(cfg: Config, mailbox: MailboxConfig) -> str:
    """For `check-config --connect`: log in, select the folder, say what is there."""
    assert mailbox.imap is not None
    client = connect(cfg, mailbox.imap)
    try:
        info = client.select_folder(mailbox.imap.folder, readonly=True)
    except IMAPClientError as e:
        raise MailboxUnavailable(f"folder {mailbox.imap.folder!r}: {_server_text(e)}") from e
    finally:
        with contextlib.suppress(IMAPClientError, OSError):
            client.logout()
    return f"ok: {info.get(b'EXISTS', 0)} messages in {mailbox.imap.folder}"


def imap_delivery(mailbox: MailboxConfig) -> Callable[[InboundMessage, Runtime], list[Delivery]]:
    """IMAP has no envelope: the mailbox itself, plus its +token forms named in Delivered-To or
    X-Original-To (how hosted mail keeps the address a reply was sent to); Return-Path stands in
    for the envelope sender."""
    def plan(msg: InboundMessage, rt: Runtime) -> list[Delivery]:
        recipients = [mailbox.address.lower()]
        for address in header_recipients(msg):
            if split_plus_address(address)[0] == mailbox.address.lower() and address not in recipients:
                recipients.append(address)
        return [Delivery(mailbox=mailbox, recipients=recipients, envelope_sender=header_envelope_sender(msg),
                         via="imap")]
    return plan


@dataclass
class PollerHealth:
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    ingested: int = 0
    uidvalidity_resets: int = 0
    history: list[str] = field(default_factory=list)


class ImapPoller:
    """One hosted mailbox. `cycle()` drains it, then IDLEs (where offered) until `budget` runs out."""

    def __init__(self, mailbox: MailboxConfig, committer: Committer, sessions: sessionmaker[Session],
                 clock: Callable[[], datetime], parser: ParsePool | None = None):
        """`parser`: the daemon's parse workers, so that a batch is parsed in parallel; None
        parses in the poller's thread."""
        assert mailbox.imap is not None
        self.mailbox = mailbox
        self.imap = mailbox.imap
        self.committer = committer
        self.parser = parser
        self.sessions = sessions
        self.clock = clock
        self.state_key = f"imap:{mailbox.address.lower()}:{mailbox.imap.folder}"
        self.client: IMAPClient | None = None
        self.stopping = threading.Event()
        self.running = threading.Lock()
        self.health = PollerHealth()
        self.log = log.bind(mailbox=mailbox.address, folder=mailbox.imap.folder)
        self.task_health = TaskHealth(self.state_key)  # what the daemon's Health shows of this poller
        # one warning when the mailbox becomes unavailable, one info line when it is back
        self.incident = Incident(self.task_health, self.log, failing="imap mailbox unavailable",
                                 recovered="imap mailbox reachable again", first=BACKOFF_FIRST_SECONDS,
                                 cap=BACKOFF_MAX_SECONDS)

    # --- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    def wait_stopped(self, timeout: float) -> bool:
        if self.running.acquire(timeout=timeout):
            self.running.release()
            return True
        return False

    def cycle(self, budget: float) -> None:
        """Called by the scheduler in a worker thread; never raises."""
        if not self.running.acquire(blocking=False):
            return
        try:
            if time.monotonic() < self.health.retry_at or self.stopping.is_set():
                return
            deadline = time.monotonic() + budget
            client = self.client or self._connect()
            self.drain(client)
            while client.has_capability("IDLE") and not self.stopping.is_set() and time.monotonic() < deadline:
                if self._idle(client, deadline):
                    self.drain(client)
            self.incident.succeeded()
            self.health.failures = 0
        except Exception as e:  # unreachable, refused, the database away, or a bug: back off, never end
            self._failed(e)
        finally:
            self.running.release()

    def _connect(self) -> IMAPClient:
        client = connect(self.committer.runtime.config, self.imap)
        if self.imap.done_folder and not client.folder_exists(self.imap.done_folder):
            client.create_folder(self.imap.done_folder)
        self.client = client
        self.log.info("imap connected", host=self.imap.host, idle=client.has_capability("IDLE"))
        return client

    def _failed(self, e: BaseException) -> None:
        self._drop()
        h = self.health
        h.failures += 1
        h.last_error = _server_text(e) if isinstance(e, MailboxUnavailable) else describe(e)
        delay = self.incident.failed(h.last_error)
        h.retry_at = time.monotonic() + delay

    def _drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # the connection is gone anyway
                self.client.shutdown()
        self.client = None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:
                self._drop()
            self.client = None

    # --- IDLE ---------------------------------------------------------------------------
    def _idle(self, client: IMAPClient, deadline: float) -> bool:
        """Waits for news from the server; True if there may be new mail."""
        client.idle()
        news = False
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                responses = client.idle_check(timeout=IDLE_CHECK_SECONDS)
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    news = True
                    break
        finally:
            client.idle_done()
        return news

    # --- draining -----------------------------------------------------------------------
    def _state(self) -> tuple[int | None, int]:
        with self.sessions() as s:
            row = s.get(MailboxState, self.state_key)
            return (row.uidvalidity, row.last_uid) if row else (None, 0)

    def _cursor_writer(self, uidvalidity: int, uid: int) -> Callable[[Session], None]:
        key = self.state_key

        def write(session: Session) -> None:
            row = session.get(MailboxState, key)
            if row is None:
                session.add(MailboxState(mailbox=key, uidvalidity=uidvalidity, last_uid=uid))
            elif row.uidvalidity != uidvalidity:
                row.uidvalidity, row.last_uid = uidvalidity, uid
            else:
                row.last_uid = max(row.last_uid, uid)
        return write

    def drain(self, client: IMAPClient) -> int:
        """Stores every new message of the folder; returns how many were taken."""
        info = client.select_folder(self.imap.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        known_validity, last_uid = self._state()
        if known_validity is not None and known_validity != uidvalidity:
            self.log.warning("imap UIDVALIDITY changed: re-reading the folder; Message-IDs prevent duplicates",
                             old=known_validity, new=uidvalidity)
            self.health.uidvalidity_resets += 1
            last_uid = 0
            self.committer.writer.submit(self._cursor_writer(uidvalidity, 0)).result()
        if self.imap.done_folder:
            uids = sorted(client.search("ALL"))
            committed = [u for u in uids if u <= last_uid]
            if committed:  # stored before a crash, not yet moved
                self._finish(client, committed)
        else:
            uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        fresh = [u for u in uids if u > last_uid]
        taken = 0
        for i in range(0, len(fresh), FETCH_BATCH):
            if self.stopping.is_set():
                break
            batch = fresh[i:i + FETCH_BATCH]
            done = self._ingest_batch(client, batch, uidvalidity)
            self._finish(client, done)
            taken += len(done)
            if len(done) < len(batch):
                raise MailboxUnavailable("storage failed; the rest waits for the next cycle")
        return taken

    def _ingest_batch(self, client: IMAPClient, batch: list[int], uidvalidity: int) -> list[int]:
        """Fetches a batch, stores each message, waits for the commit; returns the stored UIDs."""
        rt = self.committer.runtime
        limit = rt.config.smtp.max_message_bytes
        sizes = client.fetch(batch, ["RFC822.SIZE"])
        bodies = client.fetch(batch, ["BODY.PEEK[]"])
        plan = imap_delivery(self.mailbox)
        envelope = Envelope(None, [self.mailbox.address], via="imap")
        pending: list[tuple[int, Pending]] = []
        fetched = [(uid, raw) for uid in batch if (raw := bodies.get(uid, {}).get(b"BODY[]")) is not None]
        # (a missing body: deleted meanwhile by another client)
        parsing = {uid: self.parser.submit(raw) for uid, raw in fetched
                   if self.parser is not None and int(sizes.get(uid, {}).get(b"RFC822.SIZE", len(raw))) <= limit}
        for uid, raw in fetched:
            size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", len(raw)))
            cursor = self._cursor_writer(uidvalidity, uid)
            if size > limit:
                reason = f"larger than max_message_bytes ({size} > {limit})"
                pending.append((uid, self.committer.quarantine(raw, reason, envelope, also=cursor)))
                continue
            parsed = self._parsed(raw, parsing.get(uid), rt.config.protection.max_mime_parts)
            pending.append((uid, self.committer.submit(parsed, envelope, plan=plan, also=cursor)))
        stored = []
        for uid, waiting in pending:
            if not waiting.finish().stored:
                break  # keep order: nothing after a failure is moved, the cursor stays before it
            stored.append(uid)
        self.health.ingested += len(stored)
        return stored

    @staticmethod
    def _parsed(raw: bytes, parsing: Parsing | None, max_parts: int | None) -> ParsedMail:
        """The mail parsed by a worker (`parsing`) or here; the committer's pipeline then
        stores the blobs of one parsed here."""
        try:
            msg = parsing.result() if parsing is not None else parse_message(raw, max_parts=max_parts)
        except (ParseError, OSError) as e:  # OSError: the worker could not write the blobs
            return ParsedMail(e, raw)
        return ParsedMail(msg)

    def _finish(self, client: IMAPClient, uids: list[int]) -> None:
        """After commit only: move to done_folder, or flag \\Seen."""
        if not uids:
            return
        if self.imap.done_folder:
            if client.has_capability("MOVE"):
                client.move(uids, self.imap.done_folder)
            else:
                client.copy(uids, self.imap.done_folder)
                client.delete_messages(uids)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(uids)
                else:
                    client.expunge()
        else:
            client.add_flags(uids, [b"\\Seen"])
