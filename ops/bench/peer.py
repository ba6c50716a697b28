"""The peer scenario: a well-known sink on the same events, on the real Kafka cluster.

``python -m ops.bench --scenario peer`` (``ops/bench/README.md``, "peer"). On a real
Apache Kafka cluster (the configured brokers, or the tests' three-broker cluster,
``tests/support/kafka_cluster.py``, started for the run from a checkout) it runs
the steady scenario (``syncd``'s projector and the raw limit on the steady
workload's events) and then Kafka Connect in standalone mode
(``org.apache.kafka.connect.cli.ConnectStandalone``, ``connect-runtime`` 4.4.0)
with Debezium's JDBC sink connector, upserting the same events by their record key
into one PostgreSQL table, and reports the three figures side by side.

The jars come from Maven Central through ``ops/bench/peer/pom.xml`` into a cache
(``~/.cache/syncd-tests/bench-peer-<digest>``, or ``$SYNCD_BENCH_PEER_CACHE``), fetched
once (``.ci/run`` fetches them too), so a run needs no network. Debezium's JDBC sink
3.6.1.Final is not served (neither its pom nor its jar): the pom takes 3.6.0.Final,
the newest that resolves, and the ``hibernate-agroal`` it names (7.2.6.Final, not
served) is replaced by 7.2.0.Final, which is (its connection pool, the default).

The events: the sink needs a schema with each value (``JsonConverter`` with
``schemas.enable``), so the peer consumes a copy of the steady events made for it:
the same keys, on the same partitions, in the same order, each value the event's
fields in Connect's JSON envelope (``{"schema": ..., "payload": ...}``) — the
event's top-level fields as they are, its ``values`` and ``changed`` as JSON text
(a column each; the raw sink stores the whole event as ``jsonb``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from aiokafka import TopicPartition

from adapters.kafka import ensure_topics, make_producer
from daemon.runtime.embedded import free_port
from ops.bench import workloads as wl

Result = dict[str, Any]

POM = Path(__file__).resolve().parent / "peer" / "pom.xml"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectStandalone"
CONNECTOR = "io.debezium:debezium-connector-jdbc:3.6.0.Final"
REQUIRED_JAR = "debezium-connector-jdbc-3.6.0.Final.jar"
TABLE = "bench_peer_events"
EXPECTED = "bench_peer_expected"
# Connect's own JVM: a heap of its own size and the default JIT (the cluster's brokers
# run with C1 only to start light; the peer is what is measured here).
JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-Djava.awt.headless=true")
TASK_STARTED = "Sink task finished initialization and start"
ASSIGNED = "Adding newly assigned partitions"  # the sink task's consumer joined its group
CONNECT_STARTED = "Kafka Connect started"

# The event's fields, in the envelope's schema: the strings and the version as they are,
# ``values`` and ``changed`` as JSON text.
_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("v", "int32", False), ("event_id", "string", False), ("source", "string", False),
    ("module", "string", False), ("record_id", "string", False), ("op", "string", False),
    ("values", "string", False), ("changed", "string", True),
    ("modified_at", "string", False), ("created_at", "string", False),
    ("origin", "string", False), ("captured_at", "string", False),
)
SCHEMA: dict[str, Any] = {
    "type": "struct", "name": "syncd.ChangeEvent", "optional": False,
    "fields": [{"field": name, "type": kind, "optional": optional}
               for name, kind, optional in _FIELDS],
}
_SCHEMA_JSON = json.dumps(SCHEMA, separators=(",", ":"))

_CREATE_TABLE = (
    f"CREATE TABLE {TABLE} (record_key text PRIMARY KEY, v integer, "
    + ", ".join(f'"{name}" text' for name, kind, _ in _FIELDS if kind == "string") + ")")

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{UNIX_MILLIS}} %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.hibernate.name = org.hibernate
logger.hibernate.level = WARN
"""


