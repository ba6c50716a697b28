"""Issue 18, the production configuration on the real cluster: the daemon's Kafka
security settings over SASL SCRAM-SHA-512 with exactly the ACLs docs/production.md
lists, the idempotent producer, refusals that end start-up at once (wrong password,
a missing ACL) and change nothing, and retention deleting events the projector had
not applied (the outbox sends them again).

Skipped without Java and Maven or PostgreSQL's server binaries, except under CI
(tests/support/cluster_fixtures.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from adapters.kafka import make_consumer
from daemon.app import run
from daemon.bootstrap import Overrides, build
from daemon.runtime.services import Services
from daemon.runtime.settings import Settings
from daemon.runtime.supervisor import supervise
from projections.config import SyncConfig
from tests.integration.test_real_cluster import least_privilege_database, migrated_by_owner
from tests.support.kafka_cluster import (
    ADMIN_USER,
    CLIENT_USER,
    DAEMON_USER,
    SCRAM_MECHANISM,
    KafkaCluster,
)
from tests.support.pipeline import TEST_SESSION_TIMEOUT_MS, Pipeline
from tests.support.system_postgres import SystemPostgres

pytestmark = pytest.mark.xdist_group("kafka-cluster")

WRONG_PASSWORD = "not-the-Password-4c1e"


def scram_settings(user: tuple[str, str]) -> dict[str, Any]:
    """The daemon's Kafka security settings for ``user`` on the SCRAM listener."""
    return {"kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": SCRAM_MECHANISM, "kafka_sasl_username": user[0],
            "kafka_sasl_password": SecretStr(user[1])}


def documented_acls(topic: str, group: str) -> list[dict[str, Any]]:
    """The ACLs of docs/production.md for the daemon's principal, as ``grant`` keywords."""
    signals = topic.removesuffix(".events") + ".signals"
    return [{"operations": ["Describe", "Read", "Write", "Create"], "topic": topic},
            {"operations": ["Describe", "Write", "Create"], "topic": signals},
            {"operations": ["Read"], "group": group}]


async def grant(cluster: KafkaCluster, principal: str, acls: list[dict[str, Any]]) -> None:
    await asyncio.gather(*(asyncio.to_thread(cluster.grant, principal, **acl) for acl in acls))


async def topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def database_state(dsn: str) -> dict[str, int]:
    """What a daemon that ran would have changed."""
    conn = await asyncpg.connect(dsn)
    try:
        return {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in (
            "desk.outbox", "crm.outbox", "crm.contacts", "syncd.event_log",
            "syncd.consumer_offsets", "sync.links")}
    finally:
        await conn.close()


@pytest.fixture
async def daemon_dsn(system_postgres: SystemPostgres) -> str:
    """A database migrated by its owner and granted to the daemon's role; its DSN."""
    return await least_privilege_database(system_postgres)


@pytest.fixture
async def owner_dsn(system_postgres: SystemPostgres) -> str:
    """A database migrated by its owner; the owner's DSN. ``syncd run`` starts with
    ``migrate`` (nothing to apply here), whose ``CREATE SCHEMA IF NOT EXISTS`` the
    least-privilege role may not run, so the whole daemon runs as the owner."""
    return system_postgres.owner_dsn(await migrated_by_owner(system_postgres))


async def test_daemon_principal_with_documented_acls_syncs(
        kafka_cluster: KafkaCluster, daemon_dsn: str) -> None:
    """The pipeline as the principal ``User:syncd`` over SASL SCRAM-SHA-512, with exactly
    the documented ACLs (topic: Describe, Read, Write, Create; group: Read; nothing on
    the cluster): it creates its topic, its relays' producers are idempotent (on Kafka
    4.4 Write on the topic is all InitProducerId needs), and desk inserts reach the
    CRM."""
    prefix = f"acl{uuid.uuid4().hex[:10]}"
    pipe = Pipeline(daemon_dsn, kafka_cluster.scram_bootstrap, prefix,
                    settings=scram_settings(DAEMON_USER))
    await grant(kafka_cluster, f"User:{DAEMON_USER[0]}", documented_acls(pipe.topic, pipe.group))
    assert pipe.topic not in await topics(kafka_cluster.bootstrap)
    with structlog.testing.capture_logs() as logs:
        await pipe.start()
        try:
            for i in range(10):
                await pipe.execute("INSERT INTO desk.contacts (first_name, last_name, email)"
                                   " VALUES ($1, 'Acl', $2)", f"A{i}", f"a{i}@example.com")
            await pipe.drain(timeout=60)
            relays = pipe.parts.relays
            emails = {r["email"] for r in await pipe.fetch("SELECT email FROM crm.contacts")}
        finally:
            await pipe.close()
    assert pipe.topic in await topics(kafka_cluster.bootstrap)  # created by User:syncd
    assert emails == {f"a{i}@example.com" for i in range(10)}
    assert {source: relay.idempotence for source, relay in relays.items()} == {
        "desk": True, "crm": True}
    refusals = [e for e in logs if e.get("event") in ("kafka_refused",
                                                         "kafka_idempotence_unsupported")]
    assert refusals == []


