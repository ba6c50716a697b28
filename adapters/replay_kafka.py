"""Replay from Kafka (``syncd replay --from-kafka``), for deployments whose event log
is pruned: the topic is read again from its earliest retained offset.

Read up to where the projector is, not to the end of the topic: the offsets the
projector stored in PostgreSQL (``syncd.consumer_offsets``, for its group) mark
exactly what it has applied. Messages past them are not applied yet; the live
projector will apply them, and a replay must not. The replay holds the
projector's ``APPLY_LOCK``, so those offsets do not move while it reads.

A plain consumer with no group, assigned every partition: nothing is committed
and the daemon's group is not disturbed. The end of a partition is known from
the high watermark that fetch responses carry, not from ListOffsets, which the
embedded broker answers wrongly for batched produce requests. A partition whose
high watermark stays below the stored offset lost messages (a broker restart, or
retention): the replay reads what there is and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka import NO_SECURITY, KafkaSecurity, refusal
from projections.batch import LoggedEvent
from projections.db import Conn
from projections.events import InvalidEvent, decode_event
from projections.replay import Chunk, ReplayError, Window


class KafkaEventSource:
    """Events of ``topic`` that the projector of ``group_id`` has applied, per partition
    in offset order (so each record's events keep their order)."""

    name = "Kafka topic"

    def __init__(self, bootstrap: str, *, topic: str, group_id: str,
                 idle_timeout: float = 15.0, security: KafkaSecurity = NO_SECURITY) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        self.group_id = group_id
        self.idle_timeout = idle_timeout
        self.undecodable = 0
        self.short: dict[int, tuple[int, int]] = {}
        """Partitions whose log ends before the stored offset: partition -> (end, stored)."""
        self.remembered = 0
        """The most event ids held at once to drop re-sent copies (see ``chunks``)."""

    async def _stored(self, conn: Conn) -> dict[int, int]:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM syncd.consumer_offsets"
            " WHERE group_id = $1 AND topic = $2", self.group_id, self.topic)
        return {row["partition"]: row["next_offset"] for row in rows}

    async def total(self, conn: Conn, window: Window) -> int | None:
        # An upper bound: retention may have dropped the start of a partition.
        return sum((await self._stored(conn)).values())

    async def chunks(self, conn: Conn, window: Window, *, size: int,
                     applied_only: bool) -> AsyncIterator[Chunk]:
        stored = await self._stored(conn)
        deferred: set[object] = set()
        if applied_only:  # logged but queued while paused: the sync has not applied them
            deferred = {row["event_id"] for row in await conn.fetch(
                "SELECT e.event_id FROM sync.deferred d JOIN syncd.event_log e USING (seq)")}
        consumer = AIOKafkaConsumer(
            **self.security.options(), bootstrap_servers=self.bootstrap, group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_uncommitted",
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20)
        try:
            await consumer.start()
            # The partitions the projector stored offsets for: a consumer with no
            # subscription knows no topic's partitions from its metadata on a real
            # Kafka cluster (``topics()`` fetches a copy it keeps to itself; the
            # embedded broker happened to answer for every topic), and the topic has
            # at least those (partitions are never removed). Assigning fetches the rest.
            ends = {TopicPartition(self.topic, p): offset for p, offset in sorted(stored.items())
                    if offset > 0}
            if not ends:
                return
            consumer.assign(list(ends))
            await consumer.seek_to_beginning(*ends)
            # Re-sent copies (the relay sends again what is not logged yet) are dropped
            # by event id. Only ids of events the window admits are kept: a copy of an
            # event outside the window is skipped anyway, so memory grows with what the
            # replay applies (the window), never with the topic's whole retained log.
            seen: set[object] = set()
            pending: list[LoggedEvent] = []
            scanned = 0
            done: set[TopicPartition] = set()
            loop = asyncio.get_running_loop()
            idle_since = loop.time()
            while len(done) < len(ends):
                open_tps = [tp for tp in ends if tp not in done]
                batch = await consumer.getmany(*open_tps, timeout_ms=300, max_records=size)
                for tp, records in sorted(batch.items()):
                    for record in records:
                        if record.offset >= ends[tp]:
                            done.add(tp)
                            break
                        scanned += 1
                        idle_since = loop.time()
                        try:
                            event = decode_event(record.value)
                        except InvalidEvent:
                            self.undecodable += 1  # rejected when applied; in the failure log
                            continue
                        if not window.admits(event) or event.event_id in deferred:
                            continue  # outside the window; or not applied yet
                        if event.event_id in seen:
                            continue  # a re-sent copy
                        seen.add(event.event_id)
                        self.remembered = max(self.remembered, len(seen))
                        pending.append(LoggedEvent(0, event))
                for tp in open_tps:
                    if tp in done:
                        continue
                    position = await consumer.position(tp)
                    high = consumer.highwater(tp)
                    if position >= ends[tp]:
                        done.add(tp)
                    elif high is not None and position >= high and not batch.get(tp):
                        done.add(tp)
                        self.short[tp.partition] = (high, ends[tp])
                if loop.time() - idle_since > self.idle_timeout:
                    raise ReplayError(
                        f"no message from {self.topic} for {self.idle_timeout:.0f} s before"
                        " reaching the projector's offsets; replay from the event log")
                while len(pending) >= size:
                    chunk, pending = pending[:size], pending[size:]
                    yield Chunk(await _with_seq(conn, chunk), scanned)
                    scanned = 0
            if pending or scanned:
                yield Chunk(await _with_seq(conn, pending), scanned)
        except KafkaError as err:
            refused = await refusal(err, bootstrap=self.bootstrap, security=self.security,
                                    doing=f"read topic {self.topic!r} (Describe and Read)")
            if refused is not None:
                raise ReplayError(str(refused)) from None
            raise ReplayError(f"cannot read {self.topic} from {self.bootstrap}: {err}") from None
        finally:
            await consumer.stop()


async def _with_seq(conn: Conn, events: list[LoggedEvent]) -> list[LoggedEvent]:
    """Give each event its event-log sequence number where the log still holds it."""
    if not events:
        return events
    rows = await conn.fetch("SELECT event_id, seq FROM syncd.event_log"
                            " WHERE event_id = ANY($1::uuid[])",
                            [item.event.event_id for item in events])
    seqs = {row["event_id"]: row["seq"] for row in rows}
    return [LoggedEvent(seqs.get(item.event.event_id, 0), item.event) for item in events]