def cache_dir() -> Path:
    """Where the peer's jars are kept (named by the pom's digest: a changed pom is a
    new cache)."""
    configured = os.environ.get("SYNCD_BENCH_PEER_CACHE")
    if configured:
        return Path(configured)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return Path.home() / ".cache" / "syncd-tests" / f"bench-peer-{digest}"


def fetch_jars() -> list[Path]:
    """Connect, the JDBC sink and the drivers: fetched by Maven once (the tests' cluster's
    helper, ``tests.support.kafka_cluster.fetch_maven_jars``)."""
    from tests.support.kafka_cluster import fetch_maven_jars

    return fetch_maven_jars(POM, cache_dir(), required=REQUIRED_JAR, what="peer sink")


def unavailable() -> str | None:
    """Why the peer cannot run here (Java, Maven or openssl missing), or None."""
    from tests.support.kafka_cluster import missing_tools

    return missing_tools()


@contextlib.contextmanager
def real_cluster(root: Path) -> Iterator[str]:
    """The tests' three-broker Apache Kafka cluster for the run; yields its bootstrap."""
    from tests.support.kafka_cluster import KafkaCluster
    from tests.support.kafka_cluster import fetch_jars as cluster_jars

    cluster = KafkaCluster(root / "kafka", jars=cluster_jars())
    cluster.start()
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


# -- the events, for the peer --------------------------------------------------------------


def envelope(value: bytes) -> bytes:
    """One event in Connect's JSON envelope (schema and payload)."""
    event = json.loads(value)
    payload = {name: (event.get(name) if name not in ("values", "changed") or
                      event.get(name) is None else json.dumps(event[name],
                                                              separators=(",", ":")))
               for name, _kind, _optional in _FIELDS}
    return (f'{{"schema":{_SCHEMA_JSON},"payload":'
            f'{json.dumps(payload, separators=(",", ":"))}}}').encode()


@dataclasses.dataclass
class PeerCopy:
    events: int = 0
    last_event: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> event id
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0


