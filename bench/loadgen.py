"""The SMTP load generator: a deterministic, realistic mail mix and threads that send it.

Our own generator (not a third-party tool) so that the do-nothing server and maild see the
very same bytes, and so its CPU cost is measured next to the result: a benchmark whose
client is the bottleneck measures the client. Mail is built up front (never inside the timed
window), with CRLF line endings as on the wire, and each connection sends several messages,
since connection setup would otherwise dominate (see ../shared/NOTES.md).
"""

from __future__ import annotations

import base64
import itertools
import math
import queue
import random
import re
import smtplib
import threading
import time
from dataclasses import dataclass, field

VOCABULARY = (
    "printer invoice account password login error screen update order delivery refund payment server "
    "backup network email calendar license upgrade contract report export import database access "
    "permission team office laptop phone meeting schedule ticket support urgent problem question request "
    "customer service issue broken slow crash again since yesterday morning please could you help me "
    "with the this that our we it is not working when after before about regarding thanks regards hello "
    "dear kind best also still same new old another some every any all none version release install"
)
WORDS = VOCABULARY.split()
FIRST = ("anna", "boris", "clara", "david", "eva", "frank", "greta", "hugo", "ida", "jan", "karla", "lukas",
         "maria", "nina", "oskar", "petra", "quentin", "rosa", "stefan", "tereza", "ulrich", "vera", "wim",
         "xenia", "yusuf", "zoe")
LAST = ("novak", "schmidt", "dupont", "rossi", "garcia", "smith", "kowalski", "jansen", "berg", "larsen",
        "horvat", "popescu")
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "seznam.cz", "gmx.de")
ATTACHMENT_TYPES = (("report.pdf", "application/pdf"), ("screenshot.png", "image/png"),
                    ("photo.jpg", "image/jpeg"), ("export.xlsx",
                                                  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                    ("logs.zip", "application/zip"))
MAILBOXES = ("support@example.com", "billing@example.com")
MIX = {"plain_or_html_2_5kb": 0.70, "attachment_50_200kb": 0.25, "reply": 0.05}


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt: str
    raw: bytes
    kind: str  # plain | html | attachment | reply | large


def senders(rng: random.Random, count: int = 300) -> list[tuple[str, str]]:
    """(display name, address) over ~150 company domains and a few free-mail ones."""
    domains = [f"{rng.choice(WORDS)}-{rng.choice(WORDS)}{i}.test" for i in range(150)]
    out = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        domain = rng.choice(FREE_MAIL) if i % 10 == 0 else domains[i % len(domains)]
        out.append((f"{first.title()} {last.title()}", f"{first}.{last}{i}@{domain}"))
    return out


def text_lines(rng: random.Random, size: int) -> list[str]:
    """About `size` bytes of prose in lines of at most ~76 characters."""
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 11))).capitalize() + "."
        lines.append(line)
        total += len(line) + 2
    return lines