async def test_wrong_password_exits_at_once_and_changes_nothing(
        kafka_cluster: KafkaCluster, owner_dsn: str, tmp_path: Path) -> None:
    """``syncd run`` with a wrong SASL password: exit status 1 within seconds (not the
    start-up wait of a broker that is away), one line naming the brokers, the principal
    and the refusal, the password nowhere in the output; no topic created, nothing in
    the database changed."""
    prefix = f"pw{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("INSERT INTO desk.contacts (first_name, last_name, email)"
                           " VALUES ('W', 'Wrong', 'w@example.com')")
    finally:
        await conn.close()
    before = await database_state(owner_dsn)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNCD_")}
    env |= {"SYNCD_DATABASE_URL": owner_dsn,
            "SYNCD_KAFKA_BOOTSTRAP": kafka_cluster.scram_bootstrap,
            "SYNCD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SYNCD_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "SYNCD_KAFKA_SASL_USERNAME": DAEMON_USER[0],
            "SYNCD_KAFKA_SASL_PASSWORD": WRONG_PASSWORD,
            "SYNCD_TOPIC_PREFIX": prefix, "SYNCD_GROUP_ID": f"{prefix}-g",
            "SYNCD_HTTP_LISTEN": "127.0.0.1:0", "SYNCD_DATA_DIR": str(tmp_path / "data"),
            "SYNCD_LOG_FORMAT": "json", "SYNCD_STARTUP_WAIT": "60"}
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "daemon", "run"], env=env,
        capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    failed = [json.loads(line) for line in output.splitlines()
              if line.startswith("{") and '"startup_failed"' in line]
    assert len(failed) == 1, output
    message = failed[0]["error"]
    assert f"Kafka at {kafka_cluster.scram_bootstrap} refused User:{DAEMON_USER[0]}" in message
    assert "authentication failed" in message and "SaslAuthenticationFailed" in message
    assert '"dependency_unavailable"' not in output  # refused, not waited for
    assert WRONG_PASSWORD not in output
    # Python's start-up and the database check included; the broker wait is 60 s.
    assert elapsed < 20, (elapsed, output)
    assert f"{prefix}.events" not in await topics(kafka_cluster.bootstrap)
    assert await database_state(owner_dsn) == before


async def test_principal_without_topic_acl_fails_clearly_and_changes_nothing(
        kafka_cluster: KafkaCluster, owner_dsn: str, tmp_path: Path) -> None:
    """The daemon (``daemon.app.run`` in-process) as ``User:client``, which may use its
    consumer group but has no ACL on the topic: start-up ends with status 1 at once,
    saying that the principal may not create (or describe) the topic; nothing is
    created or changed."""
    prefix = f"na{uuid.uuid4().hex[:10]}"
    group = f"{prefix}-g"
    await grant(kafka_cluster, f"User:{CLIENT_USER[0]}", [{"operations": ["Read"],
                                                           "group": group}])
    before = await database_state(owner_dsn)
    settings = Settings(database_url=SecretStr(owner_dsn),
                        kafka_bootstrap=kafka_cluster.scram_bootstrap, topic_prefix=prefix,
                        group_id=group, partitions=3, http_listen="127.0.0.1:0",
                        data_dir=tmp_path / "data", startup_wait=60, shutdown_deadline=5,
                        consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
                        **scram_settings(CLIENT_USER))
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        status = await asyncio.wait_for(run(settings, asyncio.Event()), 30)
    elapsed = time.monotonic() - started
    assert status == 1
    failed = [e for e in logs if e.get("event") == "startup_failed"]
    assert len(failed) == 1, logs
    message = failed[0]["error"]
    assert message.startswith(
        f"Kafka at {kafka_cluster.scram_bootstrap} refused User:{CLIENT_USER[0]}"
        f" (SASL_PLAINTEXT, {SCRAM_MECHANISM}): not authorized to create topic"
        f" '{prefix}.events'"), message
    assert "TopicAuthorizationFailedError" in message
    assert [e for e in logs if e.get("event") == "dependency_unavailable"] == []
    assert elapsed < 10, elapsed
    assert f"{prefix}.events" not in await topics(kafka_cluster.bootstrap)
    assert await database_state(owner_dsn) == before