async def copy_for_peer(bootstrap: str, source: str, target: str, partitions: int,
                        expect: int, *, timeout: float = 600.0) -> PeerCopy:
    """Read every event of ``source`` (partition by partition, in offset order) and
    produce it to ``target`` in the envelope: same key, same partition, same order.
    Notes each key's last event (what the table must hold at the end)."""
    await ensure_topics(bootstrap, [target], partitions=partitions)
    copy = PeerCopy()
    started = time.perf_counter()
    consumer = wl.raw_consumer(bootstrap)
    producer = make_producer(bootstrap)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer copy: {copy.events} of {expect} in {timeout} s")
            batch = await consumer.getmany(*left, timeout_ms=200, max_records=5000)
            futures = []
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= ends[tp] or rec.key is None or rec.value is None:
                        continue
                    body = envelope(rec.value)
                    copy.bytes_in += len(rec.value)
                    copy.bytes_out += len(body)
                    copy.last_event[rec.key.decode()] = json.loads(rec.value)["event_id"]
                    futures.append(await producer.send(target, body, key=rec.key,
                                                       partition=tp.partition))
                if records and records[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
            await asyncio.gather(*futures)
            copy.events += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()
    if copy.events != expect:
        raise RuntimeError(f"peer copy: {copy.events} events read back, {expect} expected")
    copy.seconds = time.perf_counter() - started
    return copy


# -- Kafka Connect -------------------------------------------------------------------------


def jdbc_target(dsn: str) -> tuple[str, str, str]:
    """The JDBC URL, user and password of a libpq URL; a Unix socket (the embedded
    PostgreSQL listens on nothing else) is reached through junixsocket."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or unquote(parts.hostname or "") or "localhost"
    port = parts.port or int(query.get("port", "5432"))
    database = parts.path.lstrip("/") or "postgres"
    user = unquote(parts.username or query.get("user", "postgres"))
    password = unquote(parts.password or query.get("password", ""))
    if host.startswith("/"):
        url = (f"jdbc:postgresql://localhost:{port}/{database}"
               "?socketFactory=org.newsclub.net.unix.AFUNIXSocketFactory$FactoryArg"
               f"&socketFactoryArg={host}/.s.PGSQL.{port}")
    else:
        url = f"jdbc:postgresql://{host}:{port}/{database}"
    return url, user, password


def _properties(values: dict[str, Any]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\")

    return "".join(f"{key}={escape(str(value))}\n" for key, value in values.items())


@dataclasses.dataclass
class ConnectRun:
    """One Kafka Connect standalone process with the JDBC sink, in ``directory``."""

    directory: Path
    jars: list[Path]
    bootstrap: str
    topic: str
    dsn: str
    batch: int
    tasks: int = 1
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0  # wall clock (time.time()): the log's timestamps are too

    @property
    def log_file(self) -> Path:
        return self.directory / "connect.log"

    def write_config(self) -> tuple[Path, Path]:
        url, user, password = jdbc_target(self.dsn)
        worker = self.directory / "worker.properties"
        worker.write_text(_properties({
            "bootstrap.servers": self.bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
            "offset.storage.file.filename": str(self.directory / "connect.offsets"),
            "offset.flush.interval.ms": "5000",
            "listeners": f"http://127.0.0.1:{free_port()}",
            # The product's fetch and batch sizes (ops.bench.workloads.raw_consumer).
            "consumer.max.poll.records": str(self.batch),
            "consumer.max.partition.fetch.bytes": str(8 << 20),
            "consumer.fetch.max.bytes": str(32 << 20),
            "consumer.auto.offset.reset": "earliest",
        }))
        sink = self.directory / "sink.properties"
        sink.write_text(_properties({
            "name": "bench-peer",
            "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "tasks.max": str(self.tasks),
            "topics": self.topic,
            "connection.url": url,
            "connection.username": user,
            "connection.password": password,
            "insert.mode": "upsert",
            "delete.enabled": "false",
            # The key as it is (the relay's string); the sink takes a struct key, so
            # Connect's HoistField wraps it into one of a single field.
            "transforms": "key",
            "transforms.key.type": "org.apache.kafka.connect.transforms.HoistField$Key",
            "transforms.key.field": "record_key",
            "primary.key.mode": "record_key",
            "primary.key.fields": "record_key",
            "schema.evolution": "none",
            "collection.name.format": TABLE,
            "quote.identifiers": "true",
            "batch.size": str(self.batch),
            "use.time.zone": "UTC",
        }))
        (self.directory / "log4j2.properties").write_text(LOG4J2.format(log=self.log_file))
        return worker, sink

    def start(self) -> None:
        worker, sink = self.write_config()
        env = dict(os.environ)
        env.pop("KAFKA_OPTS", None)
        env.pop("JAVA_TOOL_OPTIONS", None)
        self.spawned_at = time.time()
        with open(self.directory / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                ["java", *JVM_OPTIONS,
                 f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
                 "-cp", ":".join(map(str, self.jars)), CONNECT_MAIN, str(worker), str(sink)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.directory, start_new_session=True)

    def logged_at(self, text: str) -> float | None:
        """The wall-clock time of the first log line containing ``text``, or None."""
        with contextlib.suppress(OSError), open(self.log_file, errors="replace") as log:
            for line in log:
                if text in line:
                    with contextlib.suppress(ValueError, IndexError):
                        return int(line.split(" ", 1)[0]) / 1000
        return None

    def failed(self) -> str | None:
        """Why the process stopped, or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.log_file.read_text(errors="replace")[-3000:]
        return f"Kafka Connect exited with status {self.proc.returncode}: {tail}"

    def task_error(self) -> str | None:
        """The sink task's failure (its exceptions and causes), when its log says so."""
        with contextlib.suppress(OSError):
            text = self.log_file.read_text(errors="replace")
            if "Task is being killed" in text:
                causes = [line for line in text.splitlines()
                          if " ERROR " in line or line.startswith("Caused by")
                          or "Exception:" in line]
                return "Kafka Connect's sink task failed: " + "\n".join(causes[:30])
        return None

    def cpu_seconds(self) -> float:
        return wl.proc_cpu(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


async def prepare_table(conn: asyncpg.Connection, copy: PeerCopy) -> None:
    """The peer's table (its key the primary key) and each key's last event."""
    await conn.execute(f"DROP TABLE IF EXISTS {TABLE}, {EXPECTED}")
    await conn.execute(_CREATE_TABLE)
    await conn.execute(f"CREATE TABLE {EXPECTED} (record_key text PRIMARY KEY, event_id text)")
    await conn.copy_records_to_table(EXPECTED, records=list(copy.last_event.items()),
                                     columns=["record_key", "event_id"])
    await conn.execute(f"ANALYZE {EXPECTED}")


async def applied(conn: asyncpg.Connection) -> int:
    """Keys whose row holds their last event."""
    return int(await conn.fetchval(
        f"SELECT count(*) FROM {TABLE} t JOIN {EXPECTED} e"
        " ON e.record_key = t.record_key AND e.event_id = t.event_id"))


async def run_connect(run: ConnectRun, conn: asyncpg.Connection, keys: int, events: int, *,
                      poll: float = 0.2, timeout: float = 1800.0,
                      say: Callable[[str], None] = lambda _: None) -> Result:
    """Start Connect, wait until the table holds every key's last event; the figures."""
    run.start()
    began = time.monotonic()
    task_at: float | None = None
    seen, since = 0, time.monotonic()
    while True:
        await asyncio.sleep(poll)
        why = run.failed() or run.task_error()
        if why:
            raise RuntimeError(why)
        if task_at is None:
            task_at = run.logged_at(TASK_STARTED)
            if task_at is None:
                if time.monotonic() - began > 180:
                    raise TimeoutError("Kafka Connect: the sink task did not start in 180 s;"
                                       f" see {run.log_file}")
                continue
            say("peer: the sink task started")
        done = await applied(conn)
        now = time.time()
        if done >= keys:
            break
        if done != seen:
            seen, since = done, time.monotonic()
        if time.monotonic() - since > 120 or time.monotonic() - began > timeout:
            raise TimeoutError(f"Kafka Connect: {done} of {keys} keys hold their last event"
                               f" ({time.monotonic() - since:.0f} s without progress);"
                               f" see {run.log_file}")
    cpu = run.cpu_seconds()
    connect_started = run.logged_at(CONNECT_STARTED)
    # From the consumer's join, as the product's steady figure is timed (its consumer
    # had its partitions); the time from the task's start is reported beside it.
    assigned_at = run.logged_at(ASSIGNED) or task_at
    seconds = now - assigned_at
    return {
        "events_per_s": round(events / seconds) if seconds > 0 else 0,
        "seconds": round(seconds, 2),
        "seconds_from_task_start": round(now - task_at, 2),
        "jvm_start_seconds": round((connect_started or task_at) - run.spawned_at, 2),
        "task_start_seconds": round(task_at - run.spawned_at, 2),
        "assigned_seconds": round(assigned_at - run.spawned_at, 2),
        "poll_seconds": poll,
        "connect_cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1),
    }


async def table_checks(conn: asyncpg.Connection) -> Result:
    return {
        "rows": int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}")),
        "distinct_keys": int(await conn.fetchval(
            f"SELECT count(DISTINCT record_key) FROM {TABLE}")),
        "expected_keys": int(await conn.fetchval(f"SELECT count(*) FROM {EXPECTED}")),
        "rows_with_last_event": await applied(conn),
    }


@contextlib.asynccontextmanager
async def connect_dir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="syncd-bench-peer-") as tmp:
        yield Path(tmp)
