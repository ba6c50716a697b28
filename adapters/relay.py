"""The outbox relay: moves captured changes from a store's outbox to Kafka.

A row stays in the outbox until the projector has recorded its event in the
event log (the projector deletes it in that same transaction). The broker's
acknowledgement alone is not durable (the embedded broker keeps everything in
memory), so rows still present ``resend_after`` seconds after they were sent
are sent again (and so is everything unrecorded after a failed send, which is
how a broker restart shows itself); the event log ignores the copies it
already holds. A backlog the projector is working through is not sent again:
the relay keeps the offset each send was acknowledged at, and while the projector's
stored offset on the partition of the oldest row has not reached it and moves, the
row is queued, however long (a first sync's other store ahead of it, say); once the
projector's offset is past it and the row is still here, it is lost, and sent again
at once. Otherwise (no acknowledged offset known, the projector not moving on that
partition) the oldest row is taken for lost when it has stayed the oldest for
``resend_after`` while the projector got no further, on this store's rows or, for up
to ten times as long, on any.

Rows are read in ``seq`` order past a cursor, but sequence values are drawn before
commit: a transaction that drew a lower ``seq`` can commit after the relay has read
past it (several sessions writing at once). The seqs the relay stepped over are
kept for ``GAP_WAIT`` seconds and looked up at every pass, so such a row is
sent as soon as it commits, not ``resend_after`` later.

One relay per store is active across replicas (a session advisory lock);
the others stand by and take over when its connection goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters import metrics
from adapters.kafka import (
    AUTHORIZATION_ERRORS,
    NO_SECURITY,
    KafkaSecurity,
    ensure_topics,
    make_producer,
    refusal,
)
from adapters.kafka_batches import partition_of, send_keyed
from projections.catalog import Side
from projections.db import CONNECTION_LOST
from projections.events import ENVELOPE_VERSION
from projections.stores.outbox import Outbox

log = structlog.get_logger(__name__)

_LOCK_BASE = 0x5359_4E43_5245_4C00  # "SYNCREL\0"

_SELECT_OUTBOX = f"""
SELECT seq, module || ':' || record_id AS key, json_build_object(
    'v', {ENVELOPE_VERSION}, 'event_id', event_id, 'source', $3::text, 'module', module,
    'record_id', record_id, 'op', op, 'values', "values", 'changed', changed,
    'modified_at', modified_at, 'created_at', created_at, 'origin', origin,
    'captured_at', captured_at)::text AS body