async def test_pipeline_over_tls_with_the_configured_ca(
        kafka_cluster: KafkaCluster, daemon_dsn: str) -> None:
    """``SASL_SSL``: the pipeline's clients verify the brokers' certificates against
    ``kafka_ssl_cafile`` (aiokafka's ``create_ssl_context``, host names checked) and
    authenticate with SCRAM over TLS; desk inserts reach the CRM."""
    prefix = f"tls{uuid.uuid4().hex[:10]}"
    pipe = Pipeline(daemon_dsn, kafka_cluster.tls_bootstrap, prefix, settings={
        **scram_settings(ADMIN_USER), "kafka_security_protocol": "SASL_SSL",
        "kafka_ssl_cafile": kafka_cluster.ca_file})
    await pipe.start()
    try:
        for i in range(5):
            await pipe.execute("INSERT INTO desk.contacts (first_name, last_name, email)"
                               " VALUES ($1, 'Tls', $2)", f"T{i}", f"t{i}@example.com")
        await pipe.drain(timeout=60)
        emails = {r["email"] for r in await pipe.fetch("SELECT email FROM crm.contacts")}
        relays = pipe.parts.relays
    finally:
        await pipe.close()
    assert emails == {f"t{i}@example.com" for i in range(5)}
    assert all(relay.idempotence for relay in relays.values())


async def test_untrusted_broker_certificate_fails_clearly(
        kafka_cluster: KafkaCluster, owner_dsn: str, tmp_path: Path) -> None:
    """A CA file that did not sign the brokers' certificates: start-up ends with status 1
    at once, saying the certificate is not trusted (not a wait for a broker away)."""
    other_ca = tmp_path / "other-ca.pem"
    await asyncio.to_thread(
        subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                         "1", "-subj", "/CN=another CA", "-keyout", str(tmp_path / "other.key"),
                         "-out", str(other_ca)], check=True, capture_output=True)
    prefix = f"ca{uuid.uuid4().hex[:10]}"
    settings = Settings(database_url=SecretStr(owner_dsn),
                        kafka_bootstrap=kafka_cluster.tls_bootstrap, topic_prefix=prefix,
                        group_id=f"{prefix}-g", http_listen="127.0.0.1:0",
                        data_dir=tmp_path / "data", startup_wait=60,
                        **{**scram_settings(ADMIN_USER), "kafka_security_protocol": "SASL_SSL",
                           "kafka_ssl_cafile": other_ca})
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        status = await asyncio.wait_for(run(settings, asyncio.Event()), 30)
    assert status == 1
    assert time.monotonic() - started < 10
    failed = [e for e in logs if e.get("event") == "startup_failed"]
    assert len(failed) == 1, logs
    assert failed[0]["error"].startswith(
        f"Kafka at {kafka_cluster.tls_bootstrap} refused User:{ADMIN_USER[0]} (SASL_SSL,"
        f" {SCRAM_MECHANISM}): the broker's TLS certificate is not trusted"), failed[0]
    assert f"{prefix}.events" not in await topics(kafka_cluster.bootstrap)


class Parts:
    """The daemon's pipeline (``daemon.bootstrap.build``) with the relays and the
    projector started and stopped apart: the relays go on while the projector is
    down."""

    def __init__(self, dsn: str, bootstrap: str, prefix: str, pool: asyncpg.Pool) -> None:
        settings = Settings(database_url=SecretStr(dsn), kafka_bootstrap=bootstrap,
                            topic_prefix=prefix, group_id=f"{prefix}-group", partitions=1,
                            relay_poll_interval=0.2, relay_resend_after=5,
                            consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS)
        self.pipeline = build(settings, services=Services(dsn=dsn, bootstrap=bootstrap),
                              pool=pool, config=SyncConfig,
                              overrides=Overrides(stall_after=10, drain_retry_after=0.1))
        self.running: dict[str, tuple[asyncio.Event, asyncio.Task[int]]] = {}

    def start(self, name: str) -> None:
        roots = self.pipeline.roots()
        chosen = ({k: v for k, v in roots.items() if k.startswith("relay-")}
                  if name == "relays" else {"projector": roots["projector"],
                                            "resume-drain": roots["resume-drain"]})
        stop = asyncio.Event()
        self.running[name] = (stop, asyncio.create_task(supervise(chosen, stop, deadline=5)))

    async def stop(self, name: str) -> None:
        stop, task = self.running.pop(name)
        stop.set()
        assert await task == 0

    async def close(self) -> None:
        for name in list(self.running):
            await self.stop(name)


