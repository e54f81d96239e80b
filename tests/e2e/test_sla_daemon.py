"""SLA escalation by the running daemon, its clock set with faketime: one mail to the
manager on a breach, none again after a restart (SPEC §8, §12)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.conftest import Database, require
from tests.e2e.test_case_list import CONTRACTS_TOML
from tests.support.daemon import Daemon
from tests.support.sink import Sink

FRIDAY_17 = "@2026-11-20 17:00:00"
MONDAY_13 = "@2026-11-23 13:00:00"


def at(moment: str) -> dict[str, object]:
    return {"prefix": ["faketime", "-f", moment],
            "env": {"TZ": "UTC", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}}


def test_breach_escalates_once_across_restarts(database: Database, sink: Sink, tmp_path: Path) -> None:
    require(shutil.which("faketime") is not None, "faketime is not installed (.ci/run installs it)")
    d = Daemon.with_config(tmp_path, database.url, f"smtp://127.0.0.1:{sink.port}", extra=CONTRACTS_TOML)
    assert d.config is not None  # carol manages billing, the VIP contract's team
    carol = 'name = "Carol Agent"\n'
    d.config.write_text(d.config.read_text().replace(carol, carol + 'role = "manager"\n'))
    d.cli("db", "upgrade")
    d.cli("contract", "add-client", "VIP", "--org", "acme.test")
    d.start(**at(FRIDAY_17))  # type: ignore[arg-type]
    try:
        d.send(b"From: Ann <ann@acme.test>\r\nTo: support@example.com\r\nSubject: Payment failed\r\n\r\nDeclined.\r\n",
               "ann@acme.test", ["support@example.com"])
        (case,) = d.cases()
        assert case["contract"] == "VIP" and case["queue"] == "billing" and "vip" in case["tags"]
        assert case["due_at"].startswith("2026-11-23T12:00")
    finally:
        d.stop()
    for _ in range(2):  # after the breach, and again after a restart
        d.start(**at(MONDAY_13))  # type: ignore[arg-type]
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not [c for c in sink.to("carol@example.com")
                                                       if "SLA breached" in str(c.message["Subject"])]:
                time.sleep(0.2)
            time.sleep(1.5)
        finally:
            d.stop()
    breached = [c for c in sink.to("carol@example.com") if "SLA breached" in str(c.message["Subject"])]
    assert len(breached) == 1  # resolution and first response broke in the same pass: one mail
    text = breached[0].message.get_body(("plain",)).get_content()
    assert "sla breached" in text.lower() or "SLA" in text
    assert not [c for c in sink.to("ann@acme.test") if "SLA" in str(c.message["Subject"])]