FROM {{schema}}.outbox"""
FETCH_OUTBOX = _SELECT_OUTBOX + " WHERE seq > $1 ORDER BY seq LIMIT $2"
# Rows that have committed since with seqs the relay stepped over ($1). A query of
# its own: combined with the one above by an OR, the planner can no longer read the
# backlog in index order under the LIMIT, and sorts all of it at every pass.
FETCH_LATE = _SELECT_OUTBOX + " WHERE seq = ANY($1::bigint[]) ORDER BY seq LIMIT $2"

BEHIND_MAX = 60
"""A row the projector is moving towards is still taken for lost after this many times
``resend_after`` (15 minutes by default): a safety net for a loss nothing else shows."""

GAP_WAIT = 10.0
"""Seconds a stepped-over seq is watched for (the stores' transactions are short); a
row committing later still goes out, through the resend of everything unrecorded."""
GAP_LEAD = 1_000
"""On the first read, how many seqs before the first row are watched."""
GAP_MAX = 10_000
"""A longer run of missing seqs is not watched: it is rows recorded and gone (read
again after a rewind), not transactions in flight."""


Read = Literal["past", "behind"] | None
"""Where the projector stands against the oldest row (``OutboxRelay._read``)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One acknowledged send: its last outbox seq, when, and the offset each partition's
    last message got."""

    last_seq: int
    at: float
    offsets: dict[int, int]


class OutboxRelay:
    """Relays one store's outbox to the topic (see the module's docstring).

    ``on_sent`` is a hook for tools and tests (the benchmark counts with it): called
    with the outbox seqs of the rows of each send the broker acknowledged (acks=all),
    on the event loop. A row sent again (after a failed send, or taken for lost) is
    in a later call too. It must return quickly and not raise: an exception ends the
    relay.
    """

    def __init__(
        self,
        *,
        dsn: str,
        bootstrap: str,
        topic: str,
        source: str,
        partitions: int,
        poll_interval: float = 1.0,
        resend_after: float = 15.0,
        batch_max: int = 5000,
        on_sent: Callable[[list[int]], None] | None = None,
        security: KafkaSecurity = NO_SECURITY,
        idempotence: bool | None = False,
        group_id: str | None = None,
    ) -> None:
        if source not in ("desk", "crm"):
            raise ValueError(f"unknown source {source!r}")
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.topic = topic
        self.source: Side = cast(Side, source)  # checked above
        self.partitions = partitions
        self.poll_interval = poll_interval
        self.resend_after = resend_after
        self.batch_max = batch_max
        self.on_sent = on_sent
        self.security = security
        self.idempotence = idempotence
        self.group_id = group_id
        """The projector's consumer group, whose stored offsets say how far it has read
        (None: not known, the timing rule alone decides what is lost)."""
        """The producer's idempotence: True, False, or None (``auto``) to try it and go
        without when the broker cannot grant a producer id (the embedded broker); once
        a producer has started, what it is."""
        self.cursor = 0
        self.active = False
        self._fetch = FETCH_OUTBOX.format(schema=source)
        self._fetch_late = FETCH_LATE.format(schema=source)
        self._gaps: dict[int, float] = {}  # seq stepped over -> when
        self._wake = asyncio.Event()
        self._sent: deque[Sent] = deque()
        self._partitions: list[int] = []  # the topic's, as the last send placed keys
        self._head: tuple[int, float] | None = None  # (oldest outbox seq, seen since)
        self._log_mark: tuple[int, float] | None = None  # (newest event-log seq, seen at)
        # (partition, the projector's stored offset on it, seen at): whether it moves.
        self._read_mark: tuple[int, int, float] | None = None
        self._stored: dict[int, int] = {}  # the projector's stored offsets, as last read
        self._late: dict[int, Sent] = {}  # seq of a row sent late -> the send it went in

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``; a lost database connection, or a producer that found no
        broker, is opened again (the rows wait in the outbox meanwhile, and are sent
        again from the oldest)."""
        while not stop.is_set():
            try:
                await self._run_once(stop)
            except (*CONNECTION_LOST, KafkaError) as err:
                # The database away, or no broker answering the producer's start (one
                # restarting, two down at once): the rows wait in the outbox; start
                # over. A refusal (credentials, ACLs) is KafkaRefused, not a KafkaError:
                # it ends the relay, said.
                away = "broker" if isinstance(err, KafkaError) else "database"
                log.warning(f"{away}_unavailable", task=f"relay-{self.source}",
                            error=f"{type(err).__name__}: {err}")
                self._read_again(after=0)
                await self._sleep(stop, 1.0)

    async def _run_once(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"timezone": "UTC"})
        try:
            producer = await self._start_producer()
        except BaseException:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await conn.close()
            raise
        try:
            await conn.add_listener("syncd_outbox", self._notified)
            while not stop.is_set() and not await self._take_lock(conn):
                await self._sleep(stop, 2.0)
            self.active = True
            log.info("relay_active", source=self.source, topic=self.topic)
            await self._relay(conn, producer, stop)
        finally:
            self.active = False
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await conn.close()

    async def _start_producer(self) -> AIOKafkaProducer:
        """A started producer; a refusal (credentials, ACLs) raised as ``KafkaRefused``."""
        idempotent = self.idempotence is not False
        producer = make_producer(self.bootstrap, security=self.security, idempotent=idempotent)
        try:
            await producer.start()
            self.idempotence = idempotent  # ``auto`` is decided now
            return producer
        except KafkaError as err:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            doing = (f"produce idempotently (InitProducerId: Write on topic {self.topic!r})"
                     if idempotent else "connect")
            refused = await refusal(err, bootstrap=self.bootstrap, security=self.security,
                                    doing=doing)
            if refused is not None:
                log.error("kafka_refused", task=f"relay-{self.source}", error=str(refused))
                raise refused from None
            if self.idempotence is not None or err.retriable:
                raise
            # ``kafka_idempotence = auto``: a broker that answers InitProducerId with an
            # error that is neither transient nor a refusal cannot do it (the embedded
            # broker's "unknown error"). Without it the copies a retry may write are
            # dropped by the event log, as they always were.
            log.warning("kafka_idempotence_unsupported", source=self.source,
                        error=repr(err))
            self.idempotence = False
            return await self._start_producer()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload == self.source:
            self._wake.set()

    async def _take_lock(self, conn: asyncpg.Connection) -> bool:
        key = _LOCK_BASE + (1 if self.source == "desk" else 2)
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _relay(self, conn: asyncpg.Connection, producer: AIOKafkaProducer,
                     stop: asyncio.Event) -> None:
        last_resend_check = time.monotonic()
        # Before the first send: a partition's offset going back after it (its log lost
        # and read again from the start) is then seen.
        self._stored = await self._stored_offsets(conn)
        last_backlog = 0.0
        while not stop.is_set():
            self._wake.clear()
            rows = await conn.fetch(self._fetch, self.cursor, self.batch_max, self.source)
            if self._gaps:
                late = await conn.fetch(self._fetch_late, list(self._gaps), self.batch_max,
                                        self.source)
                if late:
                    rows = sorted([*late, *rows], key=lambda r: r["seq"])
            # Rows that committed after the relay had read past them go out now, in a
            # send whose seqs do not cover theirs: where they went is kept apart.
            sent_late = [row["seq"] for row in rows if row["seq"] <= self.cursor]
            self._note_gaps(rows)
            if rows:
                try:
                    offsets = await self._send(producer, rows)
                except KafkaError as err:
                    if isinstance(err, AUTHORIZATION_ERRORS):  # permanent: said, and ended
                        refused = await refusal(err, bootstrap=self.bootstrap,
                                                security=self.security,
                                                doing=f"write to topic {self.topic!r}")
                        log.error("kafka_refused", task=f"relay-{self.source}",
                                  error=str(refused))
                        assert refused is not None
                        raise refused from None
                    log.warning("relay_send_failed", source=self.source, error=repr(err))
                    with contextlib.suppress(KafkaError, OSError):
                        await ensure_topics(self.bootstrap, [self.topic],
                                            partitions=self.partitions,
                                            security=self.security)
                    await self._rewind(conn, force=True)
                    await self._sleep(stop, 1.0)
                    if self.idempotence:
                        # An idempotent producer's state may be broken for good (an
                        # OutOfOrderSequenceNumber ends aiokafka's sender): a new one.
                        return
                    continue
                self.cursor = max(self.cursor, rows[-1]["seq"])
                sent = Sent(self.cursor, time.monotonic(), offsets)
                self._sent.append(sent)
                self._late.update(dict.fromkeys(sent_late, sent))
                if len(rows) == self.batch_max:
                    continue  # more is waiting: no pause
            now = time.monotonic()
            if now - last_resend_check >= self.resend_after / 2:
                last_resend_check = now
                await self._rewind(conn, force=False)
            if now - last_backlog >= 5:
                last_backlog = now
                backlog = await Outbox(conn, self.source).backlog()
                metrics.OUTBOX_BACKLOG.labels(self.source).set(backlog)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _note_gaps(self, rows: list[asyncpg.Record]) -> None:
        """Keep the seqs stepped over reading ``rows`` past the cursor, drop those read
        now, forget old ones. On the first read (the cursor at 0) the ``GAP_LEAD`` seqs
        before the first row count as stepped over: rows still committing may sit
        there."""
        now = time.monotonic()
        previous = self.cursor
        if not previous and rows:
            previous = max(0, rows[0]["seq"] - GAP_LEAD - 1)
        for row in rows:
            seq = row["seq"]
            if seq <= self.cursor:
                del self._gaps[seq]  # committed late, sent now
                continue
            if 1 < seq - previous <= GAP_MAX:
                self._gaps.update(dict.fromkeys(range(previous + 1, seq), now))
            previous = seq
        if self._gaps and now - next(iter(self._gaps.values())) > GAP_WAIT:
            self._gaps = {seq: at for seq, at in self._gaps.items() if now - at <= GAP_WAIT}

    async def _send(self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]
                    ) -> dict[int, int]:
        """Send ``rows``; return the offset each partition's last one got."""
        metrics.EVENTS_CAPTURED.labels(self.source).inc(len(rows))
        prefix = f"{self.source}:"
        self._partitions = sorted(await producer.partitions_for(self.topic))
        offsets = await send_keyed(producer, self.topic, (
            ((prefix + row["key"]).encode(), row["body"].encode()) for row in rows))
        metrics.EVENTS_PRODUCED.labels(self.source).inc(len(rows))
        if self.on_sent is not None:
            self.on_sent([row["seq"] for row in rows])
        return offsets

    async def _rewind(self, conn: asyncpg.Connection, *, force: bool) -> None:
        """Send again what was sent but never reached the event log: everything
        after a failed send; else the oldest row once the projector has read past
        where it went (or its partition's log was lost and read again from its
        start), or, where that is not known, once it has waited ``resend_after`` since
        it was sent while the projector got no further (a projector that is only
        behind, working through a backlog such as a first sync's, would otherwise be
        sent the whole backlog again, and spend its time on the copies)."""
        # One snapshot: the projector's batch releases a row and stores its offset in
        # one transaction, so a row read here with an offset past it is really lost.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow(f"SELECT seq, module, record_id FROM {self.source}"
                                       ".outbox ORDER BY seq LIMIT 1")
            stored = await self._stored_offsets(conn)
        oldest: int | None = None if head is None else head["seq"]
        while self._sent and (oldest is None or self._sent[0].last_seq < oldest):
            self._sent.popleft()
        if self._late:
            self._late = {seq: sent for seq, sent in self._late.items()
                          if oldest is not None and seq >= oldest}
        reset = any(stored.get(p, offset) < offset for p, offset in self._stored.items())
        self._stored = stored
        if head is None or head["seq"] > self.cursor:
            self._head = None
            return
        now = time.monotonic()
        oldest = head["seq"]
        if self._head is None or self._head[0] != oldest:
            self._head = (oldest, now)  # the head moved: the projector is getting through
        stuck = now - self._head[1]
        read = "past" if reset else self._read(head, stored, now)
        lost = force or read == "past"
        if read == "behind":
            lost = stuck >= BEHIND_MAX * self.resend_after
        elif not lost:
            # The projector may be busy with the other store's backlog ahead of ours (a
            # first sync sends the CRM's records first): while the event log grows, wait,
            # though never more than ten times as long, in case ours were really lost.
            newest = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM syncd.event_log")
            if self._log_mark is None or self._log_mark[0] != newest:
                self._log_mark = (newest, now)
            busy = (now - self._log_mark[1] < self.resend_after
                    and stuck < 10 * self.resend_after)
            sent_at = self._sent[0].at if self._sent else 0.0
            lost = now - sent_at >= self.resend_after and stuck >= self.resend_after \
                and not busy
        if lost:
            log.warning("relay_resending", source=self.source, from_seq=oldest,
                        to_seq=self.cursor, after_failure=force, projector=read)
            self._read_again(after=oldest - 1)
            self._head = None

    def _read_again(self, *, after: int) -> None:
        """Read the outbox again past seq ``after``: every send on record and every
        stepped-over seq watched are forgotten (what is read again is sent again)."""
        self.cursor = after
        self._sent.clear()
        self._late.clear()
        self._gaps.clear()

    async def _stored_offsets(self, conn: asyncpg.Connection) -> dict[int, int]:
        """The projector's stored offsets on the topic, by partition (none without a
        group)."""
        if self.group_id is None:
            return {}
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM syncd.consumer_offsets"
            " WHERE group_id = $1 AND topic = $2", self.group_id, self.topic)
        return {row["partition"]: row["next_offset"] for row in rows}

    def _read(self, head: asyncpg.Record, stored: dict[int, int], now: float) -> Read:
        """Where the projector's stored offset stands against the offset the oldest row
        was acknowledged at: "past" (it read the row's place, and the row is still
        here: lost), "behind" (not there yet, and moving within ``resend_after``:
        queued), or None (not known: no group, no send of it on record, or not
        moving)."""
        seq = head["seq"]
        if seq in self._gaps:
            return None  # committed late and not sent yet: the next pass sends it
        sent = self._late.get(seq) or next((s for s in self._sent if s.last_seq >= seq), None)
        if sent is None or not self._partitions:
            return None
        key = f"{self.source}:{head['module']}:{head['record_id']}".encode()
        partition = partition_of(key, self._partitions)
        # None: the send carried nothing there (a row that committed late and was never
        # sent, its seq no longer watched): the timing rule decides.
        acked = sent.offsets.get(partition)
        at = stored.get(partition)
        if acked is None or at is None:
            return None
        if at > acked:
            return "past"
        if self._read_mark is None or self._read_mark[:2] != (partition, at):
            self._read_mark = (partition, at, now)
        return "behind" if now - self._read_mark[2] < self.resend_after else None
