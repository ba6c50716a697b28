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


def test_envelope_keeps_the_event() -> None:
    """The peer's copy: the event's fields in Connect's JSON envelope, values as JSON text."""
    event = {"v": 1, "event_id": "e1", "source": "crm", "module": "contacts",
             "record_id": "7", "op": "update", "values": {"phone": "+33 1", "n": 2},
             "changed": None, "modified_at": "2026-01-01T00:00:00Z",
             "created_at": "2026-01-01T00:00:00Z", "origin": "user",
             "captured_at": "2026-01-01T00:00:01Z"}
    wrapped = json.loads(pr.envelope(json.dumps(event).encode()))
    assert wrapped["schema"] == pr.SCHEMA
    payload = wrapped["payload"]
    assert json.loads(payload.pop("values")) == event.pop("values")
    assert payload == event
    assert {f["field"] for f in pr.SCHEMA["fields"]} == set(wrapped["payload"]) | {"values"}


def test_jdbc_target_from_libpq_urls() -> None:
    url, user, password = pr.jdbc_target("postgresql://postgres:@/bench?host=/tmp/pg")
    assert url == ("jdbc:postgresql://localhost:5432/bench?socketFactory="
                   "org.newsclub.net.unix.AFUNIXSocketFactory$FactoryArg"
                   "&socketFactoryArg=/tmp/pg/.s.PGSQL.5432")
    assert (user, password) == ("postgres", "")
    assert pr.jdbc_target("postgresql://u:p%40ss@127.0.0.1:5433/db") == (
        "jdbc:postgresql://127.0.0.1:5433/db", "u", "p@ss")
