"""Memory: one mail with a large attachment into a fresh `maild run`, and how far its RSS grows.

Issue 6: a 25 MB attachment is ingested with maild's RSS growing by no more than 3× the
message size. The mail is what Outlook or Thunderbird send (a short text part, the file in
base64 lines of 76 characters: ~34 MB for 25 MB). The resident set is read when maild is
idle, then the mail is sent over SMTP and we wait until it is stored and its acknowledgement
has reached the sink; the peak is the sum of VmHWM over maild's process tree, an upper bound
(bench/proctree.py), next to the largest RSS sum sampled every 20 ms, a lower one.
"""

from __future__ import annotations

import smtplib
import time
from typing import Any

from bench.desk import STAFF_DOMAIN, Desk
from bench.loadgen import large_attachment_mail, transact, wire_data
from bench.report import say
from bench.servers import CountingServer

ATTACHMENT_MB, ATTACHMENT_QUICK_MB = 25.0, 5.0
GROWTH_TARGET = 3.0  # × the message size
MB = 1024 * 1024


def _idle_rss_mb(desk: Desk, settle_s: float = 5.0) -> float:
    """maild's RSS once startup work has settled: two reads 0.5 s apart within 0.5 MB."""
    last = desk.rss_mb()
    deadline = time.perf_counter() + settle_s
    while time.perf_counter() < deadline:
        time.sleep(0.5)
        now = desk.rss_mb()
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


def run_memory(attachment_mb: float, timeout: float = 180.0) -> dict[str, Any]:
    mail = large_attachment_mail(int(attachment_mb * MB))
    size = len(mail.raw)
    say(f"memory: one mail of {size / MB:.1f} MB ({attachment_mb:g} MB attachment) into a fresh maild (sqlite)")
    limit = size + MB  # maild's default (25 MiB) would refuse it
    sink = CountingServer(max_bytes=limit, staff_domain=STAFF_DOMAIN).start()
    desk: Desk | None = None
    try:
        desk = Desk("sqlite", sink.port, max_bytes=limit, watch_interval=0.02)
        desk.start()
        wire = wire_data(mail.raw)
        before = _idle_rss_mb(desk)
        hwm_before = desk.peak_rss_mb()
        t0 = time.perf_counter()
        error = None
        data_end_s = txn_s = 0.0
        try:
            with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=timeout) as conn:
                conn.ehlo("loadgen.test")
                data_end_s, txn_s = transact(conn, mail, wire)
        except (smtplib.SMTPException, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        replied = time.perf_counter()
        deadline = replied + timeout
        while True:
            counts = desk.counts()
            done = (counts.messages >= 1 and counts.pending == 0 and counts.acks >= 1
                    and sink.customer_rcpts + sink.staff_rcpts >= counts.outbox - counts.failed)
            if done or error or time.perf_counter() > deadline:
                break
            time.sleep(0.05)
        settled = time.perf_counter()
        peak = desk.peak_rss_mb()
        growth = peak - before
        figures: dict[str, Any] = {
            "attachment_mb": round(attachment_mb, 1),
            "message_mb": round(size / MB, 2),
            "message_bytes": size,
            "rss_before_mb": round(before, 1),
            "hwm_before_mb": round(hwm_before, 1),
            "peak_rss_mb": round(peak, 1),
            "sampled_peak_rss_mb": round(desk.watch.sampled_peak_mb(), 1),
            "rss_after_mb": round(desk.rss_mb(), 1),
            "processes": desk.watch.processes,
            "growth_mb": round(growth, 1),
            "growth_per_message_size": round(growth * MB / size, 2),
            "growth_target": GROWTH_TARGET,
            "growth_target_met": growth * MB <= GROWTH_TARGET * size,
            "send_s": round(replied - t0, 2),
            "data_end_to_250_ms": round(1000 * data_end_s, 1),
            "txn_ms": round(1000 * txn_s, 1),
            "stored_and_acked_s": round(settled - replied, 2),
            "maild_cpu_s": round(desk.cpu_seconds(), 2),
            "accepted": error is None,
            "stored": counts.messages,
            "acks_expected": counts.acks,
            "acks_delivered": sink.customer_rcpts,
            "outbound_failed": counts.failed,
            "complete": bool(error is None and done and counts.messages == 1 and counts.failed == 0
                             and sink.customer_rcpts == counts.acks >= 1),
        }
        if error:
            figures["error"] = error
        if not figures["complete"]:
            figures["log_tail"] = desk.log_tail()[-2000:]
        return figures
    finally:
        if desk is not None:
            desk.close()
        sink.stop()
