"""A real Apache Kafka cluster for the tests: three KRaft nodes on loopback.

The jars come from Maven Central through ``tests/support/kafka/pom.xml``, fetched
once into a cache outside the repository (``~/.cache/syncd-tests/kafka-<version>``,
or ``$SYNCD_TEST_KAFKA_CACHE``). Each node is its own JVM (``kafka.Kafka``) with its
own data directory, ``process.roles=broker,controller``, in a three-voter controller
quorum; ports are chosen free at start. Topics default to replication factor 3 and
``min.insync.replicas=2``.

Listeners of each node:

- ``PLAIN`` (PLAINTEXT): the product's default;
- ``SCRAM`` (SASL_PLAINTEXT, SCRAM-SHA-512): authenticated clients; the users are
  created at format time (``--add-scram``), ``StandardAuthorizer`` checks ACLs, and
  ``admin`` is a super user while ``client`` and ``syncd`` have no ACL until a test
  grants one (``KafkaCluster.grant``, Kafka's own ``AclCommand``);
- ``TLS`` (SASL_SSL, SCRAM-SHA-512 over TLS): the same users, the brokers' certificate
  for 127.0.0.1 signed by a CA made at start with ``openssl`` (``KafkaCluster.ca_file``);
- ``INTERNAL`` (between brokers) and ``CONTROLLER`` (the quorum): PLAINTEXT on loopback.

Principals of PLAINTEXT connections are ``User:ANONYMOUS``, which is a super user
here so that the brokers, the controllers and the unauthenticated listener work
without ACLs; on the ``SCRAM`` listener the authorizer is real.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from adapters.kafka import quiet_client_logs

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
HEAP = "-Xmx384m"
# Two cores are shared by three JVMs, PostgreSQL and the tests: C1 only, a small heap
# and one GC thread start a node in a few seconds and keep it light.
JVM_OPTIONS = (HEAP, "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-XX:CICompilerCount=1", "-Xss512k", "-Djava.awt.headless=true")

SCRAM_MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = ("admin", "admin-secret")
"""A super user on the SCRAM listener."""
CLIENT_USER = ("client", "client-secret")
"""A user with no ACL: authenticated, authorized for nothing."""
DAEMON_USER = ("syncd", "syncd-secret")
"""The daemon's principal in the ACL tests: no ACL until a test grants its own."""
ACL_TOOL = "org.apache.kafka.tools.AclCommand"


class ToolMissing(RuntimeError):
    """Java or Maven (or PostgreSQL's server binaries) are not installed."""


