"""The printed table and the JSON file: the same numbers, for a person and for a script."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def say(text: str) -> None:
    """Progress on stderr, so a person knows which part is running; stdout keeps the table."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """Where the figures come from; a load average well above 0 at the start means others shared the CPUs."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _last_line(error: str) -> str:
    """The gist of an error that may carry a whole traceback (maild's log)."""
    lines = [ln for ln in error.strip().splitlines() if ln.strip()]
    return (lines[0] + (" … " + lines[-1] if len(lines) > 1 else ""))[:400]


def _row(label: str, f: dict[str, Any], rss: str, ratio: str) -> str:
    return (f"{label:<22} {f['msgs_per_s']:>8.1f} {f['p50_ms']:>8.1f} {f['p95_ms']:>8.1f} {f['p99_ms']:>8.1f} "
            f"{rss:>9} {ratio:>7} {f['generator_cpu_pct']:>7.0f} % {f['server_cpu_pct']:>7.0f} %")


def smtp_lines(s: dict[str, Any]) -> list[str]:
    mix = ", ".join(f"{n} {k}" for k, n in sorted(s["mix"].items()))
    lines = [
        f"SMTP: {s['messages']} messages ({mix}; mean {s['mean_size_kb']} KB), "
        f"{s['concurrency']} connections, {s['per_connection']} messages per connection",
        f"{'':<22} {'msgs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'peak RSS':>9} {'ratio':>7} "
        f"{'loadgen':>9} {'server':>9}",
        _row("do-nothing aiosmtpd", s["do_nothing"], "-", "1.00"),
    ]
    for db, f in s["maild"].items():
        if "error" in f:
            lines.append(f"{'maild (' + db + ')':<22} FAILED: {_last_line(f['error'])}")
        else:
            lines.append(_row(f"maild ({db})", f, f"{f['peak_rss_mb']:.0f} MB", f"{f['ratio']:.2f}"))
            if "vs_empty" in f:
                lines.append(f"  maild ({db}): {f['vs_empty']:.0%} of the rate on an empty database")
    lines.append("  loadgen/server: CPU of the load generator / of the server process, % of one core, "
                 "over the load's wall time")
    for db, f in s["maild"].items():
        if "error" in f:
            continue
        state = "all" if f["all_acks_delivered"] else "NOT all"
        lines.append(f"  maild ({db}): {f['messages_stored']} stored, {f['cases']} cases; {state} delivered: "
                     f"{f['acks_delivered']} of {f['acks_expected']} acknowledgements and "
                     f"{f['agent_mails_delivered']} of {f['agent_mails_expected']} agent notifications reached "
                     f"the sink ({f['outbound_failed']} failed), the last {f['ack_drain_s']} s after the load")
    for label, f in [("do-nothing", s["do_nothing"]), *((f"maild ({d})", f) for d, f in s["maild"].items())]:
        if f.get("failed"):
            lines.append(f"  {label}: {f['failed']} sends FAILED, e.g. {f['errors'][0]}")
    return lines


def imap_lines(i: dict[str, Any]) -> list[str]:
    if "skipped" in i:
        return [f"IMAP drain: skipped: {i['skipped']}"]
    if "error" in i:
        return [f"IMAP drain: FAILED: {_last_line(i['error'])}"]
    state = "" if i["all_drained"] else (f"  NOT DRAINED: {i['stored']} stored, {i['moved']} moved, "
                                         f"{i['inbox_left']} left in INBOX")
    return [f"IMAP drain: {i['messages']} messages from a Dovecot backlog in {i['drain_s']} s = "
            f"{i['msgs_per_s']:.1f} msgs/s (from maild's start until all stored and moved to Processed; "
            f"APPEND took {i['append_s']} s; peak RSS {i['peak_rss_mb']:.0f} MB){state}"]


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    lines = [f"{m['cpus']} CPUs, Python {m['python']}, load average at start {m['loadavg_at_start'][0]}"]
    if "smtp" in results:
        lines += smtp_lines(results["smtp"])
    if "imap" in results:
        if "smtp" in results:
            lines.append("")
            for db, f in results["smtp"]["maild"].items():
                if "msgs_per_s" in f:
                    lines.append(f"SMTP ingest, maild ({db}): {f['msgs_per_s']:.1f} msgs/s")
        lines += imap_lines(results["imap"])
    print("\n".join(lines), flush=True)


def write_json(path: str, results: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(results, indent=2) + "\n")
