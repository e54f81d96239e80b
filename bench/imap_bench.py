"""IMAP drain: how fast `maild run` empties a hosted mailbox that holds a backlog.

A throw-away Dovecot (tests/support/dovecot.py) gets N generated messages in INBOX over one
IMAP connection; then maild starts with that mailbox configured, and the clock runs from its
start until every message is stored in the database and moved to the done folder — the
moment a team that just connected a busy mailbox would call it caught up.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from imapclient.exceptions import IMAPClientError

from bench.desk import Desk
from bench.loadgen import generate
from bench.report import say
from bench.servers import CountingServer
from tests.support.dovecot import Dovecot, dovecot_problem

USER, PASSWORD = "billing@example.com", "bench-pw"
DONE_FOLDER = "Processed"


def imap_problem() -> str | None:
    """Why the IMAP benchmark cannot run here, or None."""
    return dovecot_problem()


def _imap_toml(port: int) -> str:
    return (f'\n[mailboxes.imap]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\nusername = "{USER}"\n'
            f'password_file = "imap.pass"\nfolder = "INBOX"\ndone_folder = "{DONE_FOLDER}"\npoll_seconds = 5\n')


def run_imap(messages: int, seed: int = 7, timeout: float = 300.0) -> dict[str, Any]:
    mails = generate(messages, seed, rcpt=USER)
    # not under a 0700 folder: Dovecot's own users must be able to walk into it
    folder = Path(tempfile.mkdtemp(prefix="maild-bench-dovecot-"))
    folder.chmod(0o755)
    dv = Dovecot(folder, {USER: PASSWORD})
    sink = CountingServer()
    desk: Desk | None = None
    try:
        dv.start()
        say(f"imap: APPENDing {messages} messages to a throw-away Dovecot, then draining them with maild")
        t0 = time.perf_counter()
        with dv.client(USER) as c:
            for m in mails:
                c.append("INBOX", m.raw)
        append_s = time.perf_counter() - t0
        sink.start()
        desk = Desk("sqlite", sink.port, _imap_toml(dv.port))
        (desk.folder / "imap.pass").write_text(PASSWORD + "\n")
        t0 = time.perf_counter()
        startup = desk.start()
        stored = moved = 0
        with dv.client(USER) as watcher:
            while time.perf_counter() - t0 < timeout:
                stored = desk.counts().messages
                if stored >= messages:
                    try:
                        moved = int(watcher.folder_status(DONE_FOLDER, [b"MESSAGES"])[b"MESSAGES"])
                    except IMAPClientError:
                        moved = 0  # the done folder is not there yet
                    if moved >= messages:
                        break
                time.sleep(0.25)
        drain_s = time.perf_counter() - t0
        inbox_left = dv.count(USER, "INBOX")
        figures: dict[str, Any] = {
            "messages": messages,
            "append_s": round(append_s, 2),
            "startup_s": round(startup, 2),
            "drain_s": round(drain_s, 2),
            "msgs_per_s": round(messages / drain_s, 1) if drain_s else 0.0,
            "stored": stored,
            "moved": moved,
            "inbox_left": inbox_left,
            "all_drained": stored == messages and moved == messages and inbox_left == 0,
            "peak_rss_mb": round(desk.peak_rss_mb(), 1),
            "maild_cpu_s": round(desk.cpu_seconds(), 2),
        }
        if not figures["all_drained"]:
            figures["log_tail"] = desk.log_tail()[-2000:]
        return figures
    finally:
        if desk is not None:
            desk.close()
        sink.stop()
        dv.stop()
        shutil.rmtree(folder, ignore_errors=True)
