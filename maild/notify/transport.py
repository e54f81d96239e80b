"""Delivery of one rendered mail: an SMTP relay or a Maildir (SPEC §2, §3 `[outbound]`).

Errors are sorted into temporary (retry with backoff) and permanent (record and stop), the
way an MTA sorts 4xx and 5xx.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from maild.config import Config


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    def send(self, mail_from: str, recipient: str, raw: bytes) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """Within it, sends may share one connection."""
        ...


class MaildirTransport:
    """Writes each mail into `new/` of a Maildir, so a person can read what would be sent."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def batch(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        name = f"{time.time_ns()}.{os.getpid()}_{os.urandom(4).hex()}.{socket.gethostname()}"
        tmp = self.root / "tmp" / name
        head = f"Return-Path: <{mail_from}>\r\nDelivered-To: {recipient}\r\n".encode()
        try:
            with open(tmp, "wb") as f:
                f.write(head + raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "new" / name)
        except OSError as e:
            raise DeliveryError(f"maildir {self.root}: {e}", permanent=False) from e


class SmtpTransport:
    def __init__(self, url: str, password: str | None, timeout: float, ca_file: Path | None = None):
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[self.scheme]
        self.port = parts.port or default_port
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else password
        self.timeout = timeout
        self.ca_file = ca_file
        self._client: smtplib.SMTP | None = None
        self._batching = False

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        if self.scheme == "smtps":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self._tls())
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.scheme == "smtp+starttls":
            try:
                client.starttls(context=self._tls())
            except BaseException:
                client.close()
                raise
        return client

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One connection for a pass of the outbox, not one a mail."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()

    def _session(self) -> smtplib.SMTP:
        if self._client is None:
            client = self._connect()
            if self.user:
                try:
                    client.login(self.user, self.password or "")
                except BaseException:
                    client.close()
                    raise
            self._client = client
        return self._client

    def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        try:
            client = self._session()
            try:
                client.sendmail(mail_from, [recipient], raw)
            except smtplib.SMTPRecipientsRefused:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    client.rset()  # the connection serves the next mail of the batch
                raise
        except smtplib.SMTPRecipientsRefused as e:
            self._drop_unless_batching()
            code, text = next(iter(e.recipients.values()))
            raise DeliveryError(f"{code} {text.decode(errors='replace')}", permanent=code >= 500) from e
        except smtplib.SMTPAuthenticationError as e:
            self._drop()  # our relay password is wrong: keep the mail until the config is fixed
            raise DeliveryError(f"relay login refused: {e.smtp_code} {e.smtp_error!r}", permanent=False) from e
        except smtplib.SMTPResponseException as e:
            self._drop()
            err = e.smtp_error
            msg = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            raise DeliveryError(f"{e.smtp_code} {msg}", permanent=e.smtp_code >= 500) from e
        except (OSError, smtplib.SMTPException) as e:
            self._drop()
            raise DeliveryError(f"{self.host}:{self.port}: {type(e).__name__}: {e}", permanent=False) from e
        self._drop_unless_batching()

    def _drop(self) -> None:
        """After an error the connection's state is unknown: the next send opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.close()

    def _drop_unless_batching(self) -> None:
        if not self._batching:
            self._close()


def make_transport(cfg: Config) -> Transport:
    url = cfg.outbound.url
    if url.startswith("maildir://"):
        return MaildirTransport(cfg.path(unquote(url[len("maildir://"):])))
    password = None
    if cfg.outbound.password_file:
        password = cfg.path(cfg.outbound.password_file).read_text().strip()
    ca_file = cfg.path(cfg.outbound.ca_file) if cfg.outbound.ca_file else None
    return SmtpTransport(url, password, cfg.outbound.timeout_seconds, ca_file)
