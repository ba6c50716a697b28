"""Defects from the review (issue 14 part 8) on the real services: the resume drain
logs and counts its failures as the live path does, each from its own report;
conflicts are not fencing; retry --all works in bounded chunks; the board's streams
are capped; the Kafka replay source remembers only the window's event ids."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from adapters import metrics
from adapters.replay_kafka import KafkaEventSource
from daemon.http import BOARD_PREFIX
from daemon.http.auth import open_access
from daemon.http.board import BoardContext
from daemon.http.server import build_app
from daemon.service.failures import retry_failures
from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.replay import Window
from tests.support.pipeline import Pipeline

MANDATORY = "mandatory field missing"


def _failed_count(reason: str) -> float:
    return float(REGISTRY.get_sample_value(
        "syncd_events_failed_total", {"source": "desk", "module": "contacts",
                                      "reason": reason}) or 0.0)


async def test_the_resume_drain_logs_and_counts_each_failure(pipeline: Pipeline) -> None:
    """D2: an event that fails when the resume drain applies it gets its event_failed
    line (with its Kafka coordinates) and its syncd_events_failed_total increment."""
    pipeline.configure(paused=True)
    await pipeline.execute("INSERT INTO desk.contacts (first_name) VALUES ('no last name')")
    await pipeline.wait_for_count("SELECT count(*) FROM sync.deferred", 1)
    before = _failed_count(MANDATORY)
    with capture_logs() as logs:
        pipeline.configure(paused=False)
        await pipeline.drain()
    failed = [e for e in logs if e["event"] == "event_failed"]
    assert [e["reason"] for e in failed] == [MANDATORY]
    assert failed[0]["topic"] == pipeline.topic and failed[0]["offset"] is not None
    assert _failed_count(MANDATORY) == before + 1
    assert await pipeline.fetchval("SELECT count(*) FROM sync.failures") == 1


async def test_the_live_path_reports_only_its_own_batch(pipeline: Pipeline) -> None:
    """D2: the problems the consumer loop logs come from its own batch's report, not
    from state another caller of the projection (the drain) may have overwritten."""
    with capture_logs() as logs:
        await pipeline.execute("INSERT INTO desk.contacts (first_name) VALUES ('x')")
        await pipeline.drain()
        assert pipeline.pool is not None
        async with pipeline.pool.acquire() as conn, conn.transaction():
            drained = await pipeline.sync.drain_deferred(conn)  # nothing queued
    assert drained.events == 0 and drained.report == NOTHING_TO_REPORT
    assert [e["reason"] for e in logs if e["event"] == "event_failed"] == [MANDATORY]
    assert not hasattr(pipeline.sync, "last")


class _ConflictOnce:
    """A projection whose first batch meets a deadlock, as with another replica."""

    name = "conflict-once"

    def __init__(self) -> None:
        self.raised = False

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        if events and not self.raised:
            self.raised = True
            raise asyncpg.DeadlockDetectedError("deadlock detected (test)")
        return NOTHING_TO_REPORT


async def test_a_deadlock_is_a_conflict_not_fencing(database_url: str, kafka_bootstrap: str,
                                                    topic_prefix: str) -> None:
    """D3: a batch rolled back by a deadlock counts as conflicted (with its SQLSTATE),
    not as fenced, and is applied on the next read."""
    conflict = _ConflictOnce()
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, extra_projections=[conflict])
    await pipe.start()
    try:
        fenced = metrics.FENCED_BATCHES._value.get()
        conflicted = metrics.CONFLICTED_BATCHES.labels("40P01")._value.get()
        with capture_logs() as logs:
            await pipe.execute("INSERT INTO desk.contacts (last_name) VALUES ('Doe')")
            await pipe.drain()
        assert conflict.raised
        assert await pipe.fetchval("SELECT count(*) FROM crm.contacts") == 1
        lines = [e for e in logs if e["event"] in ("batch_conflicted", "batch_fenced")]
        assert [(e["event"], e["sqlstate"]) for e in lines] == [("batch_conflicted", "40P01")]
        assert metrics.FENCED_BATCHES._value.get() == fenced
        assert metrics.CONFLICTED_BATCHES.labels("40P01")._value.get() == conflicted + 1
    finally:
        await pipe.close()


class _CountingPool:
    """The pool, recording how many failure rows each retry query returned."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.chunks: list[int] = []

    def acquire(self) -> Any:
        outer = self

        class _Acquire:
            async def __aenter__(self) -> Any:
                self.cm = outer.pool.acquire()
                conn = await self.cm.__aenter__()
                return _Conn(conn, outer.chunks)

            async def __aexit__(self, *exc: object) -> None:
                await self.cm.__aexit__(*exc)

        return _Acquire()


