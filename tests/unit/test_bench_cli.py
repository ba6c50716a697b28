"""The benchmark's command line (ops/bench/cli.py): which scenarios a run is given."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from daemon.runtime.logs import configure_logging
from ops.bench import scenarios
from ops.bench.cli import SCENARIOS, bench


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
