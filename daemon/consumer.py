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
from collections.abc import Callable, Mapping, Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from adapters import metrics
from adapters.kafka import NO_SECURITY, KafkaSecurity, make_consumer, refusal
from adapters.write_errors import WriteError
from projections.batch import (
    BatchOutcome,
    Message,
    Projection,
    apply_batch,
    reset_offset,
    stored_offsets,
)
from projections.db import CONNECTION_LOST
from projections.events import InvalidEvent, decode_event
from projections.ledger import Outcome

log = structlog.get_logger(__name__)

BatchHook = Callable[[BatchOutcome | None, float], None]
"""``ConsumerLoop(on_batch=…)``: called after each batch attempt with its outcome (None
when it rolled back) and ``time.perf_counter()`` when its transaction ended."""


class ConsumerLoop:
    """Consumes the topic and applies each fetched batch in one transaction.

    ``on_batch`` is a hook for tools and tests (the benchmark times batches with it):
    called after each batch attempt, on the event loop, with the committed
    ``BatchOutcome`` (``applied`` holds the events new to the event log, in log order)
    or ``None`` when the batch rolled back (a conflict or fencing; it is read again),
    and the ``time.perf_counter()`` at which its transaction ended. It must return
    quickly and not raise: an exception ends the consumer loop.
    """

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
        on_batch: BatchHook | None = None,
        security: KafkaSecurity = NO_SECURITY,
    ) -> None:
        self.pool = pool
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.projections = list(projections)
        self.batch_max = batch_max
        self.session_timeout_ms = session_timeout_ms
        self.stall_after = stall_after
        self.on_batch = on_batch
        self.security = security
        self.positions: dict[tuple[str, int], int] = {}
        self.joined = asyncio.Event()
        self.store_wait: str | None = None
        """Why the last batch could not be decided: a remote store it must read (until
        a batch commits)."""
        self._store_waits = 0
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
                if offset is not None and offset < beginnings[tp]:
                    # Retention deleted messages this group had not applied (the log
                    # start offset passed ours): not a broker reset, and nothing is
                    # lost, as their outbox rows stay until the event log holds them
                    # and the relays send them again (``relay_resend_after``).
                    log.warning("offsets_below_log_start", topic=tp.topic,
                                partition=tp.partition, stored_offset=offset,
                                log_start_offset=beginnings[tp])
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
            except CONNECTION_LOST as err:
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
                                 session_timeout_ms=self.session_timeout_ms,
                                 security=self.security)
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
            try:
                # Bounded too: subscribed first, aiokafka's start waits until the group
                # assigns partitions, and a rebalance that never ends (a member gone
                # mid-join) once held the projector there for good.
                await asyncio.wait_for(consumer.start(), self.stall_after)
            except TimeoutError:
                log.warning("consumer_stalled_restarting", topic=self.topic,
                            seconds=self.stall_after, reason="no partitions assigned")
                return True
            while not stop.is_set():
                try:
                    # Bounded: the watchdog below runs between fetches, and a fetch stuck
                    # in a group rejoin that never ends would keep it from ever firing.
                    batch = await asyncio.wait_for(
                        consumer.getmany(timeout_ms=200, max_records=self.batch_max),
                        self.stall_after)
                except TimeoutError:
                    log.warning("consumer_stalled_restarting", topic=self.topic,
                                seconds=self.stall_after, reason="fetch did not return")
                    return True
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
        except KafkaError as err:
            # Wrong credentials or a missing ACL are permanent: said once, clearly, and
            # the daemon ends (a consumer replaced every second would hide them).
            refused = await refusal(err, bootstrap=self.bootstrap, security=self.security,
                                    doing=self._refused_doing(err))
            if refused is None:
                # Anything else is the cluster being away or in flux (no broker to
                # bootstrap from while all restart, a coordinator moving): the consumer
                # is replaced and starts again from the stored offsets.
                log.warning("broker_unavailable", task="projector",
                            error=f"{type(err).__name__}: {err}")
                return True
            log.error("kafka_refused", task="projector", error=str(refused))
            raise refused from None
        finally:
            self.joined.clear()
            self.positions.clear()
            await _stop_quietly(consumer, self.topic)
            self.consumer = None

    def _refused_doing(self, err: KafkaError) -> str:
        from aiokafka.errors import GroupAuthorizationFailedError

        if isinstance(err, GroupAuthorizationFailedError):
            return f"use consumer group {self.group_id!r} (Read on the group)"
        return f"read topic {self.topic!r} (Describe and Read on the topic)"

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
        except WriteError as err:
            # A remote store could not be read while the batch decided (away, rate
            # limited, its credentials refused): the batch rolled back; it is read
            # again from the stored offsets after a pause, and nothing is failed.
            self._batch_ended(None)
            self.store_wait = err.detail
            self._store_waits += 1
            metrics.STORE_WAITS.inc()
            delay = min(10.0, 0.5 * 2 ** min(self._store_waits - 1, 5))
            log.warning("batch_waits_for_store", error=f"{type(err).__name__}: {err.detail}",
                        retry_in=delay, partitions=sorted(p for _, p in starts))
            await asyncio.sleep(delay)
            await self._rewind(consumer, starts)
            return False
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as err:
            self._batch_ended(None)
            # Another replica (or the resume drain) holds the same links or match keys:
            # the whole batch rolled back. Not fencing: the offsets are still ours.
            # Read the batch again from the stored offsets.
            metrics.CONFLICTED_BATCHES.labels(err.sqlstate).inc()
            log.warning("batch_conflicted", sqlstate=err.sqlstate, reason=type(err).__name__,
                        partitions=sorted(p for _, p in starts), events=len(messages))
            await self._rewind(consumer, starts)
            return False
        ended = time.perf_counter()
        self.store_wait, self._store_waits = None, 0
        if outcome.fenced is not None:
            self._batch_ended(None, ended)
            metrics.FENCED_BATCHES.inc()
            log.warning("batch_fenced", topic=outcome.fenced[0], partition=outcome.fenced[1])
            await self._rewind(consumer, starts)
            return False
        metrics.BATCH_SECONDS.observe(ended - started)
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
        if outcome.problems:
            report_problems(outcome.problems, locate_in_batch(messages, outcome.problems),
                            topic=self.topic)
        for message, problem in outcome.rejected:
            metrics.EVENTS_REJECTED.inc()
            log.warning("event_rejected", topic=message.topic, partition=message.partition,
                        offset=message.offset, reason=problem.reason,
                        detail=problem.detail[:300])
        self.last_applied_at = now
        self._batch_ended(outcome, ended)
        return True

    def _batch_ended(self, outcome: BatchOutcome | None, at: float | None = None) -> None:
        if self.on_batch is not None:
            self.on_batch(outcome, time.perf_counter() if at is None else at)

    async def _rewind(self, consumer: AIOKafkaConsumer,
                      starts: dict[tuple[str, int], int]) -> None:
        """A batch rolled back: read its partitions again from the stored offsets."""
        assigned = [TopicPartition(t, p) for t, p in starts]
        assigned = [tp for tp in assigned if tp in consumer.assignment()]
        await self._seek_to_stored(consumer, assigned)

    async def drained(self, *, timeout: float = 30.0) -> None:
        """Return once this projector has applied everything its topic held at the call.

        The end offsets are the high watermarks of fetch responses received after the
        call (not ListOffsets, which the embedded broker answers wrongly for batched
        produce requests); every partition of the topic must be assigned to this
        projector, and its position must reach that end. Positions move only when a
        batch commits, so a batch that rolled back (conflicted, fenced) is waited for
        again. For tests and tools that need "everything sent so far is applied"; the
        outboxes are the caller's to check (``tests.support.pipeline``). Raises
        ``TimeoutError`` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A response the broker built just before the call may be processed just after
        # it: only one received a little later is sure to see what was produced before.
        after_ms = (time.time() + _DRAIN_MARGIN) * 1000
        ends: dict[TopicPartition, int] = {}
        while True:
            consumer = self.consumer
            if consumer is not None and self.joined.is_set():
                partitions = consumer.partitions_for_topic(self.topic) or set()
                assignment = consumer.assignment()
                for partition in partitions:
                    tp = TopicPartition(self.topic, partition)
                    if tp in ends or tp not in assignment:
                        continue
                    polled = consumer.last_poll_timestamp(tp)
                    high = consumer.highwater(tp)
                    if polled is not None and high is not None and polled >= after_ms:
                        ends[tp] = high
                if partitions and len(ends) == len(partitions) and all(
                        self.positions.get((tp.topic, tp.partition), -1) >= end
                        for tp, end in ends.items()):
                    return
            if loop.time() > deadline:
                behind = {tp.partition: (self.positions.get((tp.topic, tp.partition)), end)
                          for tp, end in ends.items()}
                raise TimeoutError(f"{self.topic} not drained in {timeout} s:"
                                   f" (position, end) by partition {behind}")
            await asyncio.sleep(0.02)

    async def _detect_broker_reset(self, consumer: AIOKafkaConsumer) -> None:
        """A partition whose high watermark is below our stored position lost its log
        (the embedded broker restarts empty). Read it again from its beginning:
        everything not yet in the event log is still in the outboxes and is sent
        again; the event log drops the copies it already holds.

        The high watermark of fetch responses finds the suspects (ListOffsets, asked
        every round, would cost a round trip each; the embedded broker also answers it
        wrongly for batched produce requests). A suspect is confirmed by ListOffsets
        before anything is read again: a real Kafka partition's new leader sends a
        high watermark that lags the old one until its followers fetch again, which
        is not a lost log, while ListOffsets waits for the true end (KIP-207).
        """
        lost = []
        for (topic, partition), position in self.positions.items():
            high = consumer.highwater(TopicPartition(topic, partition))
            if high is not None and high < position:
                lost.append(TopicPartition(topic, partition))
        if not lost:
            return
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(lost), 5)
        except (KafkaError, TimeoutError):
            return  # not confirmed now (a leader still being elected): asked again
        lost = [tp for tp in lost
                if ends.get(tp, 0) < self.positions.get((tp.topic, tp.partition), -1)]
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


async def _stop_quietly(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Stop a consumer being replaced or shut down, whatever state its group is in.

    aiokafka's ``stop()`` can raise ``CancelledError`` of its own (it awaits a task of
    its coordinator that it cancelled; aio-libs/aiokafka#647): after a cluster outage
    that once ended the projector's task without a word. Only a cancellation of this
    task itself goes on; a hung stop is abandoned after 10 s.
    """
    try:
        await asyncio.wait_for(consumer.stop(), 10)
        return
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("consumer_stop_failed", topic=topic, error="CancelledError inside stop()")
    except (KafkaError, OSError, TimeoutError) as err:
        log.warning("consumer_stop_failed", topic=topic, error=f"{type(err).__name__}: {err}")
    # stop() ended at its coordinator, before its fetcher and its client: close those
    # too, or each replaced consumer leaves connections and a metadata task behind.
    for part in (getattr(consumer, "_fetcher", None), getattr(consumer, "_client", None)):
        if part is None:
            continue
        try:
            await asyncio.wait_for(part.close(), 5)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except (KafkaError, OSError, TimeoutError):
            pass


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


