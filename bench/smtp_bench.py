"""SMTP ingest: the same generated mail into a do-nothing aiosmtpd, then into `maild run`.

The do-nothing server is the physical limit of a Python SMTP server on this machine; maild's
rate divided by it is the figure issue 6 targets. maild only counts when its work is done:
after the load we wait until every acknowledgement it queued has reached the sink. After
maild's full-speed run on a database comes a paced one at half the rate it reached, on a
fresh database: issue 6 wants p99 ≤ 100 ms there, latency under a load it can carry.
"""

from __future__ import annotations

import time
from typing import Any

from bench.desk import STAFF_DOMAIN, Desk
from bench.loadgen import LoadResult, Mail, generate, send_all
from bench.proctree import tree_cpu_seconds
from bench.report import YARDSTICKS, say
from bench.servers import CountingServer

P99_TARGET_MS = 100.0  # issue 6: at half of maild's top rate


def _load_figures(result: LoadResult, server_cpu_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "msgs_per_s": round(result.msgs_per_s, 1),
        "p50_ms": round(result.percentile_ms(0.50), 2),
        "p95_ms": round(result.percentile_ms(0.95), 2),
        "p99_ms": round(result.percentile_ms(0.99), 2),
        "txn_p50_ms": round(result.percentile_ms(0.50, result.txn_latencies_s), 2),
        "txn_p99_ms": round(result.percentile_ms(0.99, result.txn_latencies_s), 2),
        "wall_s": round(result.wall_s, 2),
        "sent": result.sent,
        "failed": result.failed,
        "errors": result.errors,
        "generator_cpu_s": round(result.cpu_s, 2),
        "generator_cpu_pct": round(100 * result.cpu_s / result.wall_s, 1) if result.wall_s else 0.0,
        "server_cpu_pct": round(100 * server_cpu_s / result.wall_s, 1) if result.wall_s else 0.0,
    }
    if result.rate is not None:
        figures.update({
            "rate_asked": round(result.rate, 1),
            "schedule_lag_p99_ms": round(result.percentile_ms(0.99, result.lags_s), 2),
            "schedule_lag_max_ms": round(1000 * max(result.lags_s, default=0.0), 2),
            "p99_target_ms": P99_TARGET_MS,
            "p99_target_met": result.percentile_ms(0.99) <= P99_TARGET_MS,
        })
    return figures


def run_do_nothing(mails: list[Mail], concurrency: int, per_connection: int,
                   block_reader: bool = False) -> dict[str, Any]:
    """The yardstick: stock aiosmtpd answering 250; with `block_reader`, the same with maild's
    DATA reader, which shows what SMTP itself costs maild."""
    say(f"smtp: {len(mails)} messages into a do-nothing aiosmtpd" + (" with maild's DATA reader" if block_reader
                                                                      else ""))
    server = CountingServer(block_reader=block_reader).start()
    try:
        cpu0 = tree_cpu_seconds(server.pid)
        result = send_all("127.0.0.1", server.port, mails, concurrency, per_connection)
        figures = _load_figures(result, tree_cpu_seconds(server.pid) - cpu0)
        figures["received"] = server.count
        return figures
    finally:
        server.stop()


def run_maild(mails: list[Mail], concurrency: int, per_connection: int, database: str,
              drain_timeout: float, preload: int = 0, rate: float | None = None) -> dict[str, Any]:
    """maild on a fresh database: the load (at full speed, or paced at `rate` msgs/s), then
    the wait until every mail it queued reached the sink."""
    if preload:
        say(f"smtp: preloading {preload:,} cases with {3 * preload:,} messages ({database})")
    pace = f" at {rate:.1f} msgs/s" if rate else ""
    say(f"smtp: {len(mails)} messages into maild ({database}){pace}, then waiting for its acknowledgements")
    sink = CountingServer(staff_domain=STAFF_DOMAIN, block_reader=True).start()
    desk: Desk | None = None
    try:
        desk = Desk(database, sink.port, preload=preload)
        startup = desk.start()
        cpu0 = desk.cpu_seconds()
        result = send_all("127.0.0.1", desk.smtp_port, mails, concurrency, per_connection, rate=rate)
        figures = _load_figures(result, desk.cpu_seconds() - cpu0)
        loaded = time.perf_counter()
        deadline = loaded + drain_timeout
        while True:
            counts = desk.counts()
            delivered = sink.customer_rcpts + sink.staff_rcpts  # maild sends one mail per recipient
            done = counts.messages >= result.sent and counts.pending == 0 and delivered >= counts.outbox - counts.failed
            if done or time.perf_counter() > deadline:
                break
            time.sleep(0.25)
        figures.update({
            "database": database,
            "preloaded_cases": preload,
            "startup_s": round(startup, 2),
            "peak_rss_mb": round(desk.peak_rss_mb(), 1),
            "maild_cpu_s": round(desk.cpu_seconds(), 2),
            "messages_stored": counts.messages,
            "cases": counts.cases,
            "acks_expected": counts.acks,
            "acks_delivered": sink.customer_rcpts,
            "agent_mails_expected": counts.outbox - counts.acks,
            "agent_mails_delivered": sink.staff_rcpts,
            "outbound_failed": counts.failed,
            "all_acks_delivered": bool(done and counts.failed == 0 and sink.customer_rcpts == counts.acks
                                       and sink.staff_rcpts == counts.outbox - counts.acks),
            "ack_drain_s": round(time.perf_counter() - loaded, 2),
        })
        if not done:
            figures["log_tail"] = desk.log_tail()[-2000:]
        return figures
    finally:
        if desk is not None:
            desk.close()
        sink.stop()


