"""The product on a real Apache Kafka 4 cluster (three KRaft nodes, RF 3,
min.insync.replicas 2) and a system PostgreSQL, the daemon connecting as the
least-privilege role of docs/reliability.md (issue 18's foundation).

Skipped without Java and Maven or PostgreSQL's server binaries, except under CI,
where they fail (tests/support/cluster_fixtures.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from adapters.integration_store import IntegrationService
from adapters.kafka import KafkaSecurity, ensure_topics, make_consumer, make_producer
from adapters.migrate import migrate
from tests.support.kafka_cluster import (
    ADMIN_USER,
    CLIENT_USER,
    SCRAM_MECHANISM,
    KafkaCluster,
    partition_metadata,
)
from tests.support.pipeline import Pipeline
from tests.support.system_postgres import SystemPostgres, documented_schemas

# One worker starts the three-broker cluster for all of these (dev.py runs two
# pytest workers).
pytestmark = pytest.mark.xdist_group("kafka-cluster")


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:  # (name, value, read_only, default, sensitive, ...)
                if entry[0] == name:
                    return str(entry[1])
    return None


async def create_replicated_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """The topic as production runs it: replication factor 3 (the broker defaults then
    give it min.insync.replicas 2)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 3)])
    finally:
        await admin.close()


async def new_leader(cluster: KafkaCluster, topic: str, partition: int, old: int,
                     timeout: float = 30.0) -> int:
    """Wait until another node than ``old`` leads the partition."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (leader := await cluster.leader(topic, partition)) == old:
        if loop.time() > deadline:
            raise TimeoutError(f"{topic}/{partition} still led by {old} after {timeout} s")
        await asyncio.sleep(0.2)
    return leader


async def migrated_by_owner(server: SystemPostgres) -> str:
    """A new database, ``syncd migrate`` (the command) run by its owner; returns its
    name."""
    name = await server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    env = os.environ | {"SYNCD_DATABASE_URL": server.owner_dsn(name),
                        "SYNCD_DATA_DIR": str(server.data_dir.parent / f"cli-{name}")}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "daemon", "migrate"], env=env,
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return name


async def owner_schemas(server: SystemPostgres, database: str) -> set[str]:
    conn = await asyncpg.connect(server.owner_dsn(database))
    try:
        return {r["nspname"] for r in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles"
            " WHERE rolname = current_user)")}
    finally:
        await conn.close()


async def least_privilege_database(server: SystemPostgres) -> str:
    """A database migrated by its owner (``syncd migrate``), then granted to the
    daemon's role exactly as the docs say; returns the daemon's DSN."""
    name = await migrated_by_owner(server)
    await server.grant_daemon(name)
    return server.daemon_dsn(name)


@pytest.fixture
async def real_pipeline(kafka_cluster: KafkaCluster,
                        system_postgres: SystemPostgres) -> AsyncIterator[Pipeline]:
    """The tests' pipeline (the daemon's wiring) on the real cluster and the system
    PostgreSQL, as the least-privilege role, on a topic of replication factor 3."""
    dsn = await least_privilege_database(system_postgres)
    prefix = f"rc{uuid.uuid4().hex[:10]}"
    pipe = Pipeline(dsn, kafka_cluster.bootstrap, prefix)
    await pipe.start()
    try:
        yield pipe
    finally:
        await pipe.close()


async def test_cluster_has_three_brokers_with_production_topic_defaults(
        kafka_cluster: KafkaCluster) -> None:
    """Every node answers metadata listing the three brokers; a topic of replication
    factor 3 has its replicas on the three, all in sync, and the cluster's
    min.insync.replicas of 2."""
    from tests.support.kafka_cluster import _brokers_seen

    for node in kafka_cluster.nodes.values():
        assert await _brokers_seen(node.bootstrap) == {1, 2, 3}, node
    topic = f"rc{uuid.uuid4().hex[:10]}.defaults"
    # aiokafka's NewTopic takes no -1 (the broker's default.replication.factor).
    await create_replicated_topic(kafka_cluster.bootstrap, topic)
    partitions = await partition_metadata(kafka_cluster.bootstrap, topic)
    assert sorted(partitions) == [0, 1, 2]
    for info in partitions.values():
        assert sorted(info.replicas) == [1, 2, 3]
        assert sorted(info.isr) == [1, 2, 3]
    assert await topic_config(kafka_cluster.bootstrap, topic, "min.insync.replicas") == "2"


async def test_ensure_topics_replicates_three_ways(kafka_cluster: KafkaCluster) -> None:
    """The product's own topic bootstrap on a three-broker cluster: three replicas."""
    topic = f"rc{uuid.uuid4().hex[:10]}.events"
    assert await ensure_topics(kafka_cluster.bootstrap, [topic], partitions=3) == [topic]
    partitions = await partition_metadata(kafka_cluster.bootstrap, topic)
    assert {p: sorted(i.replicas) for p, i in partitions.items()} == {
        0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}
    assert await topic_config(kafka_cluster.bootstrap, topic, "min.insync.replicas") == "2"