_DRAIN_MARGIN = 0.1  # seconds; see ConsumerLoop.drained

Coordinates = tuple[str, int, int]
"""Where an event was read: topic, partition, offset."""


def locate_in_batch(messages: Sequence[Message], problems: Sequence[Outcome]
                    ) -> dict[object, Coordinates]:
    """The Kafka coordinates of the events that failed, found in their batch."""
    wanted = {o.event_id for o in problems}
    found: dict[object, Coordinates] = {}
    for message in messages:  # failures are rare: decoding the batch again is cheap
        with contextlib.suppress(InvalidEvent):
            event_id = decode_event(message.value).event_id
            if event_id in wanted:
                found[event_id] = (message.topic, message.partition, message.offset)
    return found


def report_problems(problems: Sequence[Outcome], located: Mapping[object, Coordinates], *,
                    topic: str) -> None:
    """One ``event_failed`` line and one ``syncd_events_failed_total`` increment per
    event a projection could not apply, with its Kafka coordinates where known. The
    one place for it: the consumer loop and the resume drain both call it once their
    transaction has committed."""
    for o in problems:
        where = located.get(o.event_id)
        metrics.EVENTS_FAILED.labels(o.source, o.module, o.reason or "").inc()
        log.warning("event_failed", event_id=str(o.event_id), source=o.source,
                    module=o.module, topic=where[0] if where else topic,
                    partition=where[1] if where else None,
                    offset=where[2] if where else None,
                    reason=o.reason, detail=o.detail[:300])