def headers(name: str, addr: str, rcpt: str, subject: str, mid: str, when: int, extra: str = "") -> str:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_795_000_000 + when))
    return (f"From: {name} <{addr}>\r\nTo: {rcpt}\r\nSubject: {subject}\r\nDate: {date}\r\n"
            f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\n{extra}")


def plain_body(rng: random.Random, size: int) -> str:
    return "Content-Type: text/plain; charset=utf-8\r\n\r\n" + "\r\n".join(text_lines(rng, size)) + "\r\n"


def html_body(rng: random.Random, size: int, boundary: str) -> str:
    lines = text_lines(rng, size // 3)
    html = "\r\n".join(f"<p style=\"font-family:Calibri,sans-serif;font-size:11pt\">{ln}</p>" for ln in lines)
    return (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "\r\n".join(lines) + "\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body>\r\n{html}\r\n</body></html>\r\n--{boundary}--\r\n")


def attachment_body(rng: random.Random, size: int, boundary: str) -> str:
    filename, ctype = rng.choice(ATTACHMENT_TYPES)
    data = base64.encodebytes(rng.randbytes(size)).decode().replace("\n", "\r\n")
    return (f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{plain_body(rng, rng.randint(300, 1500))}"
            f"--{boundary}\r\nContent-Type: {ctype}; name=\"{filename}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{data}--{boundary}--\r\n")


def generate(count: int, seed: int = 42, rcpt: str | None = None) -> list[Mail]:
    """`count` mails: 70 % 2–5 KB plain or HTML, 25 % with a 50–200 KB attachment, 5 % replies
    (In-Reply-To/References) to earlier mails of the run. Same seed, same bytes. `rcpt` fixes
    the recipient (IMAP); otherwise 80 % go to support@, 20 % to billing@."""
    rng = random.Random(seed)
    people = senders(random.Random(seed + 1))
    mails: list[Mail] = []
    firsts: list[tuple[int, str, str, str, str]] = []  # index, name, addr, subject, message-id
    for i in range(count):
        roll = rng.random()
        to = rcpt or (MAILBOXES[0] if rng.random() < 0.8 else MAILBOXES[1])
        mid = f"<bench-{seed}-{i}@{rng.choice(WORDS)}.mail.test>"
        boundary = f"=_b{seed}_{i}_{rng.getrandbits(32):08x}"
        # a reply needs an earlier mail that is probably committed by the time it is sent
        earlier = [f for f in firsts if f[0] <= i - 20]
        if roll >= 0.95 and earlier:
            _, name, addr, subject, parent = rng.choice(earlier)
            quoted = "\r\n".join("> " + ln for ln in text_lines(rng, rng.randint(800, 2000)))
            body = ("Content-Type: text/plain; charset=utf-8\r\n\r\n" + "\r\n".join(text_lines(rng, 1200))
                    + f"\r\n\r\nOn Mon, 1 Nov 2026 at 10:00, Support wrote:\r\n{quoted}\r\n")
            raw = headers(name, addr, to, f"Re: {subject}", mid, i,
                          f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n") + body
            mails.append(Mail(addr, to, raw.encode(), "reply"))
            continue
        name, addr = rng.choice(people)
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).capitalize()
        if roll >= 0.70:
            kind, body = "attachment", attachment_body(rng, rng.randint(50_000, 200_000), boundary)
        elif rng.random() < 0.5:
            kind, body = "html", html_body(rng, rng.randint(2_000, 5_000) - 400, boundary)
        else:
            kind, body = "plain", plain_body(rng, rng.randint(2_000, 5_000) - 400)
        mails.append(Mail(addr, to, (headers(name, addr, to, subject, mid, i) + body).encode(), kind))
        firsts.append((i, name, addr, subject, mid))
    return mails


def large_attachment_mail(attachment_bytes: int, seed: int = 25) -> Mail:
    """One mail as Outlook or Thunderbird send a big file: a short text part and a binary
    attachment in base64, 76-character lines (so the mail is about 4/3 of the file)."""
    rng = random.Random(seed)
    name, addr = senders(random.Random(seed + 1), 1)[0]
    boundary = f"=_big{seed}_{rng.getrandbits(32):08x}"
    data = base64.encodebytes(rng.randbytes(attachment_bytes)).decode().replace("\n", "\r\n")
    raw = (headers(name, addr, MAILBOXES[0], "Scanned contract, please check", f"<bench-big-{seed}@mail.test>", 0)
           + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
           f"--{boundary}\r\n{plain_body(rng, 400)}"
           f'--{boundary}\r\nContent-Type: application/pdf; name="contract-scan.pdf"\r\n'
           f'Content-Disposition: attachment; filename="contract-scan.pdf"\r\n'
           f"Content-Transfer-Encoding: base64\r\n\r\n{data}--{boundary}--\r\n")
    return Mail(addr, MAILBOXES[0], raw.encode(), "large")


@dataclass
class LoadResult:
    sent: int
    failed: int
    wall_s: float
    cpu_s: float  # time.process_time of this process over the run: the generator's own cost
    latencies_s: list[float] = field(repr=False)  # end of DATA → 250, one per mail sent
    txn_latencies_s: list[float] = field(repr=False)  # MAIL FROM → 250: the whole transaction
    errors: list[str] = field(default_factory=list)
    rate: float | None = None  # the paced rate asked for; None at full speed
    lags_s: list[float] = field(default_factory=list, repr=False)  # paced: how late each send started

    @property
    def msgs_per_s(self) -> float:
        return self.sent / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float, values: list[float] | None = None) -> float:
        data = self.latencies_s if values is None else values
        if not data:
            return 0.0
        ordered = sorted(data)
        return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


_DOT_LINE = re.compile(rb"(?m)^\.")


def wire_data(raw: bytes) -> bytes:
    """The DATA payload as smtplib sends it: dot-stuffed, CRLF-terminated, then the final dot."""
    q = _DOT_LINE.sub(b"..", raw)
    return q + (b"" if q.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def transact(conn: smtplib.SMTP, m: Mail, data: bytes) -> tuple[float, float]:
    """Sends one mail (as `sendmail` would), `data` being `wire_data(m.raw)`; returns (end of
    DATA → 250, MAIL FROM → 250) in seconds. Timed by hand so that the latency is the server's
    answer to the whole mail, without the MAIL/RCPT/DATA round trips or the time the client
    needs to push the bytes."""
    t0 = time.perf_counter()
    code, resp = conn.mail(m.mail_from, [f"SIZE={len(m.raw)}"] if conn.has_extn("size") else [])
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, m.mail_from)
    code, resp = conn.rcpt(m.rcpt)
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({m.rcpt: (code, resp)})
    conn.putcmd("data")
    code, resp = conn.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, resp)
    conn.send(data)
    t1 = time.perf_counter()
    code, resp = conn.getreply()
    t2 = time.perf_counter()
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)
    return t2 - t1, t2 - t0


