"""The chaos harness: fault injection with nothing lost, doubled or diverged (OWN-02, OWN-05).

Run with ``python -m ops.chaos`` (``ops.chaos.cli``); the two-replica run
(``run_two_replicas``) and the soak run (``run_soak``) share its services helper
(``services``) and its replicas.

The run owns an embedded PostgreSQL and broker and runs the daemon as
subprocesses against them (configured, so the daemons start nothing). A
driver makes changes in both stores — creates, updates, bulk updates and
concurrent edits of both sides of linked pairs, each with a value never used
before so no edit is a no-op — and keeps a model: the newest edit of every
field. Meanwhile, at random points, it kills the daemon with SIGKILL and
restarts it, freezes it with SIGSTOP beyond the consumer session timeout
while a second replica takes over (a zombie consumer that then wakes up),
restarts the broker (it comes back empty) and PostgreSQL, and kills a daemon
whose relay is in the middle of a batch (the broker frozen with SIGSTOP while it
sends, then SIGKILL: from outside, no switch in the product). It also switches the
integration to one-way CRM -> desk mid-stream and back (``mode_switches``):
between two quiescent points the driver makes desk updates that the CRM never
gets and creates records on the CRM only, and the model marks those desk edits
as one-way; a SIGKILL follows the switch back. A replica that dies on
its own (at start-up or later) is restarted and counted (``crashes_restarted``),
never the end of the run. At the end it waits for quiescence, checks the stores
against the model, and runs a dry-run rebuild of every projection
(what ``syncd replay --projection all --dry-run`` does): the rows it would change are
``rebuild_changes``, which must be 0. A run always ends with its figures; one
that could not finish says why in ``aborted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg

from daemon.runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

FIELDS = ("first_name", "phone", "mobile")
SESSION_TIMEOUT_MS = 6000
ACTOR = "chaos"
# The faults, in turn. "one_way" ends with a SIGKILL (counted in ``kills``), so the
# number of kills in a run is what it was before that fault existed.
FAULTS = ("one_way", "broker", "kill", "postgres", "kill", "relay", "kill", "zombie",
          "kill", "kill")
CLUSTER_FAULTS = ("broker", "kill", "one_way", "broker", "kill", "postgres", "broker", "kill",
                  "relay", "broker", "kill", "zombie")
"""On a Kafka cluster (``run_chaos(cluster=…)``) broker faults come more often, each
the next of ``BROKER_FAULTS``."""
BROKER_FAULTS = ("leader", "two_down", "paused", "rolling")
"""The partition leader SIGKILLed and restarted; two brokers killed (one in-sync replica
left: producers wait for ``min.insync.replicas``), then restarted; a broker SIGSTOPped
past its session timeout; every broker restarted one after the other."""


class ClusterControl(Protocol):
    """A Kafka cluster a chaos run may break (``tests/support/kafka_cluster.py``'s)."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def nodes(self) -> Mapping[int, Any]: ...

    def kill(self, node_id: int) -> None: ...

    def restart(self, node_id: int, timeout: float = 60.0) -> None: ...

    def pause(self, node_id: int) -> None: ...

    def resume(self, node_id: int) -> None: ...

    async def leader(self, topic: str, partition: int, timeout: float = 30.0) -> int: ...


@dataclass
class Figures:
    changes: int = 0
    events_expected: int = 0
    kills: int = 0
    zombies: int = 0
    broker_restarts: int = 0
    postgres_restarts: int = 0
    relay_kills: int = 0
    rolling_restarts: int = 0  # on a cluster: every broker restarted, one after the other
    mode_switches: int = 0  # sync type changes, two per one-way fault (there and back)
    crashes_restarted: int = 0
    lost: int = 0
    duplicated: int = 0
    diverged: int = 0
    duplicate_links: int = 0
    outbox_left: int = 0
    unexpected_failures: int = 0
    history_mismatch: int = 0
    rebuild_changes: int | None = None  # None: the dry-run rebuild did not run
    aborted: str = ""  # why the run could not finish, if it could not
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.diverged or self.duplicate_links
                    or self.outbox_left or self.unexpected_failures or self.history_mismatch
                    or self.aborted) and self.rebuild_changes == 0

    def problem(self, text: str, *, limit: int = 20) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)


