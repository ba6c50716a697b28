from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from adapters.kafka import ensure_topics, make_producer
from daemon.consumer import ConsumerLoop
from projections.batch import (
    NOTHING_TO_REPORT,
    LoggedEvent,
    Message,
    ProjectionReport,
    apply_batch,
    reset_offset,
)
from projections.db import Conn
from projections.events import encode_event
from tests.support.brokers import BROKERS, on_both_brokers
from tests.support.events import change


@pytest.fixture(params=BROKERS)
def kafka_bootstrap(kafka_bootstrap: str, request: pytest.FixtureRequest) -> str:
    """Each Kafka-facing case here on the embedded broker and on the real cluster."""
    return on_both_brokers(request.param, kafka_bootstrap, request)


class Recording:
    """A projection that remembers what it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[LoggedEvent] = []

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        self.seen.extend(events)
        return NOTHING_TO_REPORT


async def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_events_logged_once_despite_redelivery(pool: asyncpg.Pool, kafka_bootstrap: str,
                                                     topic_prefix: str) -> None:
    """Each event id reaches the event log and the projections exactly once."""
    topic = f"{topic_prefix}.events"
    await ensure_topics(kafka_bootstrap, [topic], partitions=3)
    events = [change(record_id=str(i), values={"n": i}) for i in range(50)]
    producer = make_producer(kafka_bootstrap)
    await producer.start()
    try:
        for event in events + events[:10]:  # ten are sent twice
            await producer.send_and_wait(topic, encode_event(event), key=event.key)
        await producer.send_and_wait(topic, b"{not json", key=b"x")
    finally:
        await producer.stop()

    recording = Recording()
    projector = ConsumerLoop(pool=pool, bootstrap=kafka_bootstrap, topic=topic,
                          group_id=f"{topic_prefix}-g", projections=[recording])
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))

    async def all_consumed() -> bool:
        total = await pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM syncd.consumer_offsets WHERE topic = $1",
            topic)
        return int(total) == 61

    try:
        await wait_for(all_consumed)
    finally:
        stop.set()
        await task
    assert await pool.fetchval("SELECT count(*) FROM syncd.event_log") == 50
    assert len(recording.seen) == 50
    assert len({e.event.event_id for e in recording.seen}) == 50
    rejected = await pool.fetch("SELECT reason, raw FROM sync.failures")
    assert [(r["reason"], r["raw"]) for r in rejected] == [
        ("incorrect parameter or value", b"{not json")]


async def test_restart_resumes_from_stored_offsets(pool: asyncpg.Pool, kafka_bootstrap: str,
                                                   topic_prefix: str) -> None:
    """A second projector in the same group starts where the first one stored, not at 0."""
    topic = f"{topic_prefix}.events"
    group = f"{topic_prefix}-g"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    producer = make_producer(kafka_bootstrap)
    await producer.start()

    async def send(n: int, start: int) -> None:
        for i in range(start, start + n):
            event = change(record_id=str(i))
            await producer.send_and_wait(topic, encode_event(event), key=event.key)

    async def run_until(count: int) -> Recording:
        recording = Recording()
        projector = ConsumerLoop(pool=pool, bootstrap=kafka_bootstrap, topic=topic,
                              group_id=group, projections=[recording])
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))

        async def logged() -> bool:
            return int(await pool.fetchval("SELECT count(*) FROM syncd.event_log")) >= count

        try:
            await wait_for(logged)
        finally:
            stop.set()
            await task
        return recording

    try:
        await send(20, 0)
        first = await run_until(20)
        await send(5, 20)
        second = await run_until(25)
    finally:
        await producer.stop()
    assert len(first.seen) == 20
    assert len(second.seen) == 5  # nothing of the first 20 was handed over again


async def test_fenced_batch_rolls_back(pool: asyncpg.Pool) -> None:
    """A batch whose start offset no longer matches the stored one changes nothing."""
    group, tp = "g", ("topic", 0)
    async with pool.acquire() as conn:
        await reset_offset(conn, group, tp, 10)  # another consumer has moved on to 10
        event = change()
        message = Message("topic", 0, 5, encode_event(event))
        recording = Recording()
        outcome = await apply_batch(conn, group_id=group, messages=[message],
                                    starts={tp: 5}, projections=[recording])
        assert outcome.fenced == tp
        assert await conn.fetchval("SELECT count(*) FROM syncd.event_log") == 0
        assert await conn.fetchval(
            "SELECT next_offset FROM syncd.consumer_offsets WHERE group_id = 'g'") == 10
        # The batch that starts where the stored offset is goes through.
        message = Message("topic", 0, 10, encode_event(event))
        outcome = await apply_batch(conn, group_id=group, messages=[message],
                                    starts={tp: 10}, projections=[recording])
        assert outcome.fenced is None and len(outcome.applied) == 1
