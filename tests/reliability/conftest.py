"""The reliability suite's table: operations, kills, hostile inputs, writes lost, unclear errors."""

from __future__ import annotations

from tests.reliability.harness import ROUNDS, SECONDS, SEED, TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TALLY.rows:
        return
    terminalreporter.section(f"reliability (rounds={ROUNDS}, concurrent seconds={SECONDS:g}, seed={SEED})")
    terminalreporter.write_line(TALLY.table())