def send_all(host: str, port: int, mails: list[Mail], concurrency: int, per_connection: int,
             timeout: float = 60.0, rate: float | None = None) -> LoadResult:
    """Sends every mail once: `concurrency` threads, each taking `per_connection` consecutive mails
    per SMTP connection. With `rate`, the sends follow one schedule of `rate` mails a second
    overall: before each mail a connection takes the next slot of the schedule and waits for its
    time, never sending earlier (a connection that is late sends at once, so a slow server
    sees the backlog, as from real senders). Latency is end of DATA → 250 of each mail."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    chunks: queue.Queue[range] = queue.Queue()
    for start in range(0, len(mails), per_connection):
        chunks.put(range(start, min(start + per_connection, len(mails))))
    # Dot-stuffed before the clock runs: it took half of the generator's CPU during the load
    # (~0.18 ms a mail), on the cores the server under test needs.
    wire = [wire_data(m.raw) for m in mails]
    latencies: list[float] = []
    txns: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    slots = itertools.count()
    t_start = 0.0  # set before the threads start

    def wait_for_slot() -> float:
        """Paced: sleeps until this connection's next slot; returns how late it is."""
        assert rate is not None
        with lock:
            due = t_start + next(slots) / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return max(0.0, time.perf_counter() - due)

    def worker() -> None:
        mine: list[float] = []
        mine_txn: list[float] = []
        mine_lag: list[float] = []
        bad: list[str] = []
        while True:
            try:
                chunk = chunks.get_nowait()
            except queue.Empty:
                break
            conn: smtplib.SMTP | None = None
            for i in chunk:
                m = mails[i]
                try:
                    if conn is None:
                        conn = smtplib.SMTP(host, port, timeout=timeout)
                        conn.ehlo("loadgen.test")
                    if rate is not None:
                        mine_lag.append(wait_for_slot())
                    data_end, txn = transact(conn, m, wire[i])
                    mine.append(data_end)
                    mine_txn.append(txn)
                except (smtplib.SMTPException, OSError) as e:
                    bad.append(f"mail {i}: {type(e).__name__}: {e}")
                    if conn is not None:
                        conn.close()
                    conn = None
            if conn is not None:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()
        with lock:
            latencies.extend(mine)
            txns.extend(mine_txn)
            lags.extend(mine_lag)
            errors.extend(bad)

    threads = [threading.Thread(target=worker, name=f"loadgen-{n}") for n in range(concurrency)]
    cpu0, t_start = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu0
    return LoadResult(sent=len(latencies), failed=len(errors), wall_s=wall, cpu_s=cpu, latencies_s=latencies,
                      txn_latencies_s=txns, errors=errors[:20], rate=rate, lags_s=lags)