class Replica:
    """One daemon subprocess on the shared, configured services."""

    def __init__(self, name: str, root: Path, env: dict[str, str]) -> None:
        self.name = name
        self.data_dir = root / name
        self.env = env | {"SYNCD_DATA_DIR": str(self.data_dir),
                          "SYNCD_HTTP_LISTEN": f"127.0.0.1:{free_port()}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **extra: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "daemon.log", "ab")  # noqa: SIM115 - the child's stdout
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"],
                                     env=self.env | extra, stdout=log, stderr=log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_log_line(self) -> str:
        try:
            lines = (self.data_dir / "daemon.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def restart_crashed(self, figures: Figures) -> None:
        """Start again a replica that died on its own; count it."""
        code = self.proc.returncode if self.proc is not None else None
        figures.crashes_restarted += 1
        figures.problem(f"{self.name} exited with {code} (restarted): {self.last_log_line()}")
        self.start()

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# Settings of the replicas of the runs that inject faults: a short drain on SIGTERM and a
# short consumer session, so a SIGSTOPped replica's partitions move within seconds.
FAULT_SETTINGS = {"SYNCD_SHUTDOWN_DEADLINE": "5",
                  "SYNCD_CONSUMER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)}


@dataclass
class Services:
    """An embedded PostgreSQL and broker of a run, and the environment of its replicas
    (configured on them, so the daemons start nothing of their own)."""

    root: Path
    postgres: EmbeddedPostgres
    broker: EmbeddedBroker | None
    """None when the run uses a Kafka cluster of its own (``services(kafka=…)``)."""
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)

    def replica(self, name: str) -> Replica:
        """A daemon subprocess on these services (not started); stopped at the end."""
        replica = Replica(name, self.root, self.env)
        self.replicas.append(replica)
        return replica


@contextlib.asynccontextmanager
async def services(root: Path, name: str, settings: Mapping[str, str] | None = None, *,
                   kafka: str | None = None) -> AsyncIterator[Services]:
    """Start PostgreSQL and the broker under ``root / "services"`` (no broker with
    ``kafka``, the bootstrap servers of a Kafka cluster to run on instead); yield them
    with the replicas' environment: this process's, less any ``SYNCD_*``, plus the
    services' addresses, topic prefix and group ``name``, JSON logs and ``settings``.
    At the end every replica made with ``Services.replica`` is stopped, then the broker
    and PostgreSQL."""
    postgres = EmbeddedPostgres(root / "services")
    broker = None if kafka else EmbeddedBroker(root / "services")
    await asyncio.to_thread(postgres.start)
    try:
        if broker is not None:
            await asyncio.to_thread(broker.start)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")} | {
                "SYNCD_DATABASE_URL": postgres.dsn,
                "SYNCD_KAFKA_BOOTSTRAP": kafka or (broker.bootstrap if broker else ""),
                "SYNCD_TOPIC_PREFIX": name, "SYNCD_GROUP_ID": name,
                "SYNCD_LOG_FORMAT": "json", **(settings or {})}
            running = Services(root=root, postgres=postgres, broker=broker, env=env)
            try:
                yield running
            finally:
                for replica in running.replicas:
                    replica.stop()
        finally:
            if broker is not None:
                await asyncio.to_thread(broker.stop)
    finally:
        await asyncio.to_thread(postgres.stop)


class Driver:
    """Makes changes by people in both stores and keeps the model of what must result."""

    def __init__(self, conn: asyncpg.Connection, rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self.counter = 0
        self.created: dict[str, list[int]] = {"desk": [], "crm": []}
        self.values: dict[tuple[str, int], dict[str, str]] = {}  # the last value per field
        self.events = 0
        # One-way CRM -> desk mode (SYNC-02): desk edits are never applied to the CRM,
        # and records are created on the CRM only.
        self.one_way_mode = False
        # (desk id, field) -> the desk's newest two-way value of a field whose newer
        # edits on the desk were made in one-way mode; a two-way desk edit of the
        # field removes it.
        self.one_way: dict[tuple[int, str], str] = {}

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}{self.counter}"

    def set_desk(self, desk_id: int, name: str, value: str) -> None:
        """Record a desk edit in the model, flagged one-way in one-way mode."""
        values = self.values[("desk", desk_id)]
        if self.one_way_mode:
            self.one_way.setdefault((desk_id, name), values[name])
        else:
            self.one_way.pop((desk_id, name), None)
        values[name] = value

    def two_way_values(self, desk_id: int) -> dict[str, str] | None:
        """The desk record's values as far as the CRM may know them: its one-way edits
        replaced by the newest two-way value of their field."""
        values = self.values.get(("desk", desk_id))
        if values is None:
            return None
        return {name: self.one_way.get((desk_id, name), value) for name, value in values.items()}

    def set_value(self, side: str, record_id: int, name: str, value: str) -> None:
        if side == "desk":
            self.set_desk(record_id, name, value)
        else:
            self.values[(side, record_id)][name] = value

    async def create(self, side: str) -> None:
        if side == "desk" and self.one_way_mode:
            side = "crm"  # a desk record created in one-way mode never reaches the CRM
        values = {f: self.fresh(f[:1]) for f in FIELDS}
        record_id = await self.conn.fetchval(
            f"INSERT INTO {side}.contacts (first_name, last_name, phone, mobile, email)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            values["first_name"], "Chaos", values["phone"], values["mobile"],
            f"{self.fresh('m')}@{side}.chaos")
        self.created[side].append(record_id)
        self.values[(side, record_id)] = values
        self.events += 1

    async def update(self, side: str) -> None:
        if not self.created[side]:
            return await self.create(side)
        record_id = self.rng.choice(self.created[side])
        name = self.rng.choice(FIELDS)
        value = self.fresh(name[:1])
        await self.conn.execute(f"UPDATE {side}.contacts SET {name} = $1 WHERE id = $2",
                                value, record_id)
        self.set_value(side, record_id, name, value)
        self.events += 1
        return None

    async def bulk_update(self, side: str) -> None:
        tag = self.fresh("b")
        rows = await self.conn.fetch(
            f"UPDATE {side}.contacts SET mobile = $1 || '-' || id"
            f" WHERE id % 5 = $2 AND id = ANY($3::bigint[]) RETURNING id",
            tag, self.rng.randrange(5), self.created[side])
        for row in rows:
            self.set_value(side, row["id"], "mobile", f"{tag}-{row['id']}")
        self.events += len(rows)

    async def concurrent_edit(self) -> None:
        """Both sides of one linked pair, back to back, on the same field."""
        pair = await self.conn.fetchrow(
            "SELECT desk_id::bigint AS d, crm_id::bigint AS c FROM sync.links"
            " WHERE module = 'contacts' ORDER BY random() LIMIT 1")
        if pair is None:
            return
        name = self.rng.choice(FIELDS)
        desk_key, crm_key = ("desk", pair["d"]), ("crm", pair["c"])
        if desk_key not in self.values and crm_key not in self.values:
            return
        # A counterpart made by the sync holds what its pair holds, as far as the
        # model goes: the newest edit of each field is taken over both sides (a
        # CRM counterpart never got the desk's one-way edits).
        self.values.setdefault(desk_key, dict(self.values.get(crm_key, {})))
        self.values.setdefault(crm_key, dict(self.two_way_values(pair["d"]) or {}))
        first, second = self.fresh(name[:1]), self.fresh(name[:1])
        await self.conn.execute(f"UPDATE desk.contacts SET {name} = $1 WHERE id = $2",
                                first, pair["d"])
        await self.conn.execute(f"UPDATE crm.contacts SET {name} = $1 WHERE id = $2",
                                second, pair["c"])
        self.set_desk(pair["d"], name, first)
        self.values[("crm", pair["c"])][name] = second
        self.events += 2

    async def step(self) -> None:
        roll = self.rng.random()
        side = self.rng.choice(["desk", "crm"])
        if roll < 0.3:
            await self.create(side)
        elif roll < 0.85:
            await self.update(side)
        elif roll < 0.9:
            await self.bulk_update(side)
        else:
            await self.concurrent_edit()


async def _step(driver: Driver, dsn: str) -> None:
    try:
        await driver.step()
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
        driver.conn = await _connect(dsn)


async def _choose_sync_type(dsn: str, sync_type: str, *, attempts: int = 20) -> None:
    """Choose the sync type as an administrator would (setting the integration up
    first if nobody has: until then nothing is applied), through the integration
    store on psycopg: retried while
    the database is away (a restart), and idempotent, so a retry changes nothing
    that a lost answer had already changed."""
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from adapters.integration_store import IntegrationService

    last: BaseException | None = None
    for attempt in range(attempts):
        service: IntegrationService | None = None
        try:
            service = await IntegrationService.open(dsn)
            if await service.current() is None:
                await service.set_up("chaos-desk", "chaos-crm", by=ACTOR)
            await service.choose_sync_type(sync_type, by=ACTOR)
            return
        except (OSError, psycopg.Error, PersistenceError) as err:
            last = err
            await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        finally:
            if service is not None:
                with contextlib.suppress(Exception):
                    await service.close()
    raise RuntimeError(f"could not choose sync type {sync_type}: {type(last).__name__}: {last}")


async def _config_applied(replica: Replica, offset: int, direction: str,
                          timeout: float = 2.0) -> None:
    """Wait until ``replica`` logs that it applied ``direction`` after ``offset`` in its
    log (its next batch runs with it), or ``timeout`` seconds: replicas poll the
    integration twice a second, and one that starts meanwhile reads it at start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in _log_since(replica, offset).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("direction") == direction \
                        and entry.get("event") == "integration_config_applied":
                    return
        await asyncio.sleep(0.1)


def _log_size(replica: Replica) -> int:
    try:
        return (replica.data_dir / "daemon.log").stat().st_size
    except OSError:
        return 0


def _log_since(replica: Replica, offset: int) -> bytes:
    try:
        with (replica.data_dir / "daemon.log").open("rb") as log:
            log.seek(offset)
            return log.read()
    except OSError:
        return b""


async def _switch(replica: Replica, dsn: str, sync_type: str, figures: Figures) -> None:
    offset = _log_size(replica)
    await _choose_sync_type(dsn, sync_type)
    figures.mode_switches += 1
    await _config_applied(replica, offset, sync_type)


async def _one_way(driver: Driver, replica: Replica, dsn: str, figures: Figures, *,
                   steps: int) -> None:
    """Switch to one-way CRM -> desk mid-stream, make changes, switch back, and SIGKILL
    the replica (it reads the sync type again at start-up). Quiescent before each
    switch, so every change is applied in the mode it was made in and the model stays
    exact; the kill comes last so that, as after any kill, the driver goes on while the
    group rebalances."""
    await _quiesce(driver.conn, replica, figures)
    await _switch(replica, dsn, "crm_to_desk", figures)
    driver.one_way_mode = True
    try:
        for _ in range(steps):
            await _step(driver, dsn)
            figures.changes += 1
        await _quiesce(driver.conn, replica, figures)
    finally:
        driver.one_way_mode = False
    await _switch(replica, dsn, "two_way", figures)
    replica.kill()
    figures.kills += 1
    replica.start()


async def _connect(dsn: str) -> asyncpg.Connection:
    for _ in range(100):
        try:
            return await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.2)
    raise RuntimeError("PostgreSQL did not come back")


async def _wait_ready(replica: Replica, figures: Figures, timeout: float = 90,
                      restarts: int = 5) -> None:
    """Wait until ``replica`` answers /readyz 200; restart it (and count it) if it dies
    meanwhile, up to ``restarts`` times."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            runtime = replica.data_dir / "runtime.json"
            if runtime.exists():
                with contextlib.suppress(OSError, ValueError, KeyError, aiohttp.ClientError):
                    address = json.loads(runtime.read_text())["http"]
                    async with session.get(f"http://{address}/readyz") as response:
                        if response.status == 200:
                            return
            if not replica.alive():
                if restarts <= 0:
                    code = replica.proc.returncode if replica.proc else None
                    raise RuntimeError(f"{replica.name} keeps exiting (last status {code})")
                restarts -= 1
                replica.restart_crashed(figures)
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{replica.name} not ready in {timeout:.0f} s")


async def _rebuild_check(dsn: str, figures: Figures, echo: Any) -> None:
    """A dry-run rebuild of every projection: what it would change is drift between a
    live projection and its event log (OWN-03), counted in ``rebuild_changes``."""
    from daemon.cli.replay import dry_run_all, render
    from projections.replay import ReplayError

    try:
        reports = await dry_run_all(dsn)
    except (ReplayError, OSError, asyncpg.PostgresError) as err:
        figures.problem(f"dry-run rebuild did not run: {type(err).__name__}: {err}")
        return
    figures.rebuild_changes = sum(report.changes for report in reports)
    for report in reports:
        if report.changes:
            text = render(report)
            figures.problem(f"dry-run rebuild would change {report.changes} row(s):\n{text}")
            echo(text)


async def run_chaos(*, changes: int, kills: int, seed: int, root: Path,
                    echo: Any = print, cluster: ClusterControl | None = None) -> Figures:
    """The chaos run; with ``cluster``, on that Kafka cluster, whose brokers it breaks
    (``BROKER_FAULTS``) besides the daemon's faults."""
    rng = random.Random(seed)
    figures = Figures()
    started = time.monotonic()
    name = "chaos" if cluster is None else f"chaos-{uuid.uuid4().hex[:8]}"
    async with services(root, name, {
            "SYNCD_PARTITIONS": "4", **FAULT_SETTINGS,
            "SYNCD_RELAY_RESEND_AFTER": "5", "SYNCD_RELAY_POLL_INTERVAL": "0.2"},
            kafka=None if cluster is None else cluster.bootstrap) as stack:
        a, b = stack.replica("replica-a"), stack.replica("replica-b")
        breaker = _EmbeddedBroker(stack.broker) if cluster is None else _Cluster(
            cluster, f"{name}.events", rng)
        await _to_the_end("chaos run", figures, echo, _chaos(
            a, b, stack.postgres, breaker, figures, rng, changes=changes, kills=kills,
            echo=echo))
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


async def _to_the_end(what: str, figures: Figures, echo: Any,
                      run: Coroutine[Any, Any, None]) -> None:
    """Run a harness; whatever happens to it, the run ends with its figures."""
    try:
        await run
    except Exception as err:
        figures.aborted = f"{type(err).__name__}: {err}"
        echo(f"{what} aborted: {figures.aborted}")


class _EmbeddedBroker:
    """The chaos run's broker faults on its embedded broker."""

    faults = FAULTS

    def __init__(self, broker: EmbeddedBroker | None) -> None:
        assert broker is not None
        self.broker = broker

    async def fault(self, figures: Figures, echo: Any) -> None:
        await asyncio.to_thread(self.broker.restart)
        figures.broker_restarts += 1

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        with _frozen(self.broker):
            yield


class _Cluster:
    """The chaos run's broker faults on a Kafka cluster, each the next of BROKER_FAULTS."""

    faults = CLUSTER_FAULTS

    def __init__(self, cluster: ClusterControl, topic: str, rng: random.Random) -> None:
        self.cluster, self.topic, self.rng = cluster, topic, rng
        self.done = 0

    async def fault(self, figures: Figures, echo: Any) -> None:
        kind = BROKER_FAULTS[self.done % len(BROKER_FAULTS)]
        self.done += 1
        nodes = sorted(self.cluster.nodes)
        if kind == "leader":
            leader = await self.cluster.leader(self.topic, 0)
            await self._down(figures, leader)
            await asyncio.sleep(2)
            await asyncio.to_thread(self.cluster.restart, leader)
        elif kind == "two_down":
            first, second = self.rng.sample(nodes, 2)
            await self._down(figures, first)
            await asyncio.sleep(1)
            await self._down(figures, second)  # one in-sync replica left: producers wait
            await asyncio.sleep(3)
            # Together: each is ready once the metadata lists every broker again.
            await asyncio.gather(asyncio.to_thread(self.cluster.restart, first),
                                 asyncio.to_thread(self.cluster.restart, second))
        elif kind == "paused":
            node = self.rng.choice(nodes)
            self.cluster.pause(node)
            figures.broker_restarts += 1
            await asyncio.sleep(6)  # past the brokers' session timeout
            self.cluster.resume(node)
        else:
            for node in nodes:
                await asyncio.to_thread(self.cluster.restart, node)
                figures.broker_restarts += 1
            figures.rolling_restarts += 1
        echo(f"broker fault {kind} done")

    async def _down(self, figures: Figures, node: int) -> None:
        await asyncio.to_thread(self.cluster.kill, node)
        figures.broker_restarts += 1

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        nodes = sorted(self.cluster.nodes)
        for node in nodes:
            self.cluster.pause(node)
        try:
            yield
        finally:
            for node in nodes:
                self.cluster.resume(node)


async def _chaos(a: Replica, b: Replica, postgres: EmbeddedPostgres,
                 broker: _EmbeddedBroker | _Cluster, figures: Figures, rng: random.Random, *,
                 changes: int, kills: int, echo: Any) -> None:
    a.start()
    await _wait_ready(a, figures)
    # Set up as an administrator would, two-way: what the one-way faults switch.
    await _choose_sync_type(postgres.dsn, "two_way")
    driver = Driver(await _connect(postgres.dsn), rng)
    try:
        done_faults = 0
        per_fault = max(1, changes // (kills + 1))
        while figures.changes < changes:
            for _ in range(min(per_fault, changes - figures.changes)):
                await _step(driver, postgres.dsn)
                figures.changes += 1
            if done_faults >= kills or figures.changes >= changes:
                continue
            done_faults += 1
            fault = broker.faults[(done_faults - 1) % len(broker.faults)]
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            if fault == "one_way":
                await _one_way(driver, a, postgres.dsn, figures, steps=per_fault // 2)
            elif fault == "kill":
                a.kill()
                figures.kills += 1
                a.start()
            elif fault == "zombie":
                b.start()
                await _wait_ready(b, figures)
                a.signal(signal.SIGSTOP)
                await asyncio.sleep(SESSION_TIMEOUT_MS / 1000 + 4)  # b takes over
                for _ in range(per_fault // 2):
                    await driver.step()
                    figures.changes += 1
                a.signal(signal.SIGCONT)  # a wakes up, fenced by the stored offsets
                figures.zombies += 1
                await asyncio.sleep(2)
                b.stop()
            elif fault == "broker":
                await broker.fault(figures, echo)
            elif fault == "postgres":
                await driver.conn.close()
                await asyncio.to_thread(postgres.restart)
                figures.postgres_restarts += 1
                driver.conn = await _connect(postgres.dsn)
            elif fault == "relay":
                # The relay killed halfway through a batch, from outside: a bulk update
                # for it to send, the broker frozen while it sends (part of the batch
                # produced, the rest in flight), then SIGKILL.
                await driver.bulk_update("desk")
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                with broker.frozen():
                    await asyncio.sleep(0.5)
                    a.kill()
                figures.relay_kills += 1
                a.start()
            if not a.alive():
                a.restart_crashed(figures)
        if not a.alive():
            a.restart_crashed(figures)
        await _wait_ready(a, figures)
        echo(f"driver done: {figures.changes} changes, waiting for quiescence")
        figures.events_expected = driver.events
        await _quiesce(driver.conn, a, figures)
        await _check(driver.conn, driver, figures)
        await _rebuild_check(postgres.dsn, figures, echo)
    finally:
        with contextlib.suppress(Exception):
            await driver.conn.close()


@contextlib.contextmanager
def _frozen(broker: EmbeddedBroker) -> Iterator[None]:
    """The embedded broker stopped (SIGSTOP) for the block, then resumed."""
    pid = int(broker.pid_file.read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _quiesce(conn: asyncpg.Connection, replica: Replica, figures: Figures,
                   timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM desk.outbox) + (SELECT count(*) FROM crm.outbox)"
            " + (SELECT count(*) FROM sync.deferred)")
        if left == 0:
            return
        if not replica.alive():
            replica.restart_crashed(figures)
        await asyncio.sleep(0.5)
    figures.outbox_left = int(await conn.fetchval(
        "SELECT (SELECT count(*) FROM desk.outbox) + (SELECT count(*) FROM crm.outbox)"))
    figures.problem(f"not quiescent after {timeout:.0f} s: {figures.outbox_left} left")


async def _check(conn: asyncpg.Connection, driver: Driver, figures: Figures) -> None:
    logged = await conn.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE origin = 'user' AND module = 'contacts'")
    figures.lost = max(0, driver.events - logged)
    figures.duplicated = max(0, logged - driver.events)
    figures.duplicate_links = int(await conn.fetchval(
        "SELECT count(*) - count(DISTINCT crm_id) FROM sync.links WHERE module = 'contacts'"))
    links = await conn.fetch("SELECT desk_id::bigint AS d, crm_id::bigint AS c"
                             " FROM sync.links WHERE module = 'contacts'")
    desk = {r["id"]: r for r in await conn.fetch("SELECT * FROM desk.contacts")}
    crm = {r["id"]: r for r in await conn.fetch("SELECT * FROM crm.contacts")}
    creates = len(driver.created["desk"]) + len(driver.created["crm"])
    if len(links) != creates:
        figures.problems.append(f"{len(links)} links for {creates} created records")
        figures.diverged += abs(len(links) - creates)
    for link in links:
        d, c = desk.get(link["d"]), crm.get(link["c"])
        if d is None or c is None:
            figures.diverged += 1
            continue
        actual_d = {f: d[f] for f in FIELDS}
        actual_c = {f: c[f] for f in FIELDS}
        wrong = _pair_mismatches(driver, link["d"], link["c"], actual_d, actual_c)
        if wrong:
            figures.diverged += 1
            if len(figures.problems) < 5:
                figures.problems.append(
                    f"pair desk {link['d']} / crm {link['c']}: desk {actual_d},"
                    f" crm {actual_c}, model {_model(driver, link['d'], link['c'])}"
                    f" ({', '.join(wrong)})")
    figures.unexpected_failures = int(await conn.fetchval(
        "SELECT count(*) FROM sync.failures WHERE status = 'open'"))
    added = {r["direction"]: r["n"] for r in await conn.fetch(
        "SELECT direction, sum(added)::int AS n FROM sync.history GROUP BY 1")}
    if added.get("desk_to_crm", 0) != len(driver.created["desk"]) or \
            added.get("crm_to_desk", 0) != len(driver.created["crm"]):
        figures.history_mismatch = 1
        figures.problems.append(f"history added {added} for creates "
                                f"{ {k: len(v) for k, v in driver.created.items()} }")


def _expected(driver: Driver, desk_id: int, crm_id: int) -> dict[str, str] | None:
    """The model's values for a pair: the newest edit of each field on either side.

    Values are unique and carry their order in their number, so the newest edit of
    a field is the value with the highest counter among both sides' last values."""
    sides = [driver.values.get(("desk", desk_id)), driver.values.get(("crm", crm_id))]
    known = [s for s in sides if s is not None]
    if not known:
        return None
    out = {}
    for name in FIELDS:
        candidates = [s[name] for s in known]
        out[name] = max(candidates, key=_order)
    return out


def _model(driver: Driver, desk_id: int,
           crm_id: int) -> dict[str, tuple[str, str]] | None:
    """Per field of a pair: the newest edit on either side, and the newest edit that is
    not a one-way desk edit (CRM edits and two-way desk edits), the one the CRM holds.
    They differ only where the newest edit is a desk edit made in one-way mode."""
    newest = _expected(driver, desk_id, crm_id)
    if newest is None:
        return None
    known = [s for s in (driver.two_way_values(desk_id), driver.values.get(("crm", crm_id)))
             if s is not None]
    return {name: (newest[name], max((s[name] for s in known), key=_order))
            for name in FIELDS}


def _pair_mismatches(driver: Driver, desk_id: int, crm_id: int, desk: dict[str, Any],
                     crm: dict[str, Any]) -> list[str]:
    """The fields of a linked pair that hold what the model does not allow.

    Where the newest edit of a field is not a one-way desk edit, both sides hold it.
    Where it is, the CRM holds the newest of the other edits (it never got the one-way
    one), and the desk holds either: its one-way edit stays until the CRM's next
    change of the record writes the CRM's values to it (SYNC-02)."""
    model = _model(driver, desk_id, crm_id)
    wrong = []
    for name in FIELDS:
        if model is None:  # neither side was made by the driver: they agree
            ok = desk[name] == crm[name]
        else:
            newest, synced = model[name]
            if newest == synced:
                ok = desk[name] == crm[name] == newest
            else:
                ok = crm[name] == synced and desk[name] in (newest, synced)
        if not ok:
            wrong.append(name)
    return wrong


def _order(value: str) -> int:
    head = value.split("-")[0]
    return int("".join(ch for ch in head if ch.isdigit()) or 0)


async def run_two_replicas(*, changes: int, root: Path, seed: int = 1,
                           echo: Any = print, kafka: str | None = None) -> Figures:
    """OWN-05: two daemons in one group share the partitions; one is killed midway and
    the other carries on from the stored offsets. Every change applied exactly once.
    ``kafka``: on that cluster (bootstrap servers) instead of an embedded broker; the
    run's topic and group names are then unique to it."""
    rng = random.Random(seed)
    figures = Figures()
    started = time.monotonic()
    name = "pair" if kafka is None else f"pair-{uuid.uuid4().hex[:8]}"
    async with services(root, name, {"SYNCD_PARTITIONS": "6", **FAULT_SETTINGS},
                        kafka=kafka) as stack:
        a, b = stack.replica("replica-a"), stack.replica("replica-b")
        await _to_the_end("two-replica run", figures, echo, _two_replicas(
            a, b, stack.postgres, figures, rng, changes=changes, echo=echo))
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


async def _two_replicas(a: Replica, b: Replica, postgres: EmbeddedPostgres, figures: Figures,
                        rng: random.Random, *, changes: int, echo: Any) -> None:
    a.start()
    await _wait_ready(a, figures)
    await _choose_sync_type(postgres.dsn, "two_way")  # nothing is applied before
    b.start()
    await _wait_ready(b, figures)
    conn = await _connect(postgres.dsn)
    try:
        driver = Driver(conn, rng)
        chunk = max(1, changes // 20)
        while figures.changes < changes:
            size = min(chunk, changes - figures.changes)
            side = rng.choice(["desk", "crm"])
            if rng.random() < 0.6 or not driver.created[side]:
                rows = await conn.fetch(
                    f"INSERT INTO {side}.contacts (first_name, last_name, phone, mobile, email)"
                    " SELECT 'f', 'Pair', 'p', 'm', $1 || '-' || g || '@pair.example'"
                    " FROM generate_series(1, $2) g RETURNING id",
                    driver.fresh(side), size)
                for row in rows:
                    driver.created[side].append(row["id"])
                    driver.values[(side, row["id"])] = {"first_name": "f", "phone": "p",
                                                        "mobile": "m"}
                driver.events += len(rows)
                figures.changes += len(rows)
            else:
                before = driver.events
                await driver.bulk_update(side)
                figures.changes += driver.events - before or 1
            if figures.kills == 0 and figures.changes >= changes // 2:
                b.kill()  # one replica dies midway; the other takes its partitions
                figures.kills += 1
            await asyncio.sleep(0.05)
        figures.events_expected = driver.events
        echo(f"driver done: {driver.events} events, waiting for quiescence")
        await _quiesce(conn, a, figures, timeout=300)
        await _check(conn, driver, figures)
        await _rebuild_check(postgres.dsn, figures, echo)
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


async def run_soak(*, rate: int, seconds: int, root: Path, sample_every: float = 10.0,
                   echo: Any = print) -> dict[str, Any]:
    """A steady load for a long time; resident memory and consumer lag must stay flat."""
    import psutil

    samples: list[dict[str, float]] = []
    async with services(root, "soak") as stack:
        postgres, replica = stack.postgres, stack.replica("replica-a")
        replica.start()
        await _wait_ready(replica, Figures())
        await _choose_sync_type(postgres.dsn, "two_way")  # nothing is applied before
        assert replica.proc is not None
        process = psutil.Process(replica.proc.pid)
        address = json.loads((replica.data_dir / "runtime.json").read_text())["http"]
        conn = await _connect(postgres.dsn)
        await conn.execute("INSERT INTO desk.contacts (last_name, email) SELECT 'Soak', 's'"
                           " || g || '@soak.example' FROM generate_series(1, 5000) g")
        tick, made, started = 0.1, 0, time.monotonic()
        next_sample = started + sample_every
        async with aiohttp.ClientSession() as session:
            while (now := time.monotonic()) - started < seconds:
                due = int((now - started) * rate) - made
                if due > 0:  # updates spread over the rows, capped per tick
                    await conn.execute(
                        "UPDATE desk.contacts SET phone = $1 || '-' || id"
                        " WHERE id IN (SELECT id FROM desk.contacts ORDER BY random() LIMIT $2)",
                        str(made), min(due, rate))
                    made += min(due, rate)
                if now >= next_sample:
                    next_sample += sample_every
                    async with session.get(f"http://{address}/metrics") as response:
                        text = await response.text()
                    lag = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("syncd_consumer_lag_messages{"))
                    backlog = await conn.fetchval(
                        "SELECT (SELECT count(*) FROM desk.outbox)"
                        " + (SELECT count(*) FROM crm.outbox)")
                    sample = {"t": round(now - started), "rss_mib": round(
                        process.memory_info().rss / 2**20, 1), "lag": lag,
                        "outbox": int(backlog), "changes": made}
                    samples.append(sample)
                    echo(json.dumps(sample))
                await asyncio.sleep(tick)
        await conn.close()
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    return {"rate": rate, "seconds": seconds, "changes": samples[-1]["changes"] if samples else 0,
            "rss_mib_first_quarter": round(mean(first, "rss_mib"), 1),
            "rss_mib_last_quarter": round(mean(last, "rss_mib"), 1),
            "lag_first_quarter": round(mean(first, "lag"), 1),
            "lag_last_quarter": round(mean(last, "lag"), 1),
            "outbox_last_quarter": round(mean(last, "outbox"), 1), "samples": samples}
