"""`maild run` as a subprocess on real ports, driven as customers and admins drive it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.support.sink import free_port

AGENTS_TOML = """
[[teams]]
name = "support"
agents = ["alice@example.com", "bob@example.com"]

[[teams]]
name = "billing"
agents = ["carol@example.com"]

[[agents]]
email = "alice@example.com"
name = "Alice Agent"
role = "manager"

[[agents]]
email = "bob@example.com"
name = "Bob Agent"

[[agents]]
email = "carol@example.com"
name = "Carol Agent"
"""


def write_config(folder: Path, *, db_url: str, outbound_url: str, smtp_port: int,
                 max_bytes: int = 2_000_000, extra: str = "") -> Path:
    cfg = folder / "maild.toml"
    cfg.write_text(textwrap.dedent(f"""
        [database]
        url = "{db_url}"

        [server]
        hostname = "support.example.com"
        secret_file = "secret.key"
        data_dir = "data"

        [smtp]
        listen = "127.0.0.1:{smtp_port}"
        max_message_bytes = {max_bytes}

        [outbound]
        url = "{outbound_url}"

        [[mailboxes]]
        address = "support@example.com"
        team = "support"
        name = "Example Support"

        [[mailboxes]]
        address = "billing@example.com"
        team = "billing"
        """) + AGENTS_TOML + extra)
    return cfg


class Daemon:
    def __init__(self, folder: Path, config: Path | None, smtp_port: int):
        self.folder = folder
        self.config = config
        self.smtp_port = smtp_port
        self.log_path = folder / "maild.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def with_config(cls, folder: Path, db_url: str, outbound_url: str, **kw: Any) -> Daemon:
        port = free_port()
        cfg = write_config(folder, db_url=db_url, outbound_url=outbound_url, smtp_port=port, **kw)
        return cls(folder, cfg, port)

    def start(self, timeout: float = 30.0, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`prefix`/`env`: e.g. faketime, to run the daemon at another time of day."""
        args = [*(prefix or []), sys.executable, "-m", "maild", "run"]
        if self.config:
            args += ["--config", str(self.config)]
        env = {**{k: v for k, v in os.environ.items() if k != "MAILD_CONFIG"}, **(env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"maild exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"maild did not answer SMTP in {timeout}s:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM to the daemon's process group (a wrapper such as faketime may sit in front)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):  # wait for stragglers of the group
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.killpg(self.proc.pid, 0)
                    time.sleep(0.05)
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def send(self, raw: bytes, mail_from: str, rcpts: list[str]) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            return s.sendmail(mail_from, rcpts, raw)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "maild", *args]
        if self.config:
            cmd += ["--config", str(self.config)]
        r = subprocess.run(cmd, cwd=self.folder, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"maild {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def cases(self) -> list[dict[str, Any]]:
        return self.cli_json("case", "list")

    def case(self, number: int) -> dict[str, Any]:
        return self.cli_json("case", "show", str(number))
