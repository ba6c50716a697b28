"""The benchmark's peer scenario (``python -m ops.bench --scenario peer``) end to end with
tiny numbers: the steady scenario, the raw limit and Kafka Connect standalone with
Debezium's JDBC sink on the same events, on the real three-broker cluster, into the
embedded PostgreSQL (reached by the JDBC driver through its Unix socket).

Skipped without Java and Maven, except under CI, where it fails
(tests/support/cluster_fixtures.py); the peer's jars come from the cache .ci/run fills."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from daemon.runtime.logs import configure_logging
from ops.bench import peer as pr
from ops.bench.cli import bench
from tests.support.kafka_cluster import KafkaCluster, ToolMissing

# The session's cluster is started by one worker (dev.py runs two pytest workers).
pytestmark = pytest.mark.xdist_group("kafka-cluster")


@pytest.fixture(scope="module")
def peer_jars() -> None:
    try:
        pr.fetch_jars()
    except ToolMissing as err:
        if os.environ.get("CI"):
            pytest.fail(f"{err}; CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(str(err))


def test_peer_scenario_tiny(peer_jars: None, pg_server_dsn: str,
                            kafka_cluster: KafkaCluster) -> None:
    """syncd's steady figure, the raw limit and the peer's, in one JSON; the peer's table
    holds every key once, with its last event."""
    env = {"SYNCD_DATABASE_URL": pg_server_dsn, "SYNCD_KAFKA_BOOTSTRAP": kafka_cluster.bootstrap,
           "SYNCD_PARTITIONS": "3"}
    try:
        result = CliRunner().invoke(bench, ["--scenario", "peer", "--records", "2000", "--json"],
                                    env=env, catch_exceptions=False)
    finally:
        configure_logging()  # the bench quiets logging; give the session its default back
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    outcome = report["scenarios"]["peer"]
    assert outcome["measured"], outcome
    assert outcome["cluster"] == "configured"
    assert outcome["events"] == 2000 and outcome["peer_topic"]["events"] == 2000
    assert outcome["events_per_s"] > 0 and outcome["raw"]["sink_per_s"] > 0
    assert outcome["peer_events_per_s"] > 0
    assert outcome["syncd_to_peer"] == pytest.approx(
        outcome["events_per_s"] / outcome["peer_events_per_s"], rel=0.01)
    peer = outcome["peer"]
    assert peer["jvm_start_seconds"] > 0 and peer["seconds"] > 0
    checks = peer["checks"]
    keys = outcome["peer_topic"]["keys"]
    assert 0 < keys <= 2000
    assert checks == {"rows": keys, "distinct_keys": keys, "expected_keys": keys,
                      "rows_with_last_event": keys}
    steady = outcome["steady"]["checks"]
    assert steady["outbox_left"] == 0 and steady["links"] == steady["links_expected"]
    (target,) = outcome["targets"]
    assert target["figure"].startswith("syncd steady") and isinstance(target["met"], bool)
