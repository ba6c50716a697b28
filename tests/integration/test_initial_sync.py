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
    await pipe.preexisting(
        "INSERT INTO crm.contacts (last_name, email, created_time, modified_time) VALUES"
        " ('Both', 'both@x.com', $1, $1), ('CrmOnly', 'crm@x.com', $1, $1),"
        " ('Old', 'old@x.com', $2, $2)",
        NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=400))
    await pipe.preexisting(
        "INSERT INTO desk.contacts (last_name, email, created_time, modified_time) VALUES"
        " ('Both', ' BOTH@x.com', $1, $1), ('DeskOnly', 'desk@x.com', $1, $1)",
        NOW - dt.timedelta(days=10))


async def crm_contacts(pipe: Pipeline, count: int) -> None:
    """``count`` CRM contacts that were there before sync was enabled."""
    await pipe.preexisting("INSERT INTO crm.contacts (last_name, email) SELECT 'n' || g,"
                           " 'r' || g || '@x.com' FROM generate_series(1, $1) g", count)


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
    await crm_contacts(pipeline, 50)
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


async def test_progress_is_read_without_counting_the_outboxes(pipeline: Pipeline) -> None:
    """The progress is what the batches released of the capture, read from their
    counts: it reads no outbox row (it counted both outboxes, after every chunk and twice
    a second while waiting; on a large first sync, much of PostgreSQL's time)."""
    assert pipeline.pool is not None
    await crm_contacts(pipeline, 30)
    result = await initial_sync.run(pipeline.pool, chunk=10)
    # The backend's own table counters, not flushed within a transaction.
    scans = ("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)"
             " FROM pg_stat_xact_user_tables WHERE relname = 'outbox'")
    async with pipeline.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(scans)
        current = await initial_sync.progress(conn)
        after = await conn.fetchval(scans)
    assert (result.total, result.captured, result.applied) == (30, 30, 30)
    assert current == result
    assert after == before


async def test_released_imports_are_counted_once_by_partition(pipeline: Pipeline) -> None:
    """Releasing the first sync's rows counts each once, under its Kafka partition: a
    copy of an event (twice in a batch, or again after its row went) and a row that is
    not an import add nothing."""
    from projections.stores.outbox import Outbox

    ids = [row["event_id"] for row in await pipeline.fetch(
        "INSERT INTO crm.outbox (module, record_id, op, \"values\", modified_at, created_at,"
        " origin) VALUES ('contacts', '1', 'create', '{}', now(), now(), 'import'),"
        " ('contacts', '2', 'create', '{}', now(), now(), 'import'),"
        " ('contacts', '3', 'update', '{}', now(), now(), 'user') RETURNING event_id")]
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn:
        await Outbox(conn, "crm").release([(ids[0], 0), (ids[0], 0), (ids[2], 1)])
        await Outbox(conn, "crm").release([(ids[0], 0), (ids[1], 3)])
        await Outbox(conn, "desk").release([(ids[1], 3)])  # not a desk row
    counts = {(r["source"], r["kafka_partition"]): r["released"] for r in await pipeline.fetch(
        "SELECT * FROM syncd.imports_released")}
    assert counts == {("crm", 0): 1, ("crm", 3): 1}
    assert await pipeline.fetchval("SELECT count(*) FROM crm.outbox") == 0
