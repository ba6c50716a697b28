"""The sales signals publisher (TICKET-09): sends every signal the signals projection
decided to a Kafka topic of its own, keyed by ticket, in sequence order.

Delivery is at least once, of signals decided exactly once. The position
(``sales_signals.published.through``) moves only after the broker acknowledged every
signal up to it (acks=all), so a crash, a restart or a failed send re-sends from the
last position committed: a consumer may see a signal twice, never miss one, and drops
the repeat by the signal's ``id`` (uuid5 of its cause: one cause, one id). Kafka
transactions would make the send and the position one act, but the embedded broker
has none, and the product leans on no broker's extras.

One publisher is active across replicas (``adapters.exclusive``: a session advisory
lock); the others stand by and take over when its connection goes away. The
projection's ``pg_notify`` wakes it at the commit of signals; it polls too, so a lost
notification only delays. A broker out of reach gives the lock up for a moment (another
replica may reach it) and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from adapters import metrics
from adapters.exclusive import run_exclusively
from adapters.kafka import NO_SECURITY, KafkaSecurity, ensure_topics, make_producer
from adapters.kafka_batches import send_keyed
from projections.db import CONNECTION_LOST, Conn
from projections.sales_signals import NOTIFY_CHANNEL, SIGNAL_COLUMNS, signal_json

log = structlog.get_logger(__name__)

PUBLISHER_LOCK = 0x5359_4E43_5349_474E  # "SYNCSIGN": one publisher at a time (session lock)


class SignalPublisher:
    """Publishes ``sales_signals.signals`` to ``topic`` (see the module's docstring).

    ``on_sent`` is a hook for tools and tests: called with the last sequence number
    acknowledged and committed, on the event loop; it must return quickly."""

    def __init__(self, *, pool: asyncpg.Pool, bootstrap: str, topic: str, partitions: int,
                 poll_interval: float = 1.0, batch_max: int = 1000,
                 security: KafkaSecurity = NO_SECURITY, idempotent: bool = False,
                 on_sent: Callable[[int], None] | None = None) -> None:
        self.pool = pool
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.poll_interval = poll_interval
        self.batch_max = batch_max
        self.security = security
        self.idempotent = idempotent
        self.on_sent = on_sent
        self.active = asyncio.Event()
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` while this replica holds the publisher's lock; what was
        not committed as published is sent again by whoever holds it next."""
        await run_exclusively(self.pool, PUBLISHER_LOCK, stop, self._publish_while_held,
                              task="signal-publisher", active=self.active)

    async def _publish_while_held(self, conn: Conn, stop: asyncio.Event) -> None:
        producer: AIOKafkaProducer | None = None
        await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        try:
            await ensure_topics(self.bootstrap, [self.topic], partitions=self.partitions,
                                security=self.security)
            producer = make_producer(self.bootstrap, security=self.security,
                                     idempotent=self.idempotent)
            await producer.start()
            log.info("signal_publisher_active", topic=self.topic)
            await self._publish(conn, producer, stop)
        except KafkaError as err:
            log.warning("broker_unavailable", task="signal-publisher",
                        error=f"{type(err).__name__}: {err}")
        finally:
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
            with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
                await conn.remove_listener(NOTIFY_CHANNEL, self._notified)

    def _notified(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self._wake.set()

    async def _publish(self, conn: Conn, producer: AIOKafkaProducer,
                       stop: asyncio.Event) -> None:
        await conn.execute("INSERT INTO sales_signals.published (one, through)"
                           " VALUES (true, 0) ON CONFLICT (one) DO NOTHING")
        while not stop.is_set():
            self._wake.clear()  # before reading: a commit from here on wakes us
            through = await conn.fetchval("SELECT through FROM sales_signals.published")
            rows = await conn.fetch(
                f"SELECT {SIGNAL_COLUMNS} FROM sales_signals.signals WHERE seq > $1"
                " ORDER BY seq LIMIT $2", through, self.batch_max)
            if rows:
                await send_keyed(producer, self.topic, (  # acks=all: each acknowledged
                    (row["ticket_id"].encode(), json.dumps(signal_json(row)).encode())
                    for row in rows))
                last = rows[-1]["seq"]
                # Compare-and-set: a rebuild that moved the position back meanwhile wins.
                await conn.execute("UPDATE sales_signals.published SET through = $1"
                                   " WHERE through = $2", last, through)
                metrics.SIGNALS_PUBLISHED.inc(len(rows))
                if self.on_sent is not None:
                    self.on_sent(last)
                if len(rows) == self.batch_max:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
