"""A throw-away Postfix (Debian's `postfix`) in front of maild and as its outbound relay, set up
as docs/production-postfix.md tells admins to: its own config, queue and data folders under a
temp folder, one smtpd on a loopback port, no DNS, the support domain handed to maild's listener
over a transport that keeps long lines whole, everything else relayed to a test sink.

Several instances can run at once: each has its own queue (so its own master.pid and sockets)
and its own syslog_name; the log goes to `maillog` in its folder, not to syslog."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.sink import free_port

SUPPORT_DOMAIN = "example.com"


def postfix_problem() -> str | None:
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "Postfix is not installed (Debian package postfix; .ci/run installs it)"
    if os.geteuid() != 0:
        return "starting a throw-away Postfix needs root here"
    return None


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


class Postfix:
    """One private Postfix instance. `maild_port`: maild's SMTP listener, where mail for the
    support domain goes; `relay_port`: where everything else goes (the test sink, standing in
    for the Internet). `own_transport`: addresses on the support domain that are people, not
    maild (agents): they go to the relay, or their notifications would loop back into maild."""

    def __init__(self, folder: Path, *, maild_port: int, relay_port: int, message_size_limit: int,
                 own_transport: tuple[str, ...] = ()):
        self.folder = folder
        self.port = free_port()
        self.maild_port = maild_port
        self.relay_port = relay_port
        self.message_size_limit = message_size_limit
        self.own_transport = own_transport
        self.name = f"postfix-maildtest-{uuid.uuid4().hex[:8]}"
        self.conf = folder / "etc"
        self.queue = folder / "queue"
        self.maillog = folder / "maillog"
        self.running = False

    # --- configuration -------------------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """main.cf as `postconf -e` gets it. The lines under "as in production" are the ones
        docs/production-postfix.md recommends; the rest make a private test instance."""
        d = self.folder
        return {
            # a private instance: own folders, own log, loopback only, no DNS, no local delivery
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(d / "data"),
            "syslog_name": self.name,
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(d),
            "myhostname": "mx.postfix.test",  # not maild's nor the sink's name (loop detection)
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "biff": "no",
            # retry a deferred mail soon, so a flush after maild's outage delivers at once
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "address_verify_poll_delay": "1s",
            # as in production (docs/production-postfix.md)
            "relay_domains": SUPPORT_DOMAIN,
            "transport_maps": f"texthash:{self.conf}/transport",
            "recipient_delimiter": "+",
            "smtpd_recipient_restrictions": (f"check_recipient_access texthash:{self.conf}/verify_recipients, "
                                             "permit_mynetworks, reject_unauth_destination"),
            "unverified_recipient_reject_code": "550",
            "message_size_limit": str(self.message_size_limit),
            "smtputf8_enable": "yes",
            "smtpd_forbid_bare_newline": "reject",
            # production keeps $mynetworks excluded; here every client is on loopback, maild too
            "smtpd_forbid_bare_newline_exclusions": "",
        }

    def master_cf(self) -> str:
        """Debian's services with chroot off (our folders are outside /var/spool/postfix), the
        smtpd on our port instead of 25, postlogd for maillog_file, and the `maild` transport."""
        services = [
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            # relay path to the sink: long lines are kept as maild wrote them, so the sink
            # sees maild's own bytes (production keeps Postfix's default here)
            "smtp unix - - n - - smtp -o smtp_line_length_limit=0",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
            # as in production: the transport to maild never breaks a line
            "maild unix - - n - - smtp -o smtp_line_length_limit=0 -o syslog_name=" + self.name + "/maild",
        ]
        return "\n".join(services) + "\n"

    def transport(self) -> str:
        """As in production: the support domain to maild, its people to their own mail server."""
        lines = [f"{a} smtp:[127.0.0.1]:{self.relay_port}" for a in self.own_transport]
        lines.append(f"{SUPPORT_DOMAIN} maild:[127.0.0.1]:{self.maild_port}")
        return "\n".join(lines) + "\n"

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.chmod(0o755)  # Postfix's own user walks into its queue and data folders
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.folder / "data").mkdir(exist_ok=True)
        self.queue.mkdir(exist_ok=True)
        (self.conf / "main.cf").write_text("")
        (self.conf / "master.cf").write_text(self.master_cf())
        (self.conf / "transport").write_text(self.transport())
        (self.conf / "verify_recipients").write_text(f"{SUPPORT_DOMAIN} reject_unverified_recipient\n")
        r = _run("postconf", "-c", str(self.conf), "-e", *(f"{k}={v}" for k, v in self.main_cf().items()))
        if r.returncode != 0:
            raise RuntimeError(f"postconf failed: {r.stderr}")
        shutil.chown(self.folder / "data", "postfix")
        for step in ("check", "set-permissions"):
            r = _run("postfix", "-c", str(self.conf), step)
            if r.returncode != 0 or "fatal" in r.stderr:
                raise RuntimeError(f"postfix {step} failed: {r.stderr}\n{self.log()[-2000:]}")
        # master forks into the background keeping its stdio: a file, not a pipe we would wait on
        with open(self.folder / "start.log", "ab") as out:
            r2 = subprocess.run(["postfix", "-c", str(self.conf), "start"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, timeout=60)
        if r2.returncode != 0:
            raise RuntimeError(f"postfix start failed: {(self.folder / 'start.log').read_text()[-1500:]}\n"
                               f"{self.log()[-2000:]}")
        self.running = True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Postfix did not answer on {self.port}:\n{self.log()[-2000:]}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.running:
            return
        pid = self.master_pid()
        _run("postfix", "-c", str(self.conf), "stop")
        self.running = False
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        if pid:  # our own master did not go: end it (and with it its children)
            _run("postfix", "-c", str(self.conf), "abort")

    # --- what a test asks ----------------------------------------------------------------------

    def flush(self) -> None:
        """`postqueue -f`: try every deferred mail now (after maild's outage)."""
        r = _run("postqueue", "-c", str(self.conf), "-f")
        if r.returncode != 0:
            raise RuntimeError(f"postqueue -f failed: {r.stderr}")

    def queued(self) -> list[dict[str, Any]]:
        """The mail Postfix still holds (`postqueue -j`), with each recipient's delay reason."""
        r = _run("postqueue", "-c", str(self.conf), "-j")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def wait_empty(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Waits until the queue is empty; returns what is still queued at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.queued()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def running_postfix(*, maild_port: int, relay_port: int, message_size_limit: int,
                    own_transport: tuple[str, ...] = ()) -> Iterator[Postfix]:
    """A started Postfix, stopped and removed afterwards. Its folder is not under pytest's
    tmp_path: Postfix's own user must be able to walk into it."""
    folder = Path(tempfile.mkdtemp(prefix="maild-postfix-"))
    pf = Postfix(folder, maild_port=maild_port, relay_port=relay_port, message_size_limit=message_size_limit,
                 own_transport=own_transport)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(folder, ignore_errors=True)