@pytest.fixture
async def retention_parts(kafka_cluster: KafkaCluster, daemon_dsn: str
                          ) -> AsyncIterator[tuple[Parts, asyncpg.Pool, str]]:
    prefix = f"rt{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap,
                                request_timeout_ms=10_000)
    await admin.start()
    try:
        # One partition, three replicas; what is older than 1.5 s is deleted (the
        # brokers check every 0.5 s and roll the active segment for it).
        response = await admin.create_topics([NewTopic(
            f"{prefix}.events", 1, 3,
            topic_configs={"retention.ms": "1500", "segment.ms": "100"})])
        assert [code for _, code, *_ in response.topic_errors] == [0]
    finally:
        await admin.close()
    pool = await asyncpg.create_pool(daemon_dsn, min_size=1, max_size=6,
                                     server_settings={"timezone": "UTC"})
    parts = Parts(daemon_dsn, kafka_cluster.bootstrap, prefix, pool)
    try:
        yield parts, pool, f"{prefix}.events"
    finally:
        await parts.close()
        await pool.close()


async def log_start(bootstrap: str, topic: str) -> tuple[int, int]:
    """The log start offset and the end offset of partition 0."""
    consumer = make_consumer(bootstrap, group_id=f"{topic}-probe")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return ((await consumer.beginning_offsets([tp]))[tp],
                (await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def wait_until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def test_retention_deletes_unapplied_events_and_the_outbox_sends_them_again(
        kafka_cluster: KafkaCluster,
        retention_parts: tuple[Parts, asyncpg.Pool, str]) -> None:
    """The projector applies a first batch and stops; the relays go on sending desk
    inserts, which retention deletes before the projector is back. Started again, its
    stored offset is below the log start offset: it starts at the log start (no broker
    reset), and the deleted events, still in the outbox, are sent again by the running
    relay (``relay_resend_after``) and applied: nothing lost, nothing twice."""
    parts, pool, topic = retention_parts
    bootstrap = kafka_cluster.bootstrap
    insert = ("INSERT INTO desk.contacts (first_name, last_name, email)"
              " VALUES ($1, 'Retained', $2)")

    async def applied(count: int) -> bool:
        return int(await pool.fetchval("SELECT count(*) FROM crm.contacts")) >= count

    async def outbox_empty() -> bool:
        return not await pool.fetchval(
            "SELECT (SELECT count(*) FROM desk.outbox) + (SELECT count(*) FROM crm.outbox)")

    with structlog.testing.capture_logs() as logs:
        parts.start("relays")
        parts.start("projector")
        for i in range(5):
            await pool.execute(insert, f"R{i}", f"r{i}@example.com")
        await wait_until("the first inserts applied", lambda: applied(5))
        await wait_until("the outbox emptied", outbox_empty)
        await parts.stop("projector")
        stored = int(await pool.fetchval(
            "SELECT next_offset FROM syncd.consumer_offsets WHERE topic = $1", topic))

        for i in range(5, 25):
            await pool.execute(insert, f"R{i}", f"r{i}@example.com")

        async def sent_and_deleted() -> bool:
            start, end = await log_start(bootstrap, topic)
            return end >= stored + 20 and start >= stored + 20

        await wait_until("the new events sent and deleted by retention", sent_and_deleted)
        assert await pool.fetchval("SELECT count(*) FROM desk.outbox") == 20
        start, _ = await log_start(bootstrap, topic)
        assert stored < start

        parts.start("projector")
        await wait_until("every insert applied", lambda: applied(25), timeout=60)
        await wait_until("the outbox emptied again", outbox_empty)
    below = [e for e in logs if e.get("event") == "offsets_below_log_start"]
    assert below and below[0]["stored_offset"] == stored
    assert below[0]["log_start_offset"] >= stored + 20
    assert [e for e in logs if e.get("event") == "relay_resending"
            and e.get("source") == "desk"], "sent again by the relay that kept running"
    assert [e for e in logs if e.get("event") == "broker_offsets_reset"] == []
    crm = await pool.fetch("SELECT email, count(*) AS n FROM crm.contacts GROUP BY 1")
    assert {r["email"] for r in crm} == {f"r{i}@example.com" for i in range(25)}
    assert all(r["n"] == 1 for r in crm)
    assert await pool.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE source = 'desk'") == 25
