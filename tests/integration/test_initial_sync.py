"""SYNC-08: the first sync, on the embedded services and on a real Kafka cluster."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from adapters import initial_sync
from tests.support.brokers import BROKERS, on_both_brokers
from tests.support.pipeline import Pipeline


@pytest.fixture(params=BROKERS)
def kafka_bootstrap(kafka_bootstrap: str, request: pytest.FixtureRequest) -> str:
    """Each Kafka-facing case here on the embedded broker and on the real cluster."""
    return on_both_brokers(request.param, kafka_bootstrap, request)


NOW = dt.datetime.now(dt.UTC)


async def preexisting(pipe: Pipeline) -> None:
    """Records that were there before sync was enabled (not captured)."""
    assert pipe.pool is not None
    async with pipe.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'sync'")
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.execute(
            "INSERT INTO crm.contacts (last_name, email, created_time, modified_time) VALUES"
            " ('Both', 'both@x.com', $1, $1), ('CrmOnly', 'crm@x.com', $1, $1),"
            " ('Old', 'old@x.com', $2, $2)",
            NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=400))
        await conn.execute(
            "INSERT INTO desk.contacts (last_name, email, created_time, modified_time) VALUES"
            " ('Both', ' BOTH@x.com', $1, $1), ('DeskOnly', 'desk@x.com', $1, $1)",
            NOW - dt.timedelta(days=10))


async def test_first_sync_matches_exports_and_skips_old(pipeline: Pipeline) -> None:
    """Both directions are synced and matched; records older than a year stay out until
    they change."""
    await preexisting(pipeline)
    assert pipeline.pool is not None
    seen: list[initial_sync.Progress] = []
    result = await initial_sync.run(pipeline.pool, window_days=365, on_progress=seen.append)
    assert (result.total, result.captured, result.applied) == (4, 4, 4)
    assert seen and seen[-1].ratio == 1.0
    names = sorted(r["last_name"] for r in await pipeline.fetch("SELECT * FROM desk.contacts"))
    assert names == ["Both", "CrmOnly", "DeskOnly"]
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 4  # + DeskOnly
    assert await pipeline.fetchval("SELECT count(*) FROM sync.links") == 3
    await pipeline.execute("UPDATE crm.contacts SET phone = '1' WHERE last_name = 'Old'")
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT count(*) FROM desk.contacts WHERE last_name = 'Old'") == 1


async def test_first_sync_resumes_after_a_kill(pipeline: Pipeline) -> None:
    """A first sync stopped midway resumes where it stopped: each record once."""
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'sync'")
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.execute("INSERT INTO crm.contacts (last_name, email)"
                           " SELECT 'n' || g, 'r' || g || '@x.com' FROM generate_series(1, 50) g")
    stop = asyncio.Event()
    chunks = 0

    def after_chunk(_progress: initial_sync.Progress) -> None:
        nonlocal chunks
        chunks += 1
        if chunks == 3:
            stop.set()  # the process dies after its third chunk

    await initial_sync.run(pipeline.pool, chunk=7, wait=False, on_progress=after_chunk,
                           stop=stop)
    async with pipeline.pool.acquire() as conn:
        partial = await initial_sync.progress(conn)
    assert partial is not None and 0 < partial.captured < 50
    result = await initial_sync.run(pipeline.pool, chunk=7)
    assert (result.total, result.captured, result.applied) == (50, 50, 50)
    assert await pipeline.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE origin = 'import'") == 50
    assert await pipeline.fetchval("SELECT count(*) FROM desk.contacts") == 50


async def test_kafka_commit_never_happening_changes_nothing(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        monkeypatch: object) -> None:
    """OWN-02: a projector killed after its database commit but before any Kafka commit
    restarts from the stored offsets: nothing lost, nothing applied twice."""
    from aiokafka import AIOKafkaConsumer

    calls: list[object] = []

    async def no_commit(self: AIOKafkaConsumer, offsets: object = None) -> None:
        calls.append(offsets)  # the process "dies" before Kafka hears of it

    monkeypatch.setattr(AIOKafkaConsumer, "commit", no_commit)  # type: ignore[attr-defined]
    first = Pipeline(database_url, kafka_bootstrap, topic_prefix)
    await first.start()
    try:
        await first.execute("INSERT INTO desk.contacts (last_name)"
                            " SELECT 'k' || g FROM generate_series(1, 200) g")
        await first.settle()
    finally:
        await first.close()
    assert calls, "the projector tried to commit to Kafka"
    second = Pipeline(database_url, kafka_bootstrap, topic_prefix)
    await second.start()
    try:
        # It resumed from the offsets stored with the data, not from Kafka's (none): 200
        # desk creates, and the sync's 200 CRM creates (captured with origin 'sync').
        assert sum(second.projector.positions.values()) == 400
        await second.execute("INSERT INTO desk.contacts (last_name) VALUES ('after')")
        await second.settle()
        await asyncio.sleep(1)  # give a wrongly re-read backlog time to show itself
        conn: asyncpg.Pool = second.pool  # type: ignore[assignment]
        assert await conn.fetchval("SELECT count(*) FROM crm.contacts") == 201
        assert await conn.fetchval(
            "SELECT count(*) FROM syncd.event_log WHERE origin = 'user'") == 201
        assert await conn.fetchval(
            "SELECT count(*) FROM syncd.event_log WHERE origin = 'sync'") == 201
        assert await conn.fetchval("SELECT sum(added) FROM sync.history") == 201
    finally:
        await second.close()
