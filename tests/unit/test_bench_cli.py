"""The benchmark's command line (ops/bench/cli.py): which scenarios a run is given."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.runtime.logs import configure_logging
from ops.bench import scenarios
from ops.bench.cli import SCENARIOS, bench, render
from ops.bench.workloads import StatementTimes


@pytest.mark.parametrize(("args", "expected"), [
    (["--scenario", "replay", "--scenario", "steady"], ["steady", "replay"]),
    (["--scenario", "handshake"], ["handshake"]),
    (["--scenario", "all", "--no-peer"], list(SCENARIOS)),
    (["--no-peer"], list(SCENARIOS)),
    (["--scenario", "peer", "--scenario", "steady"], ["steady", "peer"]),
])
def test_scenarios_run_in_the_order_of_all(monkeypatch: pytest.MonkeyPatch,
                                           args: list[str], expected: list[str]) -> None:
    """Several ``--scenario`` run once each, in the order ``all`` runs them (steady before
    replay, which then rebuilds the log steady timed)."""
    given: list[list[str]] = []

    async def run_bench(_settings: Any, names: list[str], _records: int,
                        **_kwargs: Any) -> dict[str, Any]:
        given.append(list(names))
        return {"scenarios": {}}

    monkeypatch.setattr(scenarios, "run_bench", run_bench)
    try:
        result = CliRunner().invoke(bench, [*args, "--json"], catch_exceptions=False)
    finally:
        configure_logging()  # the bench quiets logging; give the session its default back
    assert result.exit_code == 0, result.output
    assert given == [expected]


def test_statement_times_rank_what_took_longest() -> None:
    """``--statements``: each statement's calls and time, by its text (whitespace
    folded), the longest first, and the terminal table shows them under the targets."""
    times = StatementTimes(limit=2)
    for text, elapsed in (("SELECT 1", 0.5), ("SELECT\n  2", 0.2), ("SELECT 2", 0.4),
                          ("SELECT 3", 0.1)):
        times.record(SimpleNamespace(query=text, elapsed=elapsed))
    top = times.top()
    assert [(s["statement"], s["calls"], s["seconds"]) for s in top] == [
        ("SELECT 2", 2, 0.6), ("SELECT 1", 1, 0.5)]
    assert top[0]["ms_each"] == 300.0
    report = {"records": 1, "load_before": [0], "load_after": [0],
              "machine": {"cores": 2, "cpu": "x"},
              "scenarios": {"steady": {"measured": False, "statements": top}}}
    assert "SELECT 2" in render(report).split("steady: where its statements on the pool"
                                              " spent their time")[1]
    times.reset()
    assert times.top() == []
