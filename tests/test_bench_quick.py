"""The benchmark works: `python -m bench … --quick` runs, writes its JSON, and maild took every
mail and delivered every acknowledgement. It never judges speed — a shared, busy test machine
says nothing about that; `make bench` on a quiet one does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import require
from tests.support.dovecot import dovecot_problem

REPO = Path(__file__).resolve().parent.parent
LOAD_KEYS = ("msgs_per_s", "p50_ms", "p95_ms", "p99_ms", "wall_s", "generator_cpu_s", "generator_cpu_pct",
             "server_cpu_pct")


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "bench", *args, "--quick", "--json", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "msgs/s" in r.stdout
    return json.loads(out.read_text())


def test_smtp_benchmark_runs_and_every_acknowledgement_arrives(tmp_path: Path) -> None:
    smtp = run_bench(tmp_path, "smtp")["smtp"]
    n = smtp["messages"]
    assert n > 0
    assert set(smtp["mix"]) == {"plain", "html", "attachment", "reply"}
    base, maild = smtp["do_nothing"], smtp["maild"]["sqlite"]
    for figures in (base, maild):
        for key in LOAD_KEYS:
            assert figures[key] > 0, key
        assert figures["sent"] == n
        assert figures["failed"] == 0, figures["errors"]
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert base["received"] == n
    assert maild["peak_rss_mb"] > 0
    assert maild["ratio"] > 0
    assert maild["messages_stored"] == n
    assert 0 < maild["cases"] <= n
    assert maild["acks_expected"] > 0
    assert maild["acks_delivered"] == maild["acks_expected"]
    assert maild["agent_mails_delivered"] == maild["agent_mails_expected"]
    assert maild["outbound_failed"] == 0
    assert maild["all_acks_delivered"] is True


def test_imap_benchmark_drains_the_whole_backlog(tmp_path: Path) -> None:
    problem = dovecot_problem()
    require(problem is None, problem or "")
    imap = run_bench(tmp_path, "imap")["imap"]
    assert imap["messages"] > 0
    assert imap["stored"] == imap["moved"] == imap["messages"]
    assert imap["inbox_left"] == 0
    assert imap["all_drained"] is True
    for key in ("msgs_per_s", "drain_s", "append_s", "peak_rss_mb"):
        assert imap[key] > 0, key


def test_preloaded_run_counts_only_its_own_mail(tmp_path: Path) -> None:
    smtp = run_bench(tmp_path, "smtp", "--preload", "3000")["smtp"]
    empty, full = smtp["maild"]["sqlite"], smtp["maild"]["sqlite, 3k cases"]
    assert full["preloaded_cases"] == 3000 and empty["preloaded_cases"] == 0
    assert full["messages_stored"] == smtp["messages"]  # the preloaded rows are not counted as ingested
    assert full["all_acks_delivered"] and full["vs_empty"] > 0