class _Conn:
    def __init__(self, conn: Any, chunks: list[int]) -> None:
        self._conn, self._chunks = conn, chunks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any) -> Any:
        rows = await self._conn.fetch(query, *args)
        if "FROM sync.failures" in query:
            self._chunks.append(len(rows))
        return rows


async def test_retry_all_works_in_bounded_chunks(pipeline: Pipeline) -> None:
    """D8: retry --all selects and locks at most ``chunk`` failures per transaction,
    and still retries every one."""
    await pipeline.execute("INSERT INTO desk.contacts (first_name) SELECT 'n' || g"
                           " FROM generate_series(1, 5) g")
    await pipeline.drain()
    assert await pipeline.fetchval("SELECT count(*) FROM sync.failures WHERE status = 'open'"
                                   ) == 5
    assert pipeline.pool is not None
    counting = _CountingPool(pipeline.pool)
    result = await retry_failures(counting, ids=None, reason=None,  # type: ignore[arg-type]
                                  everything=True, chunk=2)
    assert result == {"selected": 5, "retried": 5, "not_retryable": 0}
    assert counting.chunks == [2, 2, 1]


async def test_board_streams_are_capped(pool: asyncpg.Pool) -> None:
    """D8: past ``max_streams`` open streams, one more is a 503 in the error shape; a
    stream that ends frees its place."""
    app = build_app({}, board=BoardContext(pool, edition="professional",
                                           integration_active=lambda: True,
                                           authorize=open_access, keepalive=0.2,
                                           max_streams=1))
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            url = str(server.make_url(f"{BOARD_PREFIX}/1/stream"))
            first = await session.get(url)
            assert first.status == 200
            await first.content.readuntil(b"\n\n")  # retry: ...
            second = await session.get(url)
            assert second.status == 503
            body = await second.json()
            assert body["error"]["code"] == "too_many_streams"
            assert second.headers["Retry-After"]
            first.close()
            for _ in range(100):  # the server notices the client left at its next write
                again = await session.get(url)
                if again.status == 200:
                    again.close()
                    break
                again.release()
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the closed stream never freed its place")
    finally:
        await server.close()


async def test_kafka_replay_remembers_only_the_windows_event_ids(
        pipeline: Pipeline, kafka_bootstrap: str) -> None:
    """D8: the Kafka source drops re-sent copies by event id, but keeps only the ids of
    events its window admits, never every event id of the topic."""
    await pipeline.execute("INSERT INTO desk.contacts (last_name) SELECT 'd' || g"
                           " FROM generate_series(1, 30) g")
    await pipeline.drain()
    since = await pipeline.fetchval("SELECT clock_timestamp()")
    await pipeline.execute("INSERT INTO crm.contacts (last_name) VALUES ('late')")
    await pipeline.drain()
    source = KafkaEventSource(kafka_bootstrap, topic=pipeline.topic, group_id=pipeline.group)
    window = Window(since=since, until=since + dt.timedelta(hours=1), source="crm",
                    module="contacts")
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn:
        events = [item.event async for chunk in source.chunks(conn, window, size=100,
                                                              applied_only=True)
                  for item in chunk.events]
    assert [e.values.get("last_name") for e in events] == ["late"]
    assert source.remembered == 1
