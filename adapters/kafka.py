"""Kafka: topic bootstrap, producer and consumer construction.

The embedded broker keeps nothing across restarts and supports neither the
idempotent producer nor transactions, so nothing here relies on them:
exactly-once effects come from the event log and the offsets in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KafkaSecurity:
    """How the clients authenticate to the brokers: ``PLAINTEXT`` (none, the default),
    or ``SASL_PLAINTEXT`` / ``SASL_SSL`` with a SASL mechanism (``SCRAM-SHA-512``,
    ``SCRAM-SHA-256``, ``PLAIN``) and its user name and password."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def options(self) -> dict[str, Any]:
        """The aiokafka client arguments; empty for ``PLAINTEXT``, so unauthenticated
        clients are built exactly as before."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl_mechanism is not None:
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options


NO_SECURITY = KafkaSecurity()

MAX_REPLICATION = 3
"""Replicas per partition of the topics this daemon creates, at most: three, or as many
brokers as the cluster has when it has fewer (one, for the embedded broker)."""


async def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int,
                        replication: int | None = None,
                        security: KafkaSecurity = NO_SECURITY) -> list[str]:
    """Create the missing topics; safe when several replicas race to do it.

    ``replication`` None: ``MAX_REPLICATION`` capped at the cluster's broker count
    (the brokers' own ``min.insync.replicas`` then applies to them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **security.options())
    try:
        await admin.start()  # inside the try: a broker that is not up must not leak the client
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing and replication is None:
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = max(1, min(MAX_REPLICATION, brokers))
        created: list[str] = []
        for topic in missing:
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication or 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another replica won the race: same outcome
        if created:
            log.info("kafka_topics_created", topics=created, partitions=partitions,
                     replication=replication)
        return created
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """Hold back aiokafka's own log lines (an ERROR "Unable connect to …" per failed
    connection) while the caller reports the broker's absence itself."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def broker_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the broker is not reachable (yet): worth waiting for."""
    if isinstance(err, KafkaError):
        return bool(err.retriable) or isinstance(err, KafkaTimeoutError)
    return isinstance(err, (OSError, TimeoutError))


def make_producer(bootstrap: str, *, security: KafkaSecurity = NO_SECURITY
                  ) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **security.options(),
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )


FETCH_MAX_WAIT_MS = 20


def make_consumer(bootstrap: str, *, group_id: str, session_timeout_ms: int = 6_000,
                  security: KafkaSecurity = NO_SECURITY) -> AIOKafkaConsumer:
    # A short rebalance timeout matters: the embedded broker waits for it in full
    # when a member left, and the projector's batches finish well inside it.
    return AIOKafkaConsumer(
        **security.options(),
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        # Positions always come from PostgreSQL; a reset here would hide data loss.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
        # How long the broker may hold a fetch that finds nothing new. The embedded
        # broker holds it that long even when a record arrives meanwhile, so this is
        # latency added to every change (aiokafka's 500 ms default: ~135 ms at the
        # median); an idle consumer pays for it with 50 empty fetches a second.
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 4),
        max_poll_interval_ms=300_000,
        rebalance_timeout_ms=5_000,
        isolation_level="read_uncommitted",
    )


async def broker_reachable(bootstrap: str, timeout: float = 3.0) -> bool:
    """A cheap round trip: fetch cluster metadata with a fresh client."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
