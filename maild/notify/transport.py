"""Delivery of one rendered mail: an SMTP relay or a Maildir (SPEC §2, §3 `[outbound]`).

Errors are sorted into temporary (retry with backoff) and permanent (record and stop), the
way an MTA sorts 4xx and 5xx.

Internationalized addresses (RFC 6531): an ASCII local part with an internationalized domain
travels in IDNA form, in plain SMTP. A UTF-8 local part, or a mail whose header section holds
UTF-8 (notify.compose writes such an address as it is), needs the relay's SMTPUTF8; a relay
that does not offer it fails that mail permanently, with a reason that says so, and the
connection serves the rest of the pass.
"""

from __future__ import annotations

import contextlib
import ipaddress
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
from maild.headers import ascii_address, clean_text, idna_domain


class DeliveryError(Exception):
    """`permanent`: the mail will never go (5xx): record it and stop. `relay`: the way out failed,
    not this mail (no answer in time, unreachable, 421, a wrong password, a full disk): the
    outbox ends its pass and backs off instead of trying every other mail against it."""

    def __init__(self, message: str, *, permanent: bool, relay: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.relay = relay


class Transport(Protocol):
    def send(self, mail_from: str, recipient: str, raw: bytes) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """Within it, sends may share one connection."""
        ...


class MaildirTransport:
    """Writes each mail into `new/` of a Maildir, so a person can read what would be sent."""

    config: Config | None = None  # see make_transport

    def __init__(self, root: Path):
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def batch(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        name = f"{time.time_ns()}.{os.getpid()}_{os.urandom(4).hex()}.{socket.gethostname()}"
        tmp = self.root / "tmp" / name
        head = (f"Return-Path: <{_header_form(mail_from)}>\r\n"
                f"Delivered-To: {_header_form(recipient)}\r\n").encode()
        try:
            with open(tmp, "wb") as f:
                f.write(head + raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "new" / name)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DeliveryError(f"maildir {self.root}: {e}", permanent=False, relay=True) from e


def _header_form(address: str) -> str:
    """An envelope address as a header line of the Maildir file: ASCII where it can be (IDNA),
    else UTF-8 as the mail's own headers carry it, and never a line break."""
    return ascii_address(address) or clean_text(address, 998)


def _envelope_form(address: str) -> tuple[str, bool]:
    """The address for MAIL FROM / RCPT TO, and whether it takes SMTPUTF8: an internationalized
    domain goes in IDNA form; only a UTF-8 local part needs the extension."""
    if address.isascii():
        return address, False
    ascii_form = ascii_address(address)
    return (ascii_form, False) if ascii_form is not None else (address, True)


def ehlo_name(hostname: str) -> str:
    """`[server] hostname` as the EHLO argument (RFC 5321 §4.1.1.1): a domain in IDNA form, or an
    IP address as an address literal."""
    try:
        ip = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return idna_domain(hostname) or hostname.encode("ascii", "replace").decode("ascii")
    return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"


class _Deadline:
    """For smtplib's clients: every read and write of one send shares one deadline, so a relay
    that answers slowly or not at all holds a send for `timeout` in all, not per line."""

    deadline: float | None = None
    timeout: float
    sock: socket.socket | None

    def _arm(self) -> None:
        if self.deadline is not None and self.sock is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RelayTimeout("the relay did not answer in time")
            self.sock.settimeout(left)

    def send(self, s: str | bytes) -> None:
        self._arm()
        try:
            super().send(s)  # type: ignore[misc]
        except smtplib.SMTPServerDisconnected as e:  # smtplib reports its socket's timeout as a disconnect
            if isinstance(e.__context__, TimeoutError):
                raise RelayTimeout("the relay took no data in time") from None
            raise

    def getreply(self) -> tuple[int, bytes]:
        self._arm()
        try:
            return super().getreply()  # type: ignore[misc, no-any-return]
        except smtplib.SMTPServerDisconnected as e:
            if isinstance(e.__context__, TimeoutError):
                raise RelayTimeout("the relay did not answer in time") from None
            raise


class RelayTimeout(TimeoutError):
    """One send's deadline passed."""


class _SMTP(_Deadline, smtplib.SMTP):
    def __init__(self, host: str, port: int, timeout: float, deadline: float, local_hostname: str | None):
        self.deadline = deadline
        super().__init__(host, port, timeout=timeout, local_hostname=local_hostname)


class _SMTP_SSL(_Deadline, smtplib.SMTP_SSL):
    def __init__(self, host: str, port: int, timeout: float, deadline: float, context: ssl.SSLContext,
                 local_hostname: str | None):
        self.deadline = deadline
        super().__init__(host, port, timeout=timeout, context=context, local_hostname=local_hostname)


_Client = _SMTP | _SMTP_SSL
# The relay closed the connection (421, or it dropped): the mail is tried once more on a new one.
_RECONNECT = (smtplib.SMTPServerDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
QUIT_SECONDS = 5.0


class SmtpTransport:
    config: Config | None = None  # see make_transport

    def __init__(self, url: str, password: str | None, timeout: float, ca_file: Path | None = None, *,
                 local_hostname: str | None = None):
        """`local_hostname`: the name maild greets the relay with (`[server] hostname`); None is
        smtplib's default, this machine's FQDN, which relays and spam filters may score or refuse."""
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[self.scheme]
        self.port = parts.port or default_port
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else password
        self.timeout = timeout
        self.ca_file = ca_file
        self.local_hostname = ehlo_name(local_hostname) if local_hostname else None
        self._client: _Client | None = None
        self._batching = False

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _connect(self, deadline: float) -> _Client:
        if self.scheme == "smtps":
            return _SMTP_SSL(self.host, self.port, self.timeout, deadline, self._tls(), self.local_hostname)
        client = _SMTP(self.host, self.port, self.timeout, deadline, self.local_hostname)
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
        """QUIT, briefly: a relay that does not answer it is not waited for."""
        client, self._client = self._client, None
        if client is not None:
            client.deadline = time.monotonic() + min(self.timeout, QUIT_SECONDS)
            try:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    client.quit()
            finally:
                client.close()

    def _session(self, deadline: float) -> _Client:
        if self._client is None:
            client = self._connect(deadline)
            if self.user:
                try:
                    client.login(self.user, self.password or "")
                except BaseException:
                    client.close()
                    raise
            self._client = client
        self._client.deadline = deadline
        return self._client

    def send(self, mail_from: str, recipient: str, raw: bytes) -> None:
        """Sends within `timeout` in all. A 421 or a dropped connection is tried once more on a
        new connection (a reused connection the relay has closed costs the mail nothing); what
        fails then is the mail's attempt."""
        try:
            self._send_once(mail_from, recipient, raw)
        except _Retry:
            self._drop()
            try:
                self._send_once(mail_from, recipient, raw)
            except _Retry as again:
                raise again.error from None
        self._drop_unless_batching()

    def _options(self, client: _Client, mail_from: str, recipient: str, raw: bytes) -> tuple[str, str, list[str]]:
        """MAIL FROM, RCPT TO and the MAIL options of one send; a permanent DeliveryError if the
        mail needs SMTPUTF8 and the relay does not offer it (checked before MAIL: the
        connection stays clean for the next mail)."""
        sender, sender_utf8 = _envelope_form(mail_from)
        rcpt, rcpt_utf8 = _envelope_form(recipient)
        eight_bit = not raw.isascii()
        utf8_head = eight_bit and not raw.partition(b"\r\n\r\n")[0].isascii()
        client.ehlo_or_helo_if_needed()
        client.command_encoding = "ascii"  # smtplib leaves it at utf-8 after an SMTPUTF8 mail
        options = ["BODY=8BITMIME"] if eight_bit and client.has_extn("8bitmime") else []
        if not (sender_utf8 or rcpt_utf8 or utf8_head):
            return sender, rcpt, options
        if client.has_extn("smtputf8"):
            return sender, rcpt, ["SMTPUTF8", *options]
        needed_for = (f"{recipient} (an internationalized address)" if rcpt_utf8
                      else f"the sender {mail_from} (an internationalized address)" if sender_utf8
                      else "this mail's UTF-8 header (an internationalized address in it)")
        raise DeliveryError(f"relay {self.host}:{self.port} does not offer SMTPUTF8, needed for {needed_for}",
                            permanent=True)

    def _send_once(self, mail_from: str, recipient: str, raw: bytes) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            client = self._session(deadline)
            sender, rcpt, options = self._options(client, mail_from, recipient, raw)
            try:
                client.sendmail(sender, [rcpt], raw, mail_options=options)
            except smtplib.SMTPRecipientsRefused as e:
                if _code_of(e) != 421:
                    with contextlib.suppress(OSError, smtplib.SMTPException):
                        client.rset()  # the connection serves the next mail of the batch
                raise
        except DeliveryError:
            self._drop_unless_batching()
            raise
        except UnicodeError as e:  # smtplib would not encode a command: never so after _options
            self._drop()
            raise DeliveryError(f"relay {self.host}:{self.port}: {e}", permanent=True) from e
        except smtplib.SMTPRecipientsRefused as e:
            code = _code_of(e)
            text = next(iter(e.recipients.values()))[1].decode(errors="replace")
            if code == 421:
                self._drop()
                raise _Retry(DeliveryError(f"{code} {text}", permanent=False, relay=True)) from e
            self._drop_unless_batching()
            raise DeliveryError(f"{code} {text}", permanent=code >= 500) from e
        except smtplib.SMTPAuthenticationError as e:
            self._drop()  # our relay password is wrong: keep the mail until the config is fixed
            raise DeliveryError(f"relay login refused: {e.smtp_code} {e.smtp_error!r}", permanent=False,
                                relay=True) from e
        except smtplib.SMTPResponseException as e:
            self._drop()
            err = e.smtp_error
            msg = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            error = DeliveryError(f"{e.smtp_code} {msg}", permanent=e.smtp_code >= 500, relay=e.smtp_code == 421)
            if e.smtp_code == 421:
                raise _Retry(error) from e
            raise error from e
        except TimeoutError as e:  # no retry: a relay that hangs would hold the pass twice as long
            self._drop()
            raise DeliveryError(f"{self.host}:{self.port}: no answer within {self.timeout:g} s", permanent=False,
                                relay=True) from e
        except (OSError, smtplib.SMTPException) as e:
            self._drop()
            error = DeliveryError(f"{self.host}:{self.port}: {type(e).__name__}: {e}", permanent=False, relay=True)
            if isinstance(e, _RECONNECT):
                raise _Retry(error) from e
            raise error from e

    def _drop(self) -> None:
        """After an error the connection's state is unknown: the next send opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.close()

    def _drop_unless_batching(self) -> None:
        if not self._batching:
            self._close()


class _Retry(Exception):
    """The relay closed the connection: worth one more try on a new one."""

    def __init__(self, error: DeliveryError):
        super().__init__(str(error))
        self.error = error


def _code_of(e: smtplib.SMTPRecipientsRefused) -> int:
    return int(next(iter(e.recipients.values()))[0])


def make_transport(cfg: Config) -> Transport:
    """The transport `[outbound] url` names. It keeps `cfg` as `config`: an outbox worker the
    daemon gives no runtime builds its templates from it (notify.outbox)."""
    url = cfg.outbound.url
    transport: MaildirTransport | SmtpTransport
    if url.startswith("maildir://"):
        transport = MaildirTransport(cfg.path(unquote(url[len("maildir://"):])))
    else:
        password = None
        if cfg.outbound.password_file:
            password = cfg.path(cfg.outbound.password_file).read_text().strip()
        ca_file = cfg.path(cfg.outbound.ca_file) if cfg.outbound.ca_file else None
        transport = SmtpTransport(url, password, cfg.outbound.timeout_seconds, ca_file,
                                  local_hostname=cfg.server.hostname)
    transport.config = cfg
    return transport