def _attempt(out: dict[str, Any], label: str, db: str, **kw: Any) -> dict[str, Any] | None:
    """One maild run into out[label]; an exception is kept as the run's error, not raised."""
    try:
        figures = run_maild(database=db, **kw)
    except Exception as e:  # keep the other figures; say what broke
        out[label] = {"database": db, "error": f"{type(e).__name__}: {e}"[-3000:]}
        return None
    out[label] = figures
    return figures


def _label(db: str, preloaded: int) -> str:
    return f"{db}, {preloaded // 1000}k cases" if preloaded else db


def run_smtp(messages: int, concurrency: int, per_connection: int, databases: list[str], seed: int = 42,
             drain_timeout: float = 120.0, preload: int = 0, rate: float | None = None) -> dict[str, Any]:
    """Do-nothing, maild on each database at full speed, do-nothing again (the ratio is taken
    against the mean of the two), then maild at half the rate it reached; with `preload`,
    maild again on a database that already holds that many cases, to set the two rates side
    by side. With `rate`, only maild's runs, each paced at `rate`."""
    mails = generate(messages, seed)
    kinds: dict[str, int] = {}
    for m in mails:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    out: dict[str, Any] = {
        "messages": messages,
        "concurrency": concurrency,
        "per_connection": per_connection,
        "seed": seed,
        "mix": kinds,
        "mean_size_kb": round(sum(len(m.raw) for m in mails) / len(mails) / 1024, 1),
        "maild": {},  # full speed, by database (", Nk cases" when preloaded)
        "paced": {},  # by the same labels: at half of the full-speed rate, or at `rate`
    }
    load = {"mails": mails, "concurrency": concurrency, "per_connection": per_connection,
            "drain_timeout": drain_timeout}
    if rate is not None:
        for rows in (0, preload) if preload else (0,):
            for db in databases:
                _attempt(out["paced"], _label(db, rows), db, preload=rows, rate=rate, **load)
        return out

    out["do_nothing"] = run_do_nothing(mails, concurrency, per_connection)
    out["do_nothing_block_reader"] = run_do_nothing(mails, concurrency, per_connection, block_reader=True)
    for db in databases:
        _attempt(out["maild"], db, db, **load)
    # The yardstick again, right after maild's full-speed runs: this machine's speed drifts
    # within minutes, and the ratio is taken against the mean of the runs on either side.
    out["do_nothing_after"] = run_do_nothing(mails, concurrency, per_connection)
    base = (out["do_nothing"]["msgs_per_s"] + out["do_nothing_after"]["msgs_per_s"]) / 2
    out["yardstick_msgs_per_s"] = round(base, 1)

    def set_ratio(figures: dict[str, Any]) -> None:
        figures["ratio"] = round(figures["msgs_per_s"] / base, 3) if base else 0.0

    for key in YARDSTICKS:
        set_ratio(out[key])
    for db in databases:
        figures = out["maild"].get(db)
        if figures is None or "error" in figures:
            continue
        set_ratio(figures)
        if figures["msgs_per_s"] > 0:
            half = figures["msgs_per_s"] / 2
            paced = _attempt(out["paced"], db, db, rate=half, **load)
            if paced is not None:
                paced["half_of_msgs_per_s"] = figures["msgs_per_s"]
    for db in databases if preload else []:
        figures = _attempt(out["maild"], _label(db, preload), db, preload=preload, **load)
        if figures is None:
            continue
        set_ratio(figures)
        if out["maild"][db].get("msgs_per_s"):
            figures["vs_empty"] = round(figures["msgs_per_s"] / out["maild"][db]["msgs_per_s"], 3)
    return out
