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


LABEL = 31
# The do-nothing runs of `bench smtp`, by their keys in its results: before maild, right after
# its full-speed runs, and with maild's DATA reader.
YARDSTICKS = ("do_nothing", "do_nothing_after", "do_nothing_block_reader")


def _row(label: str, f: dict[str, Any], rss: str, ratio: str) -> str:
    return (f"{label:<{LABEL}} {f['msgs_per_s']:>8.1f} {f['p50_ms']:>8.1f} {f['p95_ms']:>8.1f} {f['p99_ms']:>8.1f} "
            f"{rss:>9} {ratio:>7} {f['generator_cpu_pct']:>7.0f} % {f['server_cpu_pct']:>7.0f} %")


def _paced_label(db: str, f: dict[str, Any]) -> str:
    if "half_of_msgs_per_s" in f:
        return f"maild ({db}) at half rate"
    return f"maild ({db}) at {f['rate_asked']:g} msgs/s" if "rate_asked" in f else f"maild ({db}) paced"


def smtp_runs(s: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every run with its table label, in table order: each paced run under its full-speed one."""
    runs = [("do-nothing aiosmtpd", s["do_nothing"])] if "do_nothing" in s else []
    if "do_nothing_after" in s:
        runs.append(("  … again, after maild", s["do_nothing_after"]))
    if "do_nothing_block_reader" in s:
        runs.append(("  … with maild's DATA reader", s["do_nothing_block_reader"]))
    for db in [*s["maild"], *(d for d in s["paced"] if d not in s["maild"])]:
        if db in s["maild"]:
            runs.append((f"maild ({db})", s["maild"][db]))
        if db in s["paced"]:
            runs.append((_paced_label(db, s["paced"][db]), s["paced"][db]))
    return runs


def smtp_lines(s: dict[str, Any]) -> list[str]:
    mix = ", ".join(f"{n} {k}" for k, n in sorted(s["mix"].items()))
    lines = [
        f"SMTP: {s['messages']} messages ({mix}; mean {s['mean_size_kb']} KB), "
        f"{s['concurrency']} connections, {s['per_connection']} messages per connection",
        f"{'':<{LABEL}} {'msgs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'peak RSS':>9} {'ratio':>7} "
        f"{'loadgen':>9} {'server':>9}",
    ]
    runs = smtp_runs(s)
    for label, f in runs:
        if "error" in f:
            lines.append(f"{label:<{LABEL}} FAILED: {_last_line(f['error'])}")
        elif any(f is s.get(k) for k in YARDSTICKS):
            lines.append(_row(label, f, "-", f"{f['ratio']:.2f}"))
        else:
            ratio = f"{f['ratio']:.2f}" if "ratio" in f else "-"
            lines.append(_row(label, f, f"{f['peak_rss_mb']:.0f} MB", ratio))
            if "vs_empty" in f:
                lines.append(f"  {label}: {f['vs_empty']:.0%} of the rate on an empty database")
    if "yardstick_msgs_per_s" in s:
        lines.append(f"  ratio: msgs/s against {s['yardstick_msgs_per_s']:.1f}, the mean of the do-nothing runs "
                     "before maild and right after its full-speed runs (the machine's speed drifts)")
    lines += ["  p50/p95/p99: end of DATA → 250 of each mail; peak RSS: sum of VmHWM over maild's processes "
              "(an upper bound)",
              "  loadgen/server: CPU of the load generator / of the server (maild: its whole process tree), "
              "% of one core, over the load's wall time"]
    for label, f in runs:
        if "rate_asked" not in f:
            continue
        half = f" (half of {f['half_of_msgs_per_s']:.1f})" if "half_of_msgs_per_s" in f else ""
        met = "met" if f["p99_target_met"] else "NOT met"
        lines.append(f"  {label}: asked {f['rate_asked']:.1f} msgs/s{half}, achieved {f['msgs_per_s']:.1f}; "
                     f"p99 {f['p99_ms']:.1f} ms, target ≤ {f['p99_target_ms']:.0f} ms {met}; sends started up to "
                     f"{f['schedule_lag_max_ms']:.0f} ms behind schedule (p99 {f['schedule_lag_p99_ms']:.0f} ms)")
    for label, f in runs:
        if "error" in f or "all_acks_delivered" not in f:
            continue
        state = "all" if f["all_acks_delivered"] else "NOT all"
        lines.append(f"  {label}: {f['messages_stored']} stored, {f['cases']} cases; {state} delivered: "
                     f"{f['acks_delivered']} of {f['acks_expected']} acknowledgements and "
                     f"{f['agent_mails_delivered']} of {f['agent_mails_expected']} agent notifications reached "
                     f"the sink ({f['outbound_failed']} failed), the last {f['ack_drain_s']} s after the load")
    for label, f in runs:
        if f.get("failed"):
            lines.append(f"  {label}: {f['failed']} sends FAILED, e.g. {f['errors'][0]}")
    return lines


def memory_lines(m: dict[str, Any]) -> list[str]:
    if "error" in m and "message_mb" not in m:
        return [f"Memory: FAILED: {_last_line(m['error'])}"]
    met = "met" if m["growth_target_met"] else "NOT met"
    lines = [
        f"Memory: one mail of {m['message_mb']:.1f} MB (a text part and a {m['attachment_mb']:g} MB attachment, "
        f"base64 in 76-character lines) into a fresh maild (sqlite)",
        f"  RSS idle {m['rss_before_mb']:.0f} MB, peak {m['peak_rss_mb']:.0f} MB, growth {m['growth_mb']:.0f} MB "
        f"= {m['growth_per_message_size']:.2f}× the message: target ≤ {m['growth_target']:g}× {met}",
        f"  peak: sum of VmHWM over maild's {m['processes']} process(es), an upper bound; largest RSS sum "
        f"sampled every 20 ms {m['sampled_peak_rss_mb']:.0f} MB; {m['rss_after_mb']:.0f} MB after",
    ]
    if m["complete"]:
        lines.append(f"  250 {m['data_end_to_250_ms']:.0f} ms after the end of DATA (sending took {m['send_s']} s); "
                     f"stored, acknowledgement at the sink {m['stored_and_acked_s']} s later")
    else:
        lines.append(f"  NOT COMPLETE: accepted {m['accepted']}, {m['stored']} stored, {m['acks_delivered']} of "
                     f"{m['acks_expected']} acknowledgements delivered" + (f"; {m['error']}" if "error" in m else ""))
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
    if "memory" in results:
        lines += ([""] if "smtp" in results else []) + memory_lines(results["memory"])
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
