"""The daemon process: the HTTP listener first, then the wait for the database and
the broker, then the pipeline (wired by ``daemon.bootstrap``) and the daemon's own
root tasks under one supervisor. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import asyncpg
import psycopg
import structlog
from aiohttp import web
from eventsourcing.persistence import InterfaceError as PersistenceInterfaceError
from eventsourcing.persistence import OperationalError as PersistenceOperationalError

from adapters import metrics
from adapters.command_writer import CommandWriter
from adapters.demo import department_ids, products_department, seed_people
from adapters.demo import seed as seed_demo
from adapters.integration_store import IntegrationService
from adapters.kafka import (
    KafkaRefused,
    broker_reachable,
    broker_unavailable,
    ensure_topics,
    quiet_client_logs,
)
from adapters.migrate import migrate, pending
from adapters.remote_store import RemoteStore
from adapters.store_access import AccessGate
from daemon import bootstrap
from daemon.consumer import ConsumerLoop
from daemon.first_sync import first_sync
from daemon.http.api import ApiContext
from daemon.http.board import BoardContext
from daemon.http.errors import error_body
from daemon.http.server import Handler, ReadinessCheck, build_app, serve, watch_readiness
from daemon.runtime.hosted import hosted_sides, hosted_store
from daemon.runtime.runtime_file import RuntimeInfo, remove_runtime, write_runtime
from daemon.runtime.sdnotify import Notifier
from daemon.runtime.services import Services, open_services
from daemon.runtime.settings import Settings
from daemon.runtime.supervisor import RootTask, supervise
from daemon.runtime.tokens import token_profiles, token_table
from daemon.runtime.waiting import GaveUp, Stopped, wait_for
from daemon.stats import export_stats
from projections.catalog import Side
from projections.config import SyncConfig
from projections.integration import InvalidCommand

log = structlog.get_logger(__name__)

DEMO_ACTOR = "demo-seed"

T = TypeVar("T")


async def create_pool(dsn: str, *, max_size: int = 10,
                      idle_in_transaction_timeout: float = 20.0,
                      connect: bool = True,
                      init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None
                      ) -> asyncpg.Pool:
    """The daemon's asyncpg pool. ``connect=False``: open no connection yet (each
    ``acquire`` connects as needed), so the pool exists while the database is away.
    ``init`` is run on each new connection (the benchmark's statement timings)."""
    # A process frozen in the middle of a batch (SIGSTOP, a stuck host) would keep its
    # row locks for ever and block the replica that took over: PostgreSQL ends such a
    # session instead, and the frozen process finds its batch gone when it wakes.
    pool = await asyncpg.create_pool(dsn, min_size=1 if connect else 0, max_size=max_size,
                                     command_timeout=60, init=cast(Any, init),
                                     server_settings={
                                         "jit": "off", "timezone": "UTC",
                                         "idle_in_transaction_session_timeout":
                                             str(int(idle_in_transaction_timeout * 1000))})
    assert pool is not None
    return pool


_PERMANENT_DATABASE_ERRORS = (asyncpg.InvalidAuthorizationSpecificationError,
                              asyncpg.InvalidCatalogNameError)


def database_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the database is not reachable (yet): worth waiting for.

    Refused or reset connections, a server starting up or shutting down (asyncpg's
    ``CannotConnectNowError``, psycopg's ``AdminShutdown``, also as eventsourcing
    wraps them), too many connections, timeouts. A wrong password or a missing
    database is not: waiting would not bring them.
    """
    if isinstance(err, _PERMANENT_DATABASE_ERRORS):
        return False
    return isinstance(err, (
        OSError, TimeoutError, asyncpg.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError, asyncpg.TooManyConnectionsError,
        psycopg.OperationalError, psycopg.InterfaceError,
        PersistenceOperationalError, PersistenceInterfaceError))


class Startup:
    """What start-up still waits for: ``/readyz`` names it, the API answers 503 until
    everything is there (the listener is up before the database and the broker)."""

    OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self) -> None:
        self.waiting: dict[str, str] = {}  # what -> the reason, while an attempt fails
        self.ready: set[str] = set()  # what start-up has finished with
        self.done = False

    def reason(self, what: str) -> str | None:
        """Why ``what`` is not ready during start-up; None once start-up is past it."""
        if what in self.ready:
            return None
        return self.waiting.get(what, f"start-up is connecting to the {what}")

    @web.middleware
    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.done or request.path in self.OPEN_PATHS:
            return await handler(request)
        waiting = "; ".join(self.waiting.values()) or "connecting to the database and broker"
        return error_body(503, "starting", f"the daemon is starting: {waiting}",
                          headers={"Retry-After": "2"})


READER_POOL_SIZE = 4
"""Connections of the readers' pool (the admin API and the board, its streams'
LISTEN connection included), apart from the batches' pool: a crowd of readers waits
for these and never for a connection the projector needs."""


async def run(settings: Settings, stop: asyncio.Event, *, demo: bool = False,
              remote: Mapping[Side, RemoteStore] | None = None) -> int:
    """Run the daemon until ``stop`` is set or a root task fails; return the exit status.
    ``remote``: sides that are remote stores (``bootstrap.Overrides.remote``).

    The HTTP listener comes up first, then the daemon waits for the database and the
    broker (capped backoff, one log line per attempt, ``/readyz`` naming what is
    missing), for at most ``startup_wait`` seconds, and only then starts its work.
    """
    async with contextlib.AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        pool = await create_pool(services.dsn, connect=False)
        stack.push_async_callback(pool.close)
        readers = await create_pool(services.dsn, max_size=READER_POOL_SIZE, connect=False)
        stack.push_async_callback(readers.close)
        startup = Startup()
        if remote is None:  # they read the daemon's config (its mapping) once it runs
            remote = await stack.enter_async_context(
                hosted_stores(settings, lambda: daemon.read_config()))
        daemon = _Daemon(settings, services, pool, startup, readers=readers, remote=remote)
        await daemon.listen(stack)
        try:
            integration = await daemon.connect(stack, stop, demo=demo)
        except Stopped as err:
            log.info("daemon_stopped_while_starting", waiting_for=err.what)
            return 0
        except GaveUp as err:
            log.error("startup_failed", error=str(err))
            return 1
        except KafkaRefused as err:  # credentials or ACLs: waiting would not help
            log.error("startup_failed", what="broker", error=str(err))
            return 1
        return await daemon.serve(integration, stop)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def hosted_stores(settings: Settings, config: Callable[[], SyncConfig]
                        ) -> AsyncIterator[dict[Side, RemoteStore]]:
    """The sides the settings make hosted stores (``crm_store``, ``desk_store``
    ``zoho``), their clients closed at the end."""
    async with contextlib.AsyncExitStack() as clients:
        stores: dict[Side, RemoteStore] = {}
        for side in hosted_sides(settings):
            stores[side], client = hosted_store(settings, side, config)
            clients.push_async_callback(client.close)
        yield stores


async def _seed_demo(pool: asyncpg.Pool, integration: IntegrationService, *,
                     embedded: bool = True) -> None:
    """Demo stores (unless a side is hosted: ``embedded`` False; its records are its
    own, and the embedded desk's products department is not a department of a hosted
    desk, so products are not synced), and an integration set up the way an
    administrator would."""
    if embedded:
        await seed_demo(pool)
    if await integration.current() is not None:
        return
    support = await products_department(pool) if embedded else None
    try:
        await integration.set_up("demo-desk", "demo-crm", by=DEMO_ACTOR)
        await integration.choose_sync_type("two_way", by=DEMO_ACTOR)
        if support is not None:
            await integration.choose_products_department(support, by=DEMO_ACTOR)
        await seed_people(integration, await department_ids(pool) if embedded else {},
                          by=DEMO_ACTOR)
    except InvalidCommand as err:
        # Another replica set it up meanwhile, or someone deleted it: theirs stands.
        log.warning("demo_integration_skipped", code=err.code, error=str(err))


def _store_state(writer: CommandWriter, gate: AccessGate | None) -> str:
    """What the store's writer does, or why it has not started (its access checks)."""
    return (gate.state() if gate is not None else None) or writer.state()


