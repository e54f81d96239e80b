"""A corpus test's rate, shown in pytest's terminal summary (visible in `make test` without -s)."""

from __future__ import annotations

import pytest


class _RateLine:
    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(self.line)


def report_rate(request: pytest.FixtureRequest, name: str, line: str) -> None:
    """Writes `line` at the end of the run, once per `name` (a re-run test replaces its line)."""
    manager = request.config.pluginmanager
    old = manager.get_plugin(name)
    if old is not None:
        manager.unregister(old, name)
    manager.register(_RateLine(line), name)