async def test_documented_grants_apply_after_syncd_migrate(
        system_postgres: SystemPostgres) -> None:
    """docs/reliability.md: run `syncd migrate` as the owner, then grant."""
    name = await migrated_by_owner(system_postgres)
    await system_postgres.grant_daemon(name)


async def test_documented_grants_cover_every_schema(system_postgres: SystemPostgres) -> None:
    """Every schema the product creates is in the documented grants."""
    name = await migrated_by_owner(system_postgres)
    assert await owner_schemas(system_postgres, name) - documented_schemas() == set()


async def test_least_privilege_role_opens_the_integration_store(
        system_postgres: SystemPostgres) -> None:
    """The daemon's start-up opens the integration store as its own role."""
    dsn = await least_privilege_database(system_postgres)
    service = await IntegrationService.open(dsn)
    await service.close()


async def test_pipeline_syncs_inserts_as_least_privilege_role(
        real_pipeline: Pipeline, system_postgres: SystemPostgres) -> None:
    """Desk inserts reach the CRM through the real cluster, the daemon connected as the
    documented least-privilege role (not the owner, not a superuser)."""
    pipe = real_pipeline
    assert await pipe.fetchval("SELECT current_user") == system_postgres.daemon_role
    assert not await pipe.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    for i in range(20):
        await pipe.execute("INSERT INTO desk.contacts (first_name, last_name, email)"
                           " VALUES ($1, 'Real', $2)", f"P{i}", f"p{i}@example.com")
    await pipe.drain(timeout=60)
    emails = {r["email"] for r in await pipe.fetch("SELECT email FROM crm.contacts")}
    assert emails == {f"p{i}@example.com" for i in range(20)}
    assert await pipe.fetchval("SELECT count(*) FROM sync.links") == 20


async def test_leader_killed_mid_stream_every_change_once(
        real_pipeline: Pipeline, kafka_cluster: KafkaCluster) -> None:
    """The leader of partition 0 is SIGKILLed in the middle of a stream of desk inserts,
    then restarted: every insert reaches the CRM exactly once, and the event log holds
    each change once."""
    pipe = real_pipeline
    total = 300
    killed: int | None = None
    elected: int | None = None
    restart: asyncio.Future[None] | None = None
    with structlog.testing.capture_logs() as logs:
        for i in range(total):
            await pipe.execute("INSERT INTO desk.contacts (first_name, last_name, email)"
                               " VALUES ($1, 'Stream', $2)", f"S{i}", f"s{i}@example.com")
            if i == total // 4:
                killed = await kafka_cluster.leader(pipe.topic, 0)
                kafka_cluster.kill(killed)
            if i == total // 2:
                assert killed is not None
                elected = await new_leader(kafka_cluster, pipe.topic, 0, killed)
                # Back while the stream goes on.
                restart = asyncio.ensure_future(asyncio.to_thread(kafka_cluster.restart, killed))
            await asyncio.sleep(0.02)
        assert restart is not None
        await restart
        await pipe.drain(timeout=90)
    assert killed is not None
    assert await kafka_cluster.leader(pipe.topic, 0) in {1, 2, 3}

    assert await pipe.fetchval("SELECT count(*) FROM desk.contacts") == total
    crm = await pipe.fetch("SELECT email, count(*) AS n FROM crm.contacts GROUP BY 1")
    assert {r["email"] for r in crm} == {f"s{i}@example.com" for i in range(total)}
    assert all(r["n"] == 1 for r in crm), [tuple(r) for r in crm if r["n"] != 1]
    assert await pipe.fetchval("SELECT count(*) FROM sync.links") == total
    # Each desk insert was recorded once (a copy sent twice to Kafka is dropped by
    # event id; here no change is recorded twice under two ids either).
    dupes = await pipe.fetch(
        "SELECT record_id, count(*) FROM syncd.event_log WHERE source = 'desk'"
        " AND module = 'contacts' GROUP BY 1 HAVING count(*) > 1")
    assert dupes == []
    assert await pipe.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE source = 'desk' AND module = 'contacts'"
        ) == total
    events = await pipe.fetchval("SELECT count(*) FROM syncd.event_log")
    # Drained: the projector's positions are the topic's end offsets.
    messages = sum(pipe.projector.positions.values())
    resets = [e for e in logs if e.get("event") == "broker_offsets_reset"]
    report: dict[str, Any] = {"killed": killed, "elected": elected, "events": events,
                              "messages": messages, "broker_offsets_reset": resets}
    print(f"leader kill: {report}")
    # A leader change is not a broker that lost its log: nothing is read again.
    assert resets == [], report


