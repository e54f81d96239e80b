"""A throw-away Dovecot IMAP server on a loopback port: its own config, passwd-file users
and Maildir under a temp folder (see ../shared/NOTES.md for the why of each setting)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from imapclient import IMAPClient

from tests.support.sink import free_port

MAIL_USER = "maildtest"  # Dovecot refuses mail access as root


def dovecot_problem() -> str | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return "Dovecot is not installed (Debian package dovecot-imapd; .ci/run installs it)"
    if os.geteuid() != 0:
        return "starting a throw-away Dovecot needs root here"
    return None


def _mail_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER],
                       check=True)
        return pwd.getpwnam(MAIL_USER)


class Dovecot:
    def __init__(self, folder: Path, users: dict[str, str], oauth2_introspection_url: str | None = None,
                 tls: tuple[Path, Path] | None = None, capability: str | None = None):
        """With `oauth2_introspection_url`, XOAUTH2 logins are checked against that endpoint
        (RFC 7662 token introspection), as a hosted provider's server would. With `tls`
        (certificate, key), STARTTLS is offered on `port` and implicit TLS on `tls_port`.
        `capability` replaces the advertised IMAP capabilities (e.g. to hide IDLE)."""
        self.folder = folder
        self.users = users
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.tls = tls
        self.conf = folder / "dovecot.conf"
        self.extra_conf = f"imap_capability = {capability}\n" if capability else ""
        if oauth2_introspection_url:
            (folder / "oauth2.conf.ext").parent.mkdir(parents=True, exist_ok=True)
            (folder / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {oauth2_introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
            self.extra_conf += ("auth_mechanisms = plain login xoauth2 oauthbearer\n"
                               f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                               f"  args = {folder}/oauth2.conf.ext\n}}\n")
        self.running = False

    def start(self) -> None:
        user = _mail_user()
        for sub in ("run", "state", "mail"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        os.chown(self.folder / "mail", user.pw_uid, user.pw_gid)
        (self.folder / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        d = self.folder
        ssl_conf = f"ssl = yes\nssl_cert = <{self.tls[0]}\nssl_key = <{self.tls[1]}" if self.tls else "ssl = no"
        self.conf.write_text(f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl_conf}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {user.pw_uid}
mail_location = maildir:{d}/mail/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = static
  args = uid={user.pw_uid} gid={user.pw_gid} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
service anvil {{
  chroot =
}}
{self.extra_conf}
""")
        # dovecot forks into the background keeping its stdio: no pipes, or we would wait forever
        with open(self.folder / "start.log", "ab") as out:
            r = subprocess.run(["dovecot", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        if r.returncode != 0:
            raise RuntimeError(f"dovecot failed to start: {(self.folder / 'start.log').read_text()[-800:]}")
        self.running = True
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                IMAPClient("127.0.0.1", self.port, ssl=False, timeout=2).logout()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Dovecot did not answer on {self.port}: {self.log()[-800:]}")

    def stop(self) -> None:
        if self.running:
            subprocess.run(["doveadm", "-c", str(self.conf), "stop"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.running = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (self.folder / "run" / "master.pid").exists():
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.folder / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""

    def kick(self, user: str) -> None:
        """Drops the user's sessions, as a provider does when a token expires."""
        subprocess.run(["doveadm", "-c", str(self.conf), "kick", user], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    def client(self, user: str) -> IMAPClient:
        c = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10)
        c.login(user, self.users[user])
        return c

    def count(self, user: str, folder: str) -> int:
        with self.client(user) as c:
            if not c.folder_exists(folder):
                return 0
            return int(c.select_folder(folder, readonly=True)[b"EXISTS"])

    def append(self, user: str, folder: str, raw: bytes, flags: tuple[bytes, ...] = ()) -> None:
        with self.client(user) as c:
            c.append(folder, raw, flags=flags)


@contextmanager
def running_dovecot(users: dict[str, str]) -> Iterator[Dovecot]:
    """A started Dovecot with these users, stopped and removed afterwards. Its folder is not under
    pytest's tmp_path: Dovecot's own users must be able to walk into it."""
    folder = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
    dv = Dovecot(folder, users)
    try:
        dv.start()
        yield dv
    finally:
        dv.stop()
        shutil.rmtree(folder, ignore_errors=True)


class TokenIntrospection:
    """An OAuth2 token introspection endpoint on loopback; `valid` holds the live tokens."""

    def __init__(self, username: str):
        self.valid: set[str] = set()
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                token = parse_qs(body).get("token", [""])[0]
                owner.seen.append(token)
                answer = {"active": True, "username": username} if token in owner.valid else {"active": False}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
