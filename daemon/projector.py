"""The projector's consume loop: Kafka in, one PostgreSQL transaction per batch.

Ordering assumptions: a partition is only read after its stored offset was
looked up and sought to (``_Rebalance.on_partitions_assigned``), and
``positions`` always holds the offset the next batch of each partition starts
at, which is what the compare-and-set in ``apply_batch`` checks against.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from adapters import metrics
from adapters.kafka import make_consumer
from projections.events import InvalidEvent, decode_event
from projections.projector import (
    BatchOutcome,
    Message,
    Projection,
    apply_batch,
    reset_offset,
    stored_offsets,
)

log = structlog.get_logger(__name__)


class Projector:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        bootstrap: str,
        topic: str,
        group_id: str,
        projections: Sequence[Projection],
        batch_max: int = 5000,
        session_timeout_ms: int = 6_000,
        stall_after: float = 30.0,
    ) -> None:
        self.pool = pool
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.projections = list(projections)
        self.batch_max = batch_max
        self.session_timeout_ms = session_timeout_ms
        self.stall_after = stall_after
        self.positions: dict[tuple[str, int], int] = {}
        self.joined = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.last_applied_at: float | None = None
        self._last_kafka_commit = 0.0

    async def _seek_to_stored(self, consumer: AIOKafkaConsumer,
                              assigned: Sequence[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in assigned]
        if not tps:
            return
        beginnings = await consumer.beginning_offsets(list(assigned))
        async with self.pool.acquire() as conn:
            stored = await stored_offsets(conn, self.group_id, tps)
            for tp in assigned:
                key = (tp.topic, tp.partition)
                offset = stored.get(key)
                if offset is None or offset < beginnings[tp]:
                    offset = beginnings[tp]
                    await reset_offset(conn, self.group_id, key, offset)
                consumer.seek(tp, offset)
                self.positions[key] = offset
        log.info("partitions_assigned", topic=self.topic,
                 partitions={p: self.positions[(t, p)] for t, p in tps})

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a consumer that stops making progress, or that lost
        the database mid-batch, is replaced and starts again from the stored offsets."""
        while not stop.is_set():
            try:
                replace = await self._consume(stop)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError) as err:
                log.warning("database_unavailable", task="projector",
                            error=f"{type(err).__name__}: {err}")
                replace = True
            if replace:
                metrics.CONSUMER_RESTARTS.inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _consume(self, stop: asyncio.Event) -> bool:
        """Run one consumer; return True when it stalled and must be replaced."""
        consumer = make_consumer(self.bootstrap, group_id=self.group_id,
                                 session_timeout_ms=self.session_timeout_ms)
        self.consumer = consumer
        projector = self
        watchdog = _Watchdog(stall_after=self.stall_after)

        class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
                for tp in revoked:
                    projector.positions.pop((tp.topic, tp.partition), None)

            async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
                await projector._seek_to_stored(consumer, assigned)
                projector.joined.set()
                watchdog.progress()

        consumer.subscribe([self.topic], listener=_Rebalance())
        try:
            await consumer.start()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.batch_max)
                if batch and await self._apply(consumer, batch):
                    watchdog.progress()
                await self._detect_broker_reset(consumer)
                self._export_lag(consumer)
                if await self._advisory_commit(consumer):
                    watchdog.progress()
                if watchdog.stalled():
                    log.warning("consumer_stalled_restarting", topic=self.topic,
                                seconds=round(watchdog.idle(), 1),
                                assigned=len(consumer.assignment()))
                    return True
            return False
        finally:
            self.joined.clear()
            self.positions.clear()
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
            self.consumer = None

    async def _advisory_commit(self, consumer: AIOKafkaConsumer) -> bool:
        """Tell Kafka our positions now and then (lag tooling only; PostgreSQL holds
        the truth). A commit that goes through also proves the group membership is
        alive; one that keeps failing is how a consumer lost by its group shows."""
        now = time.monotonic()
        if now - self._last_kafka_commit < 2.0 or not self.positions:
            return False
        self._last_kafka_commit = now
        try:
            # aiokafka retries some commit errors forever: bound it, or a consumer
            # whose group forgot it would hang here instead of being replaced.
            await asyncio.wait_for(consumer.commit(
                {TopicPartition(t, p): o for (t, p), o in self.positions.items()}), 5)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def _apply(self, consumer: AIOKafkaConsumer,
                     batch: dict[TopicPartition, list[object]]) -> bool:
        """Apply one batch; return True when it committed."""
        messages: list[Message] = []
        starts: dict[tuple[str, int], int] = {}
        for tp, records in batch.items():
            key = (tp.topic, tp.partition)
            if key not in self.positions:  # revoked while the fetch was in flight
                continue
            starts[key] = self.positions[key]
            for rec in records:
                messages.append(Message(tp.topic, tp.partition, rec.offset, rec.value))  # type: ignore[attr-defined]
        if not messages:
            return False
        metrics.EVENTS_CONSUMED.labels(self.topic).inc(len(messages))
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn:
                outcome = await apply_batch(conn, group_id=self.group_id, messages=messages,
                                            starts=starts, projections=self.projections)
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as err:
            # Another replica holds the same links or match keys: the whole batch
            # rolled back; read it again from the stored offsets.
            log.warning("batch_retried", reason=type(err).__name__)
            outcome = BatchOutcome(fenced=next(iter(starts)))
        if outcome.fenced is not None:
            metrics.FENCED_BATCHES.inc()
            log.warning("batch_fenced", topic=outcome.fenced[0], partition=outcome.fenced[1])
            assigned = [TopicPartition(t, p) for t, p in starts]
            assigned = [tp for tp in assigned if tp in consumer.assignment()]
            await self._seek_to_stored(consumer, assigned)
            return False
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(messages))
        for message in messages:
            key = (message.topic, message.partition)
            if key in self.positions:  # a rebalance during the batch may have taken it
                self.positions[key] = max(self.positions[key], message.offset + 1)
        now = time.time()
        for item in outcome.applied:
            event = item.event
            metrics.EVENTS_APPLIED.labels(event.source, event.module, event.op).inc()
            metrics.SYNC_LATENCY.observe(max(0.0, now - event.modified_at.timestamp()))
        if outcome.duplicates:
            metrics.EVENTS_DUPLICATE.inc(outcome.duplicates)
        self._log_problems(messages)
        for message, problem in outcome.rejected:
            metrics.EVENTS_REJECTED.inc()
            log.warning("event_rejected", topic=message.topic, partition=message.partition,
                        offset=message.offset, reason=problem.reason,
                        detail=problem.detail[:300])
        self.last_applied_at = now
        return True

    def _log_problems(self, messages: Sequence[Message]) -> None:
        """One line per event a projection could not apply, with its Kafka coordinates."""
        problems = [o for p in self.projections
                    for o in getattr(getattr(p, "last", None), "problems", ())]
        if not problems:
            return
        wanted = {o.event_id for o in problems}
        by_id: dict[object, Message] = {}
        for message in messages:  # failures are rare: decoding the batch again is cheap
            with contextlib.suppress(InvalidEvent):
                event_id = decode_event(message.value).event_id
                if event_id in wanted:
                    by_id[event_id] = message
        for o in problems:
            located = by_id.get(o.event_id)
            metrics.EVENTS_FAILED.labels(o.source, o.module, o.reason or "").inc()
            log.warning("event_failed", event_id=str(o.event_id), source=o.source,
                        module=o.module, topic=located.topic if located else self.topic,
                        partition=located.partition if located else None,
                        offset=located.offset if located else None,
                        reason=o.reason, detail=o.detail[:300])

    async def _detect_broker_reset(self, consumer: AIOKafkaConsumer) -> None:
        """A partition whose high watermark is below our stored position lost its log
        (the embedded broker restarts empty). Read it again from its beginning:
        everything not yet in the event log is still in the outboxes and is sent
        again; the event log drops the copies it already holds.

        The high watermark of fetch responses is used rather than ListOffsets, which
        the embedded broker answers wrongly for batched produce requests.
        """
        lost = []
        for (topic, partition), position in self.positions.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None and high < position:
                lost.append(TopicPartition(topic, partition))
        if not lost:
            return
        beginnings = await consumer.beginning_offsets(lost)
        async with self.pool.acquire() as conn:
            for tp in lost:
                key = (tp.topic, tp.partition)
                high = consumer.highwater(tp)
                if key not in self.positions or high is None or high >= self.positions[key]:
                    continue  # a rebalance ran meanwhile: the new owner seeks for itself
                log.warning("broker_offsets_reset", topic=tp.topic, partition=tp.partition,
                            stored_offset=self.positions[key],
                            high_watermark=consumer.highwater(tp))
                await reset_offset(conn, self.group_id, key, beginnings[tp])
                consumer.seek(tp, beginnings[tp])
                self.positions[key] = beginnings[tp]

    def _export_lag(self, consumer: AIOKafkaConsumer) -> None:
        for (topic, partition), position in self.positions.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - position))

    def lag(self) -> dict[int, int]:
        consumer = self.consumer
        if consumer is None:
            return {}
        out: dict[int, int] = {}
        for (topic, partition), position in self.positions.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            out[partition] = max(0, (high or position) - position)
        return out


class _Watchdog:
    """Notices a consumer that stopped making progress: no assignment, no batch and
    no successful advisory commit for ``stall_after`` seconds."""

    def __init__(self, *, stall_after: float) -> None:
        self.stall_after = stall_after
        self._last = time.monotonic()

    def progress(self) -> None:
        self._last = time.monotonic()

    def idle(self) -> float:
        return time.monotonic() - self._last

    def stalled(self) -> bool:
        return self.idle() > self.stall_after