async def _store_ready(writer: CommandWriter, projector: ConsumerLoop,
                       gate: AccessGate | None) -> str | None:
    checking = None if gate is None else gate.state()
    if checking is not None:
        return checking
    if writer.unavailable is not None:
        return f"unavailable: {writer.unavailable}"
    if projector.store_wait is not None:
        return f"batches wait for it: {projector.store_wait}"
    return None


class _NotOpenYet:
    """Stands for the integration store until start-up has opened it; the start-up
    gate keeps every request that would use it out until then."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the integration store is not open yet ({name})")


class _Daemon:
    """The daemon's parts, wired before any connection so that the HTTP listener
    can answer while start-up waits for the database and the broker."""

    def __init__(self, settings: Settings, services: Services, pool: asyncpg.Pool,
                 startup: Startup, *, readers: asyncpg.Pool,
                 remote: Mapping[Side, RemoteStore]) -> None:
        self.settings = settings
        self.services = services
        self.pool = pool  # the batches': projector, resume drain, stats, start-up
        self.readers = readers  # HTTP handlers' (API and board), see READER_POOL_SIZE
        self.startup = startup
        self.remote = remote
        self.http_address = ""  # host:port, once listening
        # The projection reads the config once per batch; follow() swaps it when any
        # replica changes the integration (OPS-05), so a change applies to the next
        # batch. Until start-up has read it, nothing runs that reads it.
        self.sync_config = SyncConfig()
        # Every projection, in its registry order (projections/registry.py), the
        # consumer loop, the relays and the resume drain: daemon/bootstrap.py.
        self.pipeline = bootstrap.build(settings, services=services, pool=pool,
                                        config=self.read_config,
                                        overrides=bootstrap.Overrides(remote=remote))
        self.projector = self.pipeline.consumer
        self.checks: dict[str, ReadinessCheck] = {
            "database": self.database_ready, "broker": self.broker_ready,
            "consumer": self.consumer_ready}
        for side, writer in self.pipeline.writers.items():
            # A remote store that takes no write until a person acts, by name; or one
            # the batches cannot read.
            self.checks[f"{side}-store"] = functools.partial(
                _store_ready, writer, self.projector, self.pipeline.gates.get(side))
        self.api = ApiContext(
            pool=readers, integration=cast(IntegrationService, _NotOpenYet()),
            tokens=token_table(settings), token_profiles=token_profiles(settings),
            webhook_secrets={k: v.get_secret_value().encode()
                             for k, v in settings.webhook_secrets.items()},
            history_timezone=settings.history_timezone, config=self.read_config,
            zoho_crm_channel_token=None if settings.zoho_crm_channel_token is None
            else settings.zoho_crm_channel_token.get_secret_value().encode(),
            lag=self.projector.lag, last_applied_at=lambda: self.projector.last_applied_at,
            remote_stores=lambda: {side: _store_state(writer, self.pipeline.gates.get(side))
                                   for side, writer in self.pipeline.writers.items()},
            intakes={store.intake.name: store.intake for store in remote.values()
                     if store.intake is not None},
            mapping_checks={side: store.mapping_check for side, store in remote.items()
                            if store.mapping_check is not None})

    def read_config(self) -> SyncConfig:
        return self.sync_config

    def not_applying(self) -> str | None:
        """Why changes are not applied, once start-up has read the integration."""
        return self.sync_config.waiting_for if self.startup.done else None

    def swap_config(self, new: SyncConfig) -> None:
        self.sync_config = new
        metrics.PAUSED.set(1 if new.paused else 0)
        log.info("integration_config_changed", paused=new.paused, active=new.active,
                 direction=new.direction)

    async def database_ready(self) -> str | None:
        waiting = self.startup.reason("database")
        if waiting is not None:
            return waiting
        try:
            async with self.pool.acquire(timeout=3) as conn:
                missing = await pending(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as err:
            return f"database unreachable: {type(err).__name__}"
        return f"migrations pending: {missing}" if missing else None

    async def broker_ready(self) -> str | None:
        if "broker" in self.startup.waiting:
            return self.startup.waiting["broker"]
        ok = await broker_reachable(self.services.bootstrap,
                                    security=self.settings.kafka_security())
        return None if ok else "broker unreachable"

    async def consumer_ready(self) -> str | None:
        return None if self.projector.joined.is_set() else "consumer has not joined its group"

    async def listen(self, stack: contextlib.AsyncExitStack) -> None:
        """Start the HTTP listener and write ``runtime.json``."""
        settings = self.settings
        desk = self.remote.get("desk")
        # The board's close and reply go to the desk store's kind: a hosted desk's API,
        # or the embedded desk's tables.
        board = BoardContext(self.readers, edition=settings.edition,
                             integration_active=lambda: self.read_config().active,
                             tickets=None if desk is None or desk.tickets is None
                             else desk.tickets(self.readers))
        app = build_app(self.checks, api=self.api, board=board,
                        middlewares=[self.startup.gate], not_applying=self.not_applying)
        runner, port = await serve(app, settings.http_host, settings.http_port)
        stack.push_async_callback(runner.cleanup)
        host = settings.http_host
        self.http_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        write_runtime(settings.data_dir, RuntimeInfo(
            pid=os.getpid(), http=self.http_address, broker=self.services.bootstrap,
            database=self.services.dsn))
        stack.callback(remove_runtime, settings.data_dir)
        log.info("daemon_listening", http=self.http_address)

    async def connect(self, stack: contextlib.AsyncExitStack, stop: asyncio.Event, *,
                      demo: bool) -> IntegrationService:
        """Wait for the database (migrated, the integration store open) and the broker
        (topics created); raise ``Stopped`` or ``GaveUp`` if they do not come."""
        settings, startup = self.settings, self.startup
        deadline = (time.monotonic() + settings.startup_wait) if settings.startup_wait else None

        async def need(what: str, attempt: Callable[[], Awaitable[T]],
                       transient: Callable[[BaseException], bool]) -> T:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            return await wait_for(what, attempt, transient=transient, stop=stop, limit=left,
                                  waiting=startup.waiting)

        async def migrate_database() -> None:
            async with self.pool.acquire() as conn:
                await migrate(conn)

        await need("database", migrate_database, database_unavailable)
        integration = await need("database", lambda: IntegrationService.open(self.services.dsn),
                                 database_unavailable)
        stack.push_async_callback(integration.close)
        self.api.integration = integration
        if demo:
            await need("database", lambda: _seed_demo(
                self.pool, integration, embedded=not self.pipeline.writers),
                database_unavailable)
        self.sync_config = await need("database", integration.current_config,
                                      database_unavailable)
        metrics.PAUSED.set(1 if self.sync_config.paused else 0)
        startup.ready.add("database")
        with quiet_client_logs():  # one line per attempt: ours, not aiokafka's too
            await need("broker", lambda: ensure_topics(
                self.services.bootstrap,
                [settings.events_topic, settings.sales_signals_topic],
                partitions=settings.partitions, security=settings.kafka_security()),
                broker_unavailable)
        startup.ready.add("broker")
        startup.done = True
        return integration

    async def serve(self, integration: IntegrationService, stop: asyncio.Event) -> int:
        settings, services = self.settings, self.services
        log.info("daemon_started", http=self.http_address, broker=services.bootstrap,
                 topic=settings.events_topic, group_id=settings.group_id)
        roots: dict[str, RootTask] = {
            **self.pipeline.roots(),
            "integration": functools.partial(integration.follow, on_change=self.swap_config),
            "readiness": functools.partial(watch_readiness, self.checks),
            "stats": functools.partial(export_stats, self.pool),
        }
        # Waits for sync to be enabled on the integration, resumes an interrupted one.
        roots["initial-sync"] = functools.partial(
            first_sync, self.pool, self.read_config,
            window_days=settings.initial_sync_window_days)
        notifier = Notifier.from_environ()
        if notifier.enabled:
            # READY=1 waits for the consumer's join: systemd says "started" only once
            # sync runs.
            roots["sd-notify"] = functools.partial(notifier.lifecycle,
                                                   ready=self.projector.joined)
            interval = Notifier.watchdog_interval()
            if interval is not None:
                roots["sd-watchdog"] = functools.partial(notifier.watchdog_loop,
                                                         interval=interval)
        return await supervise(roots, stop, deadline=settings.shutdown_deadline)
