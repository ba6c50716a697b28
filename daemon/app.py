"""The composition root: the one place where adapters, projections and the
daemon's parts are wired together. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

import asyncpg
import structlog

from adapters import initial_sync, metrics
from adapters.demo import seed as seed_demo
from adapters.integration_store import IntegrationService
from adapters.kafka import broker_reachable, ensure_topics
from adapters.migrate import migrate, pending
from adapters.relay import OutboxRelay
from daemon.api import ApiContext, api_routes
from daemon.handshake_api import API_PREFIX, admin_api_roles, handshake_app
from daemon.http import ReadinessCheck, build_app, serve, watch_readiness
from daemon.projector import Projector
from daemon.runtime import RuntimeInfo, remove_runtime, write_runtime
from daemon.sdnotify import Notifier
from daemon.services import Services, open_services
from daemon.settings import Settings
from daemon.supervisor import RootTask, supervise
from daemon.tokens import token_table
from projections.config import SyncConfig
from projections.handshake import HandshakeProjection
from projections.integration import InvalidCommand
from projections.sync import SyncProjection

log = structlog.get_logger(__name__)

DEMO_ACTOR = "demo-seed"


async def create_pool(dsn: str, *, max_size: int = 10,
                      idle_in_transaction_timeout: float = 20.0) -> asyncpg.Pool:
    # A process frozen in the middle of a batch (SIGSTOP, a stuck host) would keep its
    # row locks for ever and block the replica that took over: PostgreSQL ends such a
    # session instead, and the frozen process finds its batch gone when it wakes.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, command_timeout=60,
                                     server_settings={
                                         "jit": "off", "timezone": "UTC",
                                         "idle_in_transaction_session_timeout":
                                             str(int(idle_in_transaction_timeout * 1000))})
    assert pool is not None
    return pool


async def run(settings: Settings, stop: asyncio.Event, *, demo: bool = False) -> int:
    """Run the daemon until ``stop`` is set or a root task fails; return the exit status."""
    async with contextlib.AsyncExitStack() as stack:
        services = await stack.enter_async_context(open_services(settings))
        pool = await create_pool(services.dsn)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
        integration = await IntegrationService.open(services.dsn)
        stack.push_async_callback(integration.close)
        if demo:
            await _seed_demo(pool, integration)
        await ensure_topics(services.bootstrap, [settings.events_topic],
                            partitions=settings.partitions)
        return await _serve(settings, services, pool, integration, stop, stack)
    raise AssertionError("unreachable")  # pragma: no cover


async def _seed_demo(pool: asyncpg.Pool, integration: IntegrationService) -> None:
    """Demo stores, and an integration set up the way an administrator would."""
    await seed_demo(pool)
    if await integration.current() is not None:
        return
    support = await pool.fetchval("SELECT min(id) FROM desk.departments WHERE name = 'Support'")
    with contextlib.suppress(InvalidCommand):
        await integration.set_up("demo-desk", "demo-crm", by=DEMO_ACTOR)
        await integration.choose_sync_type("two_way", by=DEMO_ACTOR)
        if support is not None:
            await integration.choose_products_department(int(support), by=DEMO_ACTOR)


async def _serve(settings: Settings, services: Services, pool: asyncpg.Pool,
                 integration: IntegrationService, stop: asyncio.Event,
                 stack: contextlib.AsyncExitStack) -> int:
    # The projection reads the config once per batch; follow() swaps it when any
    # replica changes the integration (OPS-05), so a change applies to the next batch.
    sync_config = await integration.current_config()

    def read_config() -> SyncConfig:
        return sync_config

    def swap_config(new: SyncConfig) -> None:
        nonlocal sync_config
        sync_config = new
        metrics.PAUSED.set(1 if new.paused else 0)
        log.info("integration_config_changed", paused=new.paused, active=new.active,
                 direction=new.direction)

    metrics.PAUSED.set(1 if sync_config.paused else 0)
    sync = SyncProjection(read_config)
    # The board comes after the sync (it reads the contacts the sync just wrote, which
    # capture never sees) and last (it holds a lock until commit).
    projector = Projector(pool=pool, bootstrap=services.bootstrap, topic=settings.events_topic,
                          group_id=settings.group_id,
                          projections=[sync, HandshakeProjection()],
                          batch_max=settings.batch_max,
                          session_timeout_ms=settings.consumer_session_timeout_ms)

    async def database_ready() -> str | None:
        try:
            async with pool.acquire(timeout=3) as conn:
                missing = await pending(conn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as err:
            return f"database unreachable: {type(err).__name__}"
        return f"migrations pending: {missing}" if missing else None

    async def broker_ready() -> str | None:
        ok = await broker_reachable(services.bootstrap)
        return None if ok else "broker unreachable"

    async def consumer_ready() -> str | None:
        return None if projector.joined.is_set() else "consumer has not joined its group"

    routes, middleware = api_routes(ApiContext(
        pool=pool, integration=integration, tokens=token_table(settings),
        webhook_secrets={k: v.get_secret_value().encode()
                         for k, v in settings.webhook_secrets.items()},
        history_timezone=settings.history_timezone, config=read_config,
        lag=projector.lag, last_applied_at=lambda: projector.last_applied_at))
    checks: dict[str, ReadinessCheck] = {
        "database": database_ready, "broker": broker_ready, "consumer": consumer_ready}
    app = build_app(checks, routes=routes, middlewares=[middleware])
    app.add_subapp(API_PREFIX, handshake_app(
        pool, edition=settings.edition, integration_active=lambda: read_config().active,
        authorize=admin_api_roles()))
    runner, port = await serve(app, settings.http_host, settings.http_port)
    stack.push_async_callback(runner.cleanup)
    http_address = f"{settings.http_host}:{port}"
    write_runtime(settings.data_dir, RuntimeInfo(
        pid=os.getpid(), http=http_address, broker=services.bootstrap, database=services.dsn))
    stack.callback(remove_runtime, settings.data_dir)
    log.info("daemon_started", http=http_address, broker=services.bootstrap,
             topic=settings.events_topic, group_id=settings.group_id)

    roots: dict[str, RootTask] = {
        "projector": projector.run,
        "integration": functools.partial(integration.follow, on_change=swap_config),
        "resume-drain": functools.partial(drain_deferred, pool, sync),
        "readiness": functools.partial(watch_readiness, checks),
        "stats": functools.partial(export_stats, pool),
    }
    for source in ("desk", "crm"):
        relay = OutboxRelay(dsn=services.dsn, bootstrap=services.bootstrap,
                            topic=settings.events_topic, source=source,
                            partitions=settings.partitions,
                            poll_interval=settings.relay_poll_interval,
                            resend_after=settings.relay_resend_after)
        roots[f"relay-{source}"] = relay.run
    async with pool.acquire() as conn:
        first_start = await initial_sync.progress(conn) is None
    if first_start:
        roots["initial-sync"] = functools.partial(
            _initial_sync, pool, direction=sync_config.direction,
            window_days=settings.initial_sync_window_days)
    notifier = Notifier.from_environ()
    if notifier.enabled:
        # READY=1 waits for the consumer's join: systemd says "started" only once sync runs.
        roots["sd-notify"] = functools.partial(notifier.lifecycle, ready=projector.joined)
        interval = Notifier.watchdog_interval()
        if interval is not None:
            roots["sd-watchdog"] = functools.partial(notifier.watchdog_loop, interval=interval)
    return await supervise(roots, stop, deadline=settings.shutdown_deadline)


async def _initial_sync(pool: asyncpg.Pool, stop: asyncio.Event, *, direction: str,
                        window_days: int) -> None:
    """The first sync runs once, when the daemon first starts (SYNC-08), then idles."""
    def report(progress: initial_sync.Progress) -> None:
        metrics.INITIAL_SYNC_PROGRESS.set(progress.ratio)

    await initial_sync.run(pool, direction=direction, window_days=window_days,
                           on_progress=report, stop=stop)
    await stop.wait()


async def drain_deferred(pool: asyncpg.Pool, sync: SyncProjection,
                          stop: asyncio.Event) -> None:
    """After a resume, apply what accumulated while paused, oldest first (OPS-01)."""
    while not stop.is_set():
        applied = 0
        with contextlib.suppress(asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
                                 OSError, asyncpg.PostgresConnectionError,
                                 asyncpg.InterfaceError, asyncpg.CannotConnectNowError):
            async with pool.acquire() as conn, conn.transaction():
                applied = await sync.drain_deferred(conn)
        if applied:
            log.info("deferred_applied", events=applied)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def export_stats(pool: asyncpg.Pool, stop: asyncio.Event, *,
                       interval: float = 15.0) -> None:
    """Gauges read from the database: open failures by reason, the seven-day history."""
    while not stop.is_set():
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            async with pool.acquire() as conn:
                failures = await conn.fetch(
                    "SELECT reason, count(*) AS n FROM sync.failures WHERE status = 'open'"
                    " GROUP BY reason")
                history = await conn.fetch(
                    "SELECT direction, module, sum(added) AS added, sum(updated) AS updated,"
                    " sum(failed) AS failed FROM sync.history WHERE hour >"
                    " (SELECT max(hour) FROM sync.history) - interval '7 days'"
                    " GROUP BY direction, module")
                board = await conn.fetch(
                    "SELECT coalesce(d.name, b.department_id) AS department,"
                    " b.board_column AS column, count(*) AS n FROM handshake.board b"
                    " LEFT JOIN handshake.departments d USING (department_id)"
                    " WHERE b.board_column IS NOT NULL GROUP BY 1, 2")
            metrics.HANDSHAKE_TICKETS.clear()
            for row in board:
                metrics.HANDSHAKE_TICKETS.labels(row["department"], row["column"]).set(row["n"])
            metrics.FAILURES_OPEN.clear()
            for row in failures:
                metrics.FAILURES_OPEN.labels(row["reason"]).set(row["n"])
            for row in history:
                for outcome in ("added", "updated", "failed"):
                    metrics.HISTORY_RECORDS.labels(row["direction"], row["module"],
                                                   outcome).set(row[outcome])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
