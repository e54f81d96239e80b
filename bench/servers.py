"""The do-nothing SMTP server and the outbound sink, each in a process of its own.

Both are aiosmtpd servers whose handler counts and answers 250, storing nothing. They run in
separate (spawned) processes so they do not share the load generator's GIL: the do-nothing
server is the yardstick (the most a Python SMTP server can take on this machine), and the
sink stands for maild's relay while we count the acknowledgements that reach it.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from maild.ingest.smtp import MaildSMTP
from tests.support.sink import free_port


class _LongLineSMTP(SMTP):
    line_length_limit = 1024 * 1024  # as maild's receiver, so both parse the same way


class _CountingHandler:
    def __init__(self, counters: Any, staff_domain: str) -> None:
        self.counters = counters  # [messages, customer recipients, staff recipients]
        self.staff_suffix = "@" + staff_domain.lower() if staff_domain else None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        staff = sum(1 for r in envelope.rcpt_tos if self.staff_suffix and r.lower().endswith(self.staff_suffix))
        with self.counters.get_lock():
            self.counters[0] += 1
            self.counters[1] += len(envelope.rcpt_tos) - staff
            self.counters[2] += staff
        return "250 2.0.0 OK"


def _serve(port: int, counters: Any, ready: Any, max_bytes: int, staff_domain: str, block_reader: bool) -> None:
    protocol = MaildSMTP if block_reader else _LongLineSMTP

    async def main() -> None:
        handler = _CountingHandler(counters, staff_domain)
        loop = asyncio.get_running_loop()
        await loop.create_server(
            lambda: protocol(handler, hostname="127.0.0.1", ident="do-nothing", data_size_limit=max_bytes,
                             decode_data=False),
            host="127.0.0.1", port=port)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class CountingServer:
    """An aiosmtpd that answers 250 and counts, in its own process; the counts are read live.
    Recipients at `staff_domain` (the agents) are counted apart from the customers.
    `block_reader`: read DATA as maild does (ingest.smtp_data) instead of aiosmtpd's line by
    line: the sink, which stands for a relay on another machine, then costs this one less."""

    def __init__(self, max_bytes: int = 26_214_400, staff_domain: str = "", block_reader: bool = False) -> None:
        self._ctx = mp.get_context("spawn")
        self.port = free_port()
        self._counters = self._ctx.Array("q", 3)
        self._ready = self._ctx.Event()
        self._proc = self._ctx.Process(target=_serve, name=f"smtp-counting-{self.port}", daemon=True,
                                       args=(self.port, self._counters, self._ready, max_bytes, staff_domain,
                                             block_reader))

    def start(self, timeout: float = 20.0) -> CountingServer:
        self._proc.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"counting SMTP server on port {self.port} did not start in {timeout}s")
        return self

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def count(self) -> int:
        """Messages taken."""
        return int(self._counters[0])

    @property
    def customer_rcpts(self) -> int:
        return int(self._counters[1])

    @property
    def staff_rcpts(self) -> int:
        return int(self._counters[2])

    def stop(self) -> None:
        if self._proc.pid is None:  # never started
            return
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(10)