async def test_whole_cluster_killed_and_restarted_every_change_once(
        real_pipeline: Pipeline, kafka_cluster: KafkaCluster) -> None:
    """The broker restart of the matrix, on the cluster: all three nodes SIGKILLed at
    once and started again on their data (the embedded broker's restart comes back
    empty: test_broker_restart.py). Changes made before, while the cluster is down
    and after are each applied once, and nothing is read again from the start."""
    pipe = real_pipeline
    await pipe.execute("INSERT INTO desk.contacts (last_name, email) SELECT 'before' || g,"
                       " 'b' || g || '@example.com' FROM generate_series(1, 100) g")
    await pipe.drain(timeout=60)
    with structlog.testing.capture_logs() as logs:
        for node in kafka_cluster.nodes:
            kafka_cluster.kill(node)
        try:
            await pipe.execute("INSERT INTO desk.contacts (last_name, email) SELECT"
                               " 'while' || g, 'w' || g || '@example.com'"
                               " FROM generate_series(1, 100) g")
            await pipe.execute(
                "UPDATE desk.contacts SET mobile = 'm' WHERE last_name LIKE 'before%'")
            await asyncio.sleep(3)  # the relays try and fail meanwhile
            assert await pipe.fetchval("SELECT count(*) FROM crm.contacts") == 100
        finally:
            # A node alone has no controller quorum: all three come back together.
            await asyncio.gather(*(asyncio.to_thread(kafka_cluster.restart, node)
                                   for node in kafka_cluster.nodes))
        await pipe.execute("INSERT INTO desk.contacts (last_name, email) SELECT 'after' || g,"
                           " 'a' || g || '@example.com' FROM generate_series(1, 100) g")
        await pipe.drain(timeout=120)
    assert await pipe.fetchval("SELECT count(*) FROM crm.contacts") == 300
    assert await pipe.fetchval("SELECT count(DISTINCT email) FROM crm.contacts") == 300
    assert await pipe.fetchval("SELECT count(*) FROM crm.contacts WHERE mobile = 'm'") == 100
    assert await pipe.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE origin = 'user'") == 400
    assert await pipe.fetchval("SELECT count(*) FROM sync.links") == 300
    # The cluster kept its log: a restart is not a lost log.
    assert [e for e in logs if e.get("event") == "broker_offsets_reset"] == []


async def test_relay_waits_for_min_insync_replicas_and_sends_each_change_once(
        real_pipeline: Pipeline, kafka_cluster: KafkaCluster) -> None:
    """The relay's case of the matrix, on the cluster: with two of three brokers down,
    fewer replicas are in sync than min.insync.replicas (2), so no write is
    acknowledged; the relay keeps its rows and retries, and once one broker is back
    every change lands once."""
    pipe = real_pipeline
    down = [node for node in kafka_cluster.nodes][:2]
    for node in down:
        kafka_cluster.kill(node)
    try:
        await pipe.execute("INSERT INTO desk.contacts (last_name, email) SELECT 'w' || g,"
                           " 'w' || g || '@example.com' FROM generate_series(1, 50) g")
        await asyncio.sleep(5)
        # Nothing was acknowledged with one copy only: nothing reached the CRM, and the
        # rows wait in the outbox.
        assert await pipe.fetchval("SELECT count(*) FROM crm.contacts") == 0
        assert await pipe.fetchval("SELECT count(*) FROM desk.outbox") == 50
    finally:
        await asyncio.gather(*(asyncio.to_thread(kafka_cluster.restart, node)
                               for node in down))
    await pipe.drain(timeout=120)
    assert await pipe.fetchval("SELECT count(*) FROM crm.contacts") == 50
    assert await pipe.fetchval("SELECT count(DISTINCT email) FROM crm.contacts") == 50
    assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log WHERE origin = 'user'"
                               ) == 50


