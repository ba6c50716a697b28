"""The benchmark (``python -m ops.bench``): a smoke run of every scenario with tiny numbers
(the real figures come from ``python -m ops.bench --scenario all`` on a quiet machine; see
ops/bench/README.md). The peer sink, which needs the real Kafka cluster, has its own
(tests/integration/test_bench_peer.py)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from daemon.runtime.logs import configure_logging
from ops.bench.cli import SCENARIOS, bench

# One worker runs the harness-sized runs one after the other (dev.py runs two
# pytest workers): side by side on two cores their timings would be each other's.
pytestmark = pytest.mark.xdist_group("heavy")

HEADLINE = {"steady": "events_per_s", "capture": "changes_per_s", "initial": "events_per_s",
            "latency": "p50_ms", "replay": "events_per_s", "handshake": "median_ms"}


def test_bench_all_scenarios_tiny(pg_server_dsn: str, kafka_bootstrap: str) -> None:
    """Every scenario runs to the end on the test services and reports sane figures."""
    env = {"SYNCD_DATABASE_URL": pg_server_dsn, "SYNCD_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SYNCD_PARTITIONS": "3"}
    try:
        result = CliRunner().invoke(
            bench, ["--scenario", "all", "--no-peer", "--records", "200", "--duration", "1",
                    "--statements", "40", "--json"], env=env, catch_exceptions=False)
    finally:
        configure_logging()  # the bench quiets logging; give the session its default back
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"command", "records", "machine", "load_before", "load_after", "scenarios",
            "targets"} <= report.keys()
    assert report["records"] == 200 and report["machine"]["cores"] >= 1
    assert set(report["scenarios"]) == set(SCENARIOS)
    for name, outcome in report["scenarios"].items():
        assert outcome["measured"], (name, outcome)  # every scenario, none excused
        assert outcome[HEADLINE[name]] > 0, (name, outcome)
        assert 0 < outcome["ratio"] < 10, (name, outcome)
        assert outcome["targets"] and all(
            isinstance(t["met"], bool) and math.isfinite(t["value"]) for t in outcome["targets"]
            if t["figure"] != "seconds to match and link"), (name, outcome)
    steady = report["scenarios"]["steady"]
    assert steady["checks"]["outbox_left"] == 0
    assert set(steady["gc"]) == {"gen0", "gen1", "gen2"}  # time in the collector, by generation
    assert steady["checks"]["links"] == steady["checks"]["links_expected"]
    assert steady["checks"]["pairs_disagreeing"] == 0
    # The projector's own statements were timed (the log's insert is in every batch).
    assert any(s["statement"].startswith("INSERT INTO syncd.event_log")
               and s["calls"] >= steady["batches"] for s in steady["statements"])
    latency = report["scenarios"]["latency"]  # at 2,000/s, and at 5,000/s below it
    assert latency["rate_per_s"] == 2000 and latency["at_5000_per_s"]["rate_per_s"] == 5000
    assert latency["at_5000_per_s"]["p50_ms"] > 0
    assert [t["figure"] for t in latency["targets"]] == [
        "p50 latency at 5,000/s", "p99 latency at 5,000/s",
        "p50 latency at 2,000/s", "p99 latency at 2,000/s"]
    initial = report["scenarios"]["initial"]
    assert initial["linked_ok"] and initial["memory"]["peak_rss_mib"] > 0
    assert report["scenarios"]["capture"]["raw"]["full_per_s"] > 0
    replay = report["scenarios"]["replay"]  # each way of rebuilding finds nothing to change
    # side by side (the product's way), one at a time, and per event alike
    assert len(replay["changes"]) == len(replay["projections"]) + 1 >= 6  # and the ledger
    assert set(replay["changes"].values()) == {0}
    assert {p["changes"] for p in replay["projections"].values()} == {0}
    assert replay["per_event_handshake_changes"] == 0
    assert replay["side_by_side_gain"] > 0
    assert replay["per_event_signals_changes"] == 0 and replay["per_event_events_per_s"] > 0
