"""Kafka: topic bootstrap, producer and consumer construction, the clients' security,
and the refusals (authentication, authorization) that waiting does not cure.

The embedded broker keeps nothing across restarts and supports neither the
idempotent producer nor transactions, so nothing here relies on them:
exactly-once effects come from the event log and the offsets in PostgreSQL. On a
real Kafka the relays' producer is idempotent (``make_producer(idempotent=True)``):
a retried produce request then writes no second copy, which saves the event log
the work of dropping it, but correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError

log = structlog.get_logger(__name__)

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSecurity:
    """How the clients authenticate to the brokers: ``PLAINTEXT`` (none, the default),
    ``SSL`` (TLS, the brokers' certificates checked against ``ssl_cafile`` or the
    system's CAs), or ``SASL_PLAINTEXT`` / ``SASL_SSL`` with a SASL mechanism
    (``SCRAM-SHA-512``, ``SCRAM-SHA-256``, ``PLAIN``) and its user name and password.
    The password is never in the ``repr`` (nor in any log line)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    @property
    def principal(self) -> str:
        """The principal the brokers see: ``User:<name>`` for SASL, else ``User:ANONYMOUS``
        (no client certificates here)."""
        if self.protocol in SASL_PROTOCOLS and self.username:
            return f"User:{self.username}"
        return "User:ANONYMOUS"

    def describe(self) -> str:
        """The principal and how it authenticates, for messages (no password)."""
        if self.protocol in SASL_PROTOCOLS:
            return f"{self.principal} ({self.protocol}, {self.sasl_mechanism})"
        return f"{self.principal} ({self.protocol})"

    def options(self) -> dict[str, Any]:
        """The aiokafka client arguments; empty for ``PLAINTEXT``, so unauthenticated
        clients are built exactly as before."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in TLS_PROTOCOLS:
            from aiokafka.helpers import create_ssl_context

            # Host names are checked (aiokafka's context always does): the brokers'
            # certificates must name the addresses they advertise.
            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.sasl_mechanism is not None:
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options


NO_SECURITY = KafkaSecurity()

MAX_REPLICATION = 3
"""Replicas per partition of the topics this daemon creates, at most: three, or as many
brokers as the cluster has when it has fewer (one, for the embedded broker)."""


AUTHENTICATION_ERRORS: tuple[type[KafkaError], ...] = (
    kafka_errors.SaslAuthenticationFailed, kafka_errors.AuthenticationFailedError,
    kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError)
AUTHORIZATION_ERRORS: tuple[type[KafkaError], ...] = (
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed)

ACLS_HELP = "see docs/production.md, 'ACLs of the daemon's principal'"


class KafkaRefused(Exception):
    """The brokers refused this client: its credentials (authentication) or an ACL it
    lacks (authorization). Permanent: waiting would not bring it, so start-up does
    not wait for it (``broker_unavailable`` is False) and a running part that meets
    it ends the daemon. The message names the brokers, the principal and what was
    refused."""

    def __init__(self, bootstrap: str, security: KafkaSecurity, refused: str,
                 cause: BaseException | str) -> None:
        detail = cause if isinstance(cause, str) else _error_text(cause)
        super().__init__(f"Kafka at {bootstrap} refused {security.describe()}: {refused}"
                         f" ({detail})")
        self.bootstrap = bootstrap
        self.principal = security.principal
        self.refused = refused


def _error_text(err: BaseException) -> str:
    text = str(err)
    name = type(err).__name__
    return text if text.startswith(("[Error", name)) else f"{name}: {text}"


async def _authentication_refusal(bootstrap: str, security: KafkaSecurity,
                                  timeout: float = 10.0) -> KafkaRefused | None:
    """Why no broker of ``bootstrap`` lets this client in, when it is a refusal.

    aiokafka hides a failed SASL authentication (or a TLS certificate not trusted)
    behind "Unable to bootstrap", a retriable connection error that looks exactly
    like a broker that is away. One connection per address, made here, shows the
    real answer; None when none of them is a refusal (the brokers are just away)."""
    from aiokafka.conn import collect_hosts, create_conn

    for host, port, _family in collect_hosts(bootstrap, randomize=False):
        try:
            conn = await asyncio.wait_for(create_conn(
                host, port, request_timeout_ms=int(timeout * 1000), **security.options()),
                timeout)
        except AUTHENTICATION_ERRORS as err:
            return KafkaRefused(bootstrap, security, "authentication failed", err)
        except ssl.SSLCertVerificationError as err:
            return KafkaRefused(bootstrap, security, "the broker's TLS certificate is not"
                                " trusted (kafka_ssl_cafile)", err.verify_message or str(err))
        except (OSError, KafkaError, TimeoutError):
            continue  # away (or not a broker): not a refusal
        conn.close()
        return None
    return None


async def refusal(err: BaseException, *, bootstrap: str, security: KafkaSecurity,
                  doing: str) -> KafkaRefused | None:
    """``err`` (met while ``doing``) as a ``KafkaRefused`` when the brokers refused the
    client, else None: an authorization error, an authentication error, or a failed
    bootstrap that hid one (``_authentication_refusal``)."""
    if isinstance(err, KafkaRefused):
        return err
    if isinstance(err, AUTHORIZATION_ERRORS):
        return KafkaRefused(bootstrap, security, f"not authorized to {doing} ({ACLS_HELP})",
                            err)
    if isinstance(err, AUTHENTICATION_ERRORS):
        return KafkaRefused(bootstrap, security, "authentication failed", err)
    if isinstance(err, kafka_errors.KafkaConnectionError):
        return await _authentication_refusal(bootstrap, security)
    return None


async def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int,
                        replication: int | None = None,
                        security: KafkaSecurity = NO_SECURITY) -> list[str]:
    """Create the missing topics; safe when several replicas race to do it.

    ``replication`` None: ``MAX_REPLICATION`` capped at the cluster's broker count
    (the brokers' own ``min.insync.replicas`` then applies to them). Raises
    ``KafkaRefused`` when the brokers refuse the client (its credentials, or the
    ACLs to see or create a topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **security.options())
    try:
        # inside the try: a broker that is not up must not leak the client
        await _refused_as(admin.start(), bootstrap=bootstrap, security=security,
                          doing="connect")
        # The metadata of every topic lists only those the principal may Describe: a
        # topic it may not see looks missing, and creating it is then refused below.
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing and replication is None:
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = max(1, min(MAX_REPLICATION, brokers))
        created: list[str] = []
        for topic in missing:
            response = await admin.create_topics([NewTopic(topic, partitions, replication or 1)])
            # aiokafka raises nothing for an error of a topic: it is in the response.
            for name, code, *message in response.topic_errors:
                error = kafka_errors.for_code(code)
                if error is kafka_errors.NoError:
                    created.append(name)
                elif error is kafka_errors.TopicAlreadyExistsError:
                    pass  # another replica won the race: same outcome
                elif issubclass(error, AUTHORIZATION_ERRORS):
                    raise KafkaRefused(
                        bootstrap, security, f"not authorized to create topic {name!r}, nor"
                        " to describe it if it exists (the topic needs Describe, Read and"
                        f" Write, and Create for the daemon to create it: {ACLS_HELP})",
                        error(*(m for m in message if m)))
                else:
                    raise error(f"creating topic {name!r}: {message[0] if message else ''}")
        if created:
            log.info("kafka_topics_created", topics=created, partitions=partitions,
                     replication=replication)
        return created
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()


async def _refused_as(work: Any, *, bootstrap: str, security: KafkaSecurity,
                      doing: str) -> Any:
    """Await ``work``; a refusal it meets is raised as ``KafkaRefused``."""
    try:
        return await work
    except (KafkaError, OSError) as err:
        refused = await refusal(err, bootstrap=bootstrap, security=security, doing=doing)
        if refused is not None:
            raise refused from None
        raise


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
    """Whether ``err`` means the broker is not reachable (yet): worth waiting for. A
    refusal (``KafkaRefused``: credentials, ACLs) is not, nor is an authentication
    or authorization error however aiokafka classes it."""
    if isinstance(err, (KafkaRefused, *AUTHENTICATION_ERRORS, *AUTHORIZATION_ERRORS)):
        return False
    if isinstance(err, KafkaError):
        return bool(err.retriable) or isinstance(err, KafkaTimeoutError)
    return isinstance(err, (OSError, TimeoutError))


def make_producer(bootstrap: str, *, security: KafkaSecurity = NO_SECURITY,
                  idempotent: bool = False) -> AIOKafkaProducer:
    """The relays' producer: ``acks=all`` always. ``idempotent``: the broker gives the
    producer an id (InitProducerId, at ``start``) and drops the copies its retries
    would write; aiokafka keeps one request in flight per partition, so order holds.
    The embedded broker cannot (it answers InitProducerId with an unknown error)."""
    return AIOKafkaProducer(
        **security.options(),
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotent,
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


async def broker_reachable(bootstrap: str, timeout: float = 3.0, *,
                           security: KafkaSecurity = NO_SECURITY) -> bool:
    """A cheap round trip: fetch cluster metadata with a fresh client."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                            **security.options())
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