def scram(user: tuple[str, str]) -> KafkaSecurity:
    return KafkaSecurity("SASL_PLAINTEXT", SCRAM_MECHANISM, *user)


async def test_scram_clients_authenticate_and_are_authorized(
        kafka_cluster: KafkaCluster) -> None:
    """On the SASL SCRAM-SHA-512 listener the product's clients (given credentials)
    create a topic, produce and consume; a wrong password is refused, and a user
    without ACLs may not write."""
    bootstrap = kafka_cluster.scram_bootstrap
    topic = f"rc{uuid.uuid4().hex[:10]}.scram"
    created = await ensure_topics(bootstrap, [topic], partitions=1, security=scram(ADMIN_USER))
    assert created == [topic]
    producer = make_producer(bootstrap, security=scram(ADMIN_USER))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(bootstrap, group_id=f"{topic}-group", security=scram(ADMIN_USER))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = await asyncio.wait_for(consumer.getone(), 20)
        assert got.value == b"hello"
    finally:
        await consumer.stop()

    wrong = make_producer(bootstrap, security=scram((ADMIN_USER[0], "not-the-password")))
    with pytest.raises(KafkaError):
        try:
            await wrong.start()
        finally:
            await wrong.stop()

    unauthorized = make_producer(bootstrap, security=scram(CLIENT_USER))
    await unauthorized.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await unauthorized.send_and_wait(topic, b"denied")
    finally:
        await unauthorized.stop()


async def test_least_privilege_role_passes_the_start_up_migration_check(
        system_postgres: SystemPostgres) -> None:
    """`syncd run` applies pending migrations at start: with none pending, the role
    the docs grant (which may create nothing) gets through it."""
    dsn = await least_privilege_database(system_postgres)
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn) == 0
    finally:
        await conn.close()


async def test_two_replicas_on_the_cluster_share_the_work_and_survive_one_killed(
        kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    """OWN-05 on the real cluster (the ops.chaos two-replica run, `--kafka`): two daemons
    in one group, one SIGKILLed midway; every change applied once, nothing diverged."""
    from ops.chaos.harness import run_two_replicas

    figures = await run_two_replicas(changes=2000, root=tmp_path, echo=lambda _line: None,
                                     kafka=kafka_cluster.bootstrap)
    assert figures.kills == 1 and figures.events_expected >= 2000
    assert (figures.lost, figures.duplicated, figures.diverged) == (0, 0, 0), figures.problems
    assert figures.ok, figures.problems


async def test_short_chaos_run_on_the_cluster(kafka_cluster: KafkaCluster,
                                              tmp_path: Path) -> None:
    """The chaos run on the real cluster (`python -m ops.chaos --real-kafka`): the
    partition leader killed and restarted, two brokers down at once, a broker paused
    past its session timeout, a rolling restart, besides daemon SIGKILLs, a PostgreSQL
    restart and a switch to one-way and back: lost, duplicated, diverged all 0."""
    from ops.chaos.harness import run_chaos

    figures = await run_chaos(changes=600, kills=10, seed=3, root=tmp_path,
                              echo=lambda _line: None, cluster=kafka_cluster)
    assert not figures.aborted, figures.problems
    assert figures.rolling_restarts == 1 and figures.broker_restarts >= 6
    assert figures.kills >= 3 and figures.postgres_restarts == 1
    assert (figures.lost, figures.duplicated, figures.diverged) == (0, 0, 0), figures.problems
    assert figures.rebuild_changes == 0, "\n".join(figures.problems)
    assert figures.ok, figures.problems
