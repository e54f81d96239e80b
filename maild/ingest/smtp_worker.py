"""SMTP sessions served inside a parse worker, so that the daemon's process only commits.

The daemon binds the listening sockets and every worker accepts on them. A worker serves
each session with the daemon's own protocol and RCPT check (ingest.smtp), parses a complete
mail and writes its blobs as it would on the daemon's request, then hands the parsed mail
over its hand-over socket (`HandedOver`) and waits for the reply to DATA: the daemon
commits it (or quarantines it) exactly as a mail it received itself, and sends 250 only
after the commit. On the daemon's process that leaves a frame in and a line out per mail,
instead of the protocol, the DATA and the raw bytes' trip to a worker, all of which held
the GIL the writer thread needs.

The worker still answers the daemon's parse requests (IMAP) on its request socket, and three
more: start accepting (the daemon is ready), the mailboxes after a reload, and a stop (a new
session hears 421; a DATA arriving may end and is answered, smtp.Drain; the mail in flight
finished; then the connections not yet accepted hear 421 and the worker stops accepting).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import socket
from pathlib import Path

import structlog

from maild.ingest.parse_pool import (
    _HANDOVER,
    _MAILBOXES,
    _SERVE,
    _STOP,
    Channel,
    SmtpInWorkers,
    _pickled,
    answer_frame,
    answer_request,
    parse_for_handover,
    read_request,
)
from maild.ingest.smtp import TRY_LATER, MaildHandler, start_smtp_servers

log = structlog.get_logger("maild.smtp")


def serve_in_worker(requests: socket.socket, handover: socket.socket, raw_root: str, attachment_root: str,
                    smtp: SmtpInWorkers, max_parts: int | None = None, slot: int = 0) -> None:
    """`max_parts`: attachments kept per mail; `slot`: this worker's row in the session table
    the workers share (smtp.gate), so that the session caps hold over all of them together."""
    from maild.logs import configure_logging

    configure_logging()
    asyncio.run(_serve(requests, handover, raw_root, attachment_root, smtp, max_parts, slot))


class _WorkerSessions:
    """The worker's SMTP side: what is ours, and the mail being handed over."""

    def __init__(self, daemon: Channel, smtp: SmtpInWorkers, roots: tuple[str, str], max_parts: int | None = None):
        self.daemon = daemon
        self.mailboxes = smtp.mailboxes
        self.roots = roots
        self.max_parts = max_parts
        self.in_flight = 0
        self._idle = asyncio.Event()  # no mail being handed over
        self._idle.set()
        self._ids = itertools.count(1)

    def is_ours(self, base: str) -> bool:
        return base.lower() in self.mailboxes

    async def deliver(self, raw: bytes | Path | OSError, mail_from: str, recipients: list[str]) -> str:
        self.in_flight += 1
        self._idle.clear()
        try:
            handed = parse_for_handover(raw, mail_from, recipients, *self.roots, self.max_parts)
            try:
                reply = await self.daemon.ask(next(self._ids), _HANDOVER,
                                              pickle.dumps(handed, pickle.HIGHEST_PROTOCOL))
            except Exception as e:  # the daemon is gone or failed on it: nothing was promised
                log.error("message not stored, sender must retry", error=f"{type(e).__name__}: {e}", via="smtp")
                return TRY_LATER
            assert isinstance(reply, str)
            return reply
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def finish(self, timeout: float) -> None:
        """Waits (up to `timeout`) for the mail being handed over to get its reply."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


async def _serve(requests: socket.socket, handover: socket.socket, raw_root: str, attachment_root: str,
                 smtp: SmtpInWorkers, max_parts: int | None, slot: int) -> None:
    reader, writer = await asyncio.open_connection(sock=requests)
    daemon = Channel(*await asyncio.open_connection(sock=handover), name="the daemon")
    sessions = _WorkerSessions(daemon, smtp, (raw_root, attachment_root), max_parts)
    servers = await start_smtp_servers(MaildHandler(sessions.is_ours, sessions.deliver), smtp.listen,
                                       smtp.hostname, smtp.max_bytes,
                                       Path(smtp.spool_dir) if smtp.spool_dir else None, smtp.serving,
                                       smtp.gate.for_slot(slot) if smtp.gate is not None else None)
    try:
        while True:
            request_id, kind, payload = await read_request(reader)
            if kind == _MAILBOXES:
                sessions.mailboxes = frozenset(payload.decode().split("\n")) - {""}
                body = _pickled(True, None)
            elif kind == _SERVE:
                for s in servers:
                    await s.start_serving()
                body = _pickled(True, None)
            elif kind == _STOP:  # no new session or mail; what arrives in time is answered (smtp.Drain)
                timeout = float(payload.decode())
                for s in servers:
                    s.close()  # a connection made from now on hears 421 4.3.2
                if servers:
                    await servers[0].drain.finish(timeout)
                await sessions.finish(timeout)
                for s in servers:  # those still waiting to be accepted hear 421 too; then no more
                    await s.wait_closed()
                body = _pickled(True, None)
            else:
                body = answer_request(kind, payload, raw_root, attachment_root, max_parts)
            writer.write(answer_frame(request_id, body))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the daemon closed our socket: it is stopping, or gone