def missing_tools() -> str | None:
    """Why the cluster cannot run here (``java``/``mvn``/``openssl`` not on PATH), or
    None."""
    absent = [tool for tool in ("java", "mvn", "openssl") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not found on PATH (needed for the real Kafka cluster)"
    return None


def cache_dir() -> Path:
    configured = os.environ.get("SYNCD_TEST_KAFKA_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "syncd-tests" / f"kafka-{KAFKA_VERSION}"


def _pom_digest(pom: Path = POM) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def fetch_maven_jars(pom: Path, cache: Path, *, required: str, what: str) -> list[Path]:
    """The jars of ``pom`` (a pom that builds nothing, only lists dependencies), fetched
    by Maven into ``cache`` once; ``required`` is a jar the class path cannot do without,
    ``what`` names them in errors. Also used by the benchmark's peer sink
    (``ops/bench/peer.py``).

    The cache is complete when its marker names the pom's digest; otherwise Maven
    copies the dependencies into a fresh directory that then replaces the cache,
    so an interrupted fetch never leaves a half-filled class path behind."""
    marker = cache / ".complete"
    if not (marker.exists() and marker.read_text().strip() == _pom_digest(pom)):
        reason = missing_tools()
        if reason:
            raise ToolMissing(reason)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={partial}"],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"mvn could not fetch the {what} jars (exit {result.returncode}):"
                               f"\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        (partial / ".complete").write_text(_pom_digest(pom) + "\n")
        shutil.rmtree(cache, ignore_errors=True)
        partial.rename(cache)
    jars = sorted(cache.glob("*.jar"))
    if not any(j.name == required for j in jars):
        raise RuntimeError(f"{cache} holds no {required}")
    return jars


def fetch_jars(cache: Path | None = None) -> list[Path]:
    """The cluster's class path: the jars of the pom, fetched by Maven once
    (``fetch_maven_jars``)."""
    return fetch_maven_jars(POM, cache or cache_dir(), required=f"kafka_2.13-{KAFKA_VERSION}.jar",
                            what="Kafka")


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _make_certificates(directory: Path) -> None:
    """A CA (``ca.pem``) and the brokers' key and certificate for 127.0.0.1 signed by it
    (``broker.pem``), made with ``openssl``."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True,
                              text=True, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr[-2000:]}")

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
            "-subj", "/CN=syncd test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "broker.key", "-out", "broker.csr")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "7", "-extfile", "san.cnf", "-out", "broker.crt")
    (directory / "broker.pem").write_text(
        (directory / "broker.key").read_text() + (directory / "broker.crt").read_text())


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass
class Node:
    node_id: int
    directory: Path
    plain_port: int
    scram_port: int
    tls_port: int
    internal_port: int
    controller_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    @property
    def scram_bootstrap(self) -> str:
        return f"127.0.0.1:{self.scram_port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """Three KRaft nodes (broker and controller each), started and stopped as one."""

    def __init__(self, base_dir: Path, *, size: int = 3, jars: list[Path] | None = None) -> None:
        self.base_dir = base_dir
        self.size = size
        self._jars = jars
        self.cluster_id = _cluster_id()
        self.nodes: dict[int, Node] = {}

    # -- configuration -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listeners of every node."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def scram_bootstrap(self) -> str:
        """The SASL SCRAM-SHA-512 listeners of every node."""
        return ",".join(node.scram_bootstrap for node in self.nodes.values())

    @property
    def tls_bootstrap(self) -> str:
        """The SASL_SSL (SCRAM-SHA-512 over TLS) listeners of every node."""
        return ",".join(node.tls_bootstrap for node in self.nodes.values())

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the brokers' TLS certificates."""
        return self.base_dir / "tls" / "ca.pem"

    def _voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}"
                        for n in self.nodes.values())

    def _properties(self, node: Node) -> str:
        rf = min(3, self.size)
        isr = min(2, self.size)
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": self._voters(),
            "listeners": (f"PLAIN://127.0.0.1:{node.plain_port},"
                          f"SCRAM://127.0.0.1:{node.scram_port},"
                          f"TLS://127.0.0.1:{node.tls_port},"
                          f"INTERNAL://127.0.0.1:{node.internal_port},"
                          f"CONTROLLER://127.0.0.1:{node.controller_port}"),
            "advertised.listeners": (f"PLAIN://127.0.0.1:{node.plain_port},"
                                     f"SCRAM://127.0.0.1:{node.scram_port},"
                                     f"TLS://127.0.0.1:{node.tls_port},"
                                     f"INTERNAL://127.0.0.1:{node.internal_port}"),
            "listener.security.protocol.map": ("PLAIN:PLAINTEXT,SCRAM:SASL_PLAINTEXT,TLS:SASL_SSL,"
                                               "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"),
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "listener.name.scram.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.scram.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.tls.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.tls.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            # The key and the certificate (for 127.0.0.1, signed by ``ca_file``) in one
            # PEM file, unencrypted (test data only).
            "listener.name.tls.ssl.keystore.type": "PEM",
            "listener.name.tls.ssl.keystore.location": str(self.base_dir / "tls" / "broker.pem"),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:ANONYMOUS;User:{ADMIN_USER[0]}",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(node.directory / "data"),
            "metadata.log.dir": str(node.directory / "metadata"),
            "num.partitions": "3",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(isr),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(isr),
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(isr),
            "group.initial.rebalance.delay.ms": "0",
            # The tests' pipeline runs its consumers with a 2 s session timeout
            # (tests/support/pipeline.py); Kafka's default floor is 6 s, the daemon's
            # own default, which a stock cluster accepts.
            "group.min.session.timeout.ms": "1000",
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            "log.segment.bytes": str(16 << 20),
            # Retention is checked every half second (Kafka's default: 5 minutes), from
            # the start, so that a test topic with a tiny retention.ms loses its old
            # segments within seconds; topics without one keep Kafka's 7 days.
            "log.retention.check.interval.ms": "500",
            "log.initial.task.delay.ms": "500",
            # A killed broker is noticed within seconds, not the default 9 s / 18 s.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            "controller.quorum.election.timeout.ms": "1000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "replica.lag.time.max.ms": "5000",
            "unclean.leader.election.enable": "false",
            "delete.topic.enable": "true",
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def _java(self, main: str, *args: str) -> list[str]:
        assert self._jars is not None
        node_opts = [f"-Dkafka.logs.dir={self.base_dir}"]
        return ["java", *JVM_OPTIONS, *node_opts, "-cp", ":".join(map(str, self._jars)),
                main, *args]

    # -- life cycle ----------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Format every node, start them, and wait until each broker answers metadata
        listing all of them."""
        if self._jars is None:
            self._jars = fetch_jars()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(5 * self.size)
        for i in range(self.size):
            node_id = i + 1
            directory = self.base_dir / f"node{node_id}"
            directory.mkdir(parents=True, exist_ok=True)
            plain, scram, tls, internal, controller = ports[5 * i:5 * i + 5]
            self.nodes[node_id] = Node(node_id, directory, plain, scram, tls, internal,
                                       controller)
        _make_certificates(self.base_dir / "tls")
        for node in self.nodes.values():
            node.properties.write_text(self._properties(node))
            (node.directory / "log4j2.properties").write_text(LOG4J2.format(log=node.log_file))
        self._format()
        # An interrupted session (Ctrl-C) still stops the JVMs.
        atexit.register(self.stop)
        try:
            for node in self.nodes.values():
                self._spawn(node)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _format(self) -> None:
        """``kafka-storage format`` for every node at once, the SCRAM users added."""
        procs = []
        for node in self.nodes.values():
            # --cluster-id=: a base64url id may start with "-", which as a separate
            # argument the tool's parser takes for an option (1 run in 64 failed so).
            args = ["format", f"--cluster-id={self.cluster_id}", "-c", str(node.properties),
                    "--ignore-formatted"]
            for user, password in (ADMIN_USER, CLIENT_USER, DAEMON_USER):
                args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
            out = open(node.directory / "format.log", "wb")  # noqa: SIM115 - closed below
            procs.append((node, out, subprocess.Popen(
                self._java(STORAGE_TOOL, *args), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(node))))
        failed = []
        for node, out, proc in procs:
            try:
                code = proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            out.close()
            if code != 0:
                failed.append(f"node {node.node_id} (exit {code}, see "
                              f"{node.directory / 'format.log'}): "
                              f"{(node.directory / 'format.log').read_text()[-2000:]}")
        if failed:
            raise RuntimeError("kafka storage format failed: " + "; ".join(failed))

    def _env(self, node: Node) -> dict[str, str]:
        env = dict(os.environ)
        env["LOG_DIR"] = str(node.directory)
        env.pop("KAFKA_OPTS", None)
        env.pop("JAVA_TOOL_OPTIONS", None)
        return env

    def _spawn(self, node: Node) -> None:
        with open(node.stdout_file, "ab") as out:
            node.proc = subprocess.Popen(
                ["java", *JVM_OPTIONS,
                 f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
                 f"-Dkafka.logs.dir={node.directory}",
                 "-cp", ":".join(map(str, self._jars or [])), KAFKA_MAIN, str(node.properties)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env(node), start_new_session=True)
        node.paused = False

    def wait_ready(self, timeout: float = 60.0, nodes: list[int] | None = None) -> None:
        """Wait until each of ``nodes`` (all by default) answers a metadata request
        listing every broker of the cluster."""
        deadline = time.monotonic() + timeout
        for node_id in nodes or list(self.nodes):
            node = self.nodes[node_id]
            while True:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(
                        f"kafka node {node_id} exited with status {node.proc.returncode};"
                        f" see {node.log_file} and {node.stdout_file}")
                with quiet_client_logs():  # a node not listening yet is expected here
                    seen = asyncio.run(_brokers_seen(node.bootstrap))
                if seen is not None and seen >= set(self.nodes):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"kafka node {node_id} did not answer metadata listing all"
                        f" {self.size} brokers within {timeout:.0f} s (it lists {seen});"
                        f" see {node.log_file}")
                time.sleep(0.25)

    def stop(self) -> None:
        """Stop every node: SIGTERM (a controlled shutdown), SIGKILL after 20 s."""
        for node in self.nodes.values():
            if node.running():
                assert node.proc is not None
                if node.paused:
                    node.proc.send_signal(signal.SIGCONT)
                    node.paused = False
                node.proc.terminate()
        deadline = time.monotonic() + 20
        for node in self.nodes.values():
            proc = node.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            node.proc = None
        atexit.unregister(self.stop)

    # -- ACLs ----------------------------------------------------------------------

    def grant(self, principal: str, operations: list[str], *, topic: str | None = None,
              group: str | None = None, cluster: bool = False) -> None:
        """Allow ``principal`` (``User:<name>``) ``operations`` on a topic, a consumer
        group or the cluster (LITERAL names), with Kafka's own ``kafka-acls`` tool
        (``AclCommand``) over the PLAINTEXT listener, whose principal is a super user."""
        if self._jars is None:
            raise RuntimeError("start the cluster first")
        resource = (["--topic", topic] if topic is not None else
                    ["--group", group] if group is not None else ["--cluster"])
        if (topic is None) + (group is None) + (not cluster) != 2:
            raise ValueError("grant on one of topic, group or cluster")
        args = ["--bootstrap-server", self.bootstrap, "--add", "--allow-principal", principal,
                *resource]
        for operation in operations:
            args += ["--operation", operation]
        done = subprocess.run(self._java(ACL_TOOL, *args), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-acls failed (exit {done.returncode}):"
                               f" {done.stdout[-2000:]} {done.stderr[-2000:]}")

    # -- faults --------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, its log as the kill left it."""
        node = self.nodes[node_id]
        if node.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                node.proc.kill()
            node.proc.wait(10)
            node.proc = None
        node.paused = False

    def restart(self, node_id: int, timeout: float = 60.0) -> None:
        """Start a killed node again (or stop a running one first), on its own data."""
        node = self.nodes[node_id]
        if node.running():
            assert node.proc is not None
            node.proc.terminate()
            try:
                node.proc.wait(20)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)
        self._spawn(node)
        self.wait_ready(timeout, nodes=[node_id])

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: it holds its connections but answers nothing."""
        node = self.nodes[node_id]
        assert node.proc is not None and node.running(), f"node {node_id} is not running"
        node.proc.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert node.proc is not None and node.running(), f"node {node_id} is not running"
        node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    # -- metadata ------------------------------------------------------------------

    def live_bootstrap(self) -> str:
        """The PLAINTEXT listeners of the nodes running and not paused."""
        return ",".join(n.bootstrap for n in self.nodes.values() if n.running() and not n.paused)

    async def leader(self, topic: str, partition: int, timeout: float = 30.0) -> int:
        """The node id leading ``topic``/``partition`` now, asked of the live nodes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            partitions = await partition_metadata(self.live_bootstrap(), topic)
            leader = partitions.get(partition, PartitionInfo(-1, (), ())).leader
            if leader >= 0:
                return leader
            if loop.time() > deadline:
                raise TimeoutError(f"{topic}/{partition} has no leader after {timeout} s")
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class PartitionInfo:
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def _brokers_seen(bootstrap: str) -> set[int] | None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3_000)
    try:
        await asyncio.wait_for(client.bootstrap(), 5)
        return {broker.nodeId for broker in client.cluster.brokers()}
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        await client.close()


async def partition_metadata(bootstrap: str, topic: str) -> dict[int, PartitionInfo]:
    """Leader, replicas and in-sync replicas of every partition of ``topic``."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    try:
        await client.bootstrap()
        client.add_topic(topic)
        await client.force_metadata_update()
        # A topic just created reaches every broker's metadata a moment later: the
        # broker asked may not know it yet (it said "not found" once in CI).
        for _ in range(50):
            if client.cluster.partitions_for_topic(topic):
                break
            await asyncio.sleep(0.2)
            await client.force_metadata_update()
        found: dict[int, PartitionInfo] = {}
        for partition in client.cluster.partitions_for_topic(topic) or ():
            tp = TopicPartition(topic, partition)
            leader = client.cluster.leader_for_partition(tp)
            meta = client.cluster._partitions[topic][partition]  # replicas, isr: no accessor
            found[partition] = PartitionInfo(
                leader if leader is not None else -1, tuple(meta.replicas), tuple(meta.isr))
        return found
    finally:
        await client.close()
