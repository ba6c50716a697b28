"""The integration aggregate on PostgreSQL, and its asyncio face.

``eventsourcing`` is synchronous (psycopg 3 and a thread pool of
connections), so every call here goes through ``asyncio.to_thread``; the
event loop never waits on it, and nothing on the per-record path calls it.

Replicas learn of each other's changes by polling the newest notification
id (one indexed ``max()``): cheap enough to run twice a second, which is
what lets a pause made on one replica stop the others within a second
without a broker or LISTEN connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from projections.config import SyncConfig
from projections.integration import AuditEntry, Integration
from projections.integration_app import Change, IntegrationApplication, PeopleCommand
from projections.people import People

T = TypeVar("T")

log = structlog.get_logger(__name__)

DEFAULT_SCHEMA = "integration"
LOCK_KEY = 0x5359_4E43_494E_5447  # "SYNCINTG"
CONNECT_TIMEOUT = 10  # seconds: bounds how long a poll can hold up shutdown

# What eventsourcing's PostgreSQL datastore can be told; anything else in a
# DSN (sslmode, options, …) would be silently dropped, so it is refused.
_SUPPORTED = frozenset({"dbname", "host", "port", "user", "password", "connect_timeout"})


def environment(dsn: str, *, schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """Translate a libpq DSN (URI or key=value) into eventsourcing's settings.

    Missing parts take libpq's defaults: the user is the OS user, the
    database is named after the user, an empty host is the local socket.
    """
    try:
        params: dict[str, Any] = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's message may quote the URL, password included: say less.
        raise ValueError("database URL is not a valid libpq connection string") from None
    unsupported = sorted(set(params) - _SUPPORTED)
    if unsupported:
        raise ValueError(
            f"database URL: parameter(s) {unsupported} cannot be passed to the integration "
            "store; set them as libpq environment variables (PGSSLMODE, …) instead")
    user = str(params.get("user") or getpass.getuser())
    timeout = str(params.get("connect_timeout") or CONNECT_TIMEOUT)
    if not timeout.isdigit():
        raise ValueError(f"database URL: connect_timeout must be whole seconds, not {timeout!r}")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or user),
        "POSTGRES_HOST": str(params.get("host") or ""),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_CONNECT_TIMEOUT": timeout,
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "3",
        "POSTGRES_PRE_PING": "y",  # a database restart must not leave dead connections behind
        "CREATE_TABLE": "y",
    }


class IntegrationStoreMissing(RuntimeError):
    """The integration's schema is not there and this role may not create it (not a
    transient error: waiting would not bring it)."""


def open_application(dsn: str, *, schema: str = DEFAULT_SCHEMA) -> IntegrationApplication:
    """The integration application on PostgreSQL, its schema and tables created if missing
    and if this role may create them.

    A least-privilege role (docs/reliability.md) may not create anything, not even
    with ``IF NOT EXISTS`` on what exists (PostgreSQL checks the privilege first): it
    opens what ``syncd migrate``, run as the owner, created. Blocking: call it through
    ``asyncio.to_thread``.
    """
    env = environment(dsn, schema=schema)
    # Replicas start together: CREATE SCHEMA/TABLE/TYPE IF NOT EXISTS can still
    # collide on the catalogue, so creation is serialised on a session lock.
    timeout = int(env["POSTGRES_CONNECT_TIMEOUT"])
    with psycopg.connect(dsn, autocommit=True, connect_timeout=timeout) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            row = conn.execute(
                "SELECT n.oid IS NOT NULL, coalesce(has_schema_privilege(n.oid, 'CREATE'),"
                " has_database_privilege(current_database(), 'CREATE'))"
                " FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = %s",
                (schema,)).fetchone()
            exists, may_create = row if row is not None else (False, False)
            if not exists:
                if not may_create:
                    raise IntegrationStoreMissing(
                        f"schema {schema!r} does not exist and this role may not create it:"
                        " run `syncd migrate` as the database owner first")
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            return IntegrationApplication(env={**env, "CREATE_TABLE": "y" if may_create
                                               else "n"})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


async def _unless_stopped(query: Callable[[], T], stop: asyncio.Event) -> T | None:
    """``query()`` in a thread, or ``None`` as soon as ``stop`` is set.

    A poll waiting for a database that went away holds its thread up to the connect
    timeout; the shutdown must not wait for it. So the thread is a daemon thread
    (``asyncio.to_thread``'s pool is joined at exit) and an abandoned poll's outcome
    is dropped.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[], None]) -> None:
        if not outcome.done():
            settle()

    def run() -> None:
        try:
            result = query()
        except BaseException as err:  # handed to the awaiting task
            failure = err
            call = functools.partial(deliver, lambda: outcome.set_exception(failure))
        else:
            call = functools.partial(deliver, lambda: outcome.set_result(result))
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(call)

    threading.Thread(target=run, name="integration-poll", daemon=True).start()
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([outcome, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if outcome.done():
        return outcome.result()
    outcome.cancel()
    return None


class IntegrationService:
    """The integration's commands and queries for the event loop (OPS-05).

    Commands return the integration as recorded; a refused command raises
    ``projections.integration.InvalidCommand`` (or a subclass) with a stable
    ``code``, and records nothing.
    """

    def __init__(self, app: IntegrationApplication) -> None:
        self.app = app
        self._baseline: int | None = None
        self.followed = 0
        """The integration's position (``position()``) whose config this process runs
        with: set by ``current_config`` and by ``follow`` once ``on_change`` returned."""

    @classmethod
    async def open(cls, dsn: str, *, schema: str = DEFAULT_SCHEMA) -> IntegrationService:
        app = await asyncio.to_thread(open_application, dsn, schema=schema)
        return cls(app)

    async def close(self) -> None:
        await asyncio.to_thread(self.app.close)

    # -- commands ------------------------------------------------------------

    async def set_up(self, desk_portal: str, crm_org: str, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.set_up, desk_portal, crm_org, by=by)

    async def choose_sync_type(self, sync_type: str, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.choose_sync_type, sync_type, by=by)

    async def start_legacy_import(self, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.start_legacy_import, by=by)

    async def switch_to_sync(self, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.switch_to_sync, by=by)

    async def change_field_mapping(self, module: str, entries: list[dict[str, Any]] | None, *,
                                   by: str) -> Integration:
        return await asyncio.to_thread(self.app.change_field_mapping, module, entries, by=by)

    async def change_matching_options(self, match_secondary_email: bool, *,
                                      by: str) -> Integration:
        return await asyncio.to_thread(self.app.change_matching_options, match_secondary_email,
                                       by=by)

    async def choose_products_department(self, department_id: int, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.choose_products_department, department_id,
                                       by=by)

    async def choose_related_list_modules(self, modules: list[str], *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.choose_related_list_modules, modules, by=by)

    async def change_people(self, command: PeopleCommand, /, **arguments: Any
                            ) -> Integration:
        return await asyncio.to_thread(self.app.change_people, command, **arguments)

    async def record_refusal(self, user_id: str, action: str, target: str, missing: str, *,
                             by: str) -> None:
        """Record in the audit trail that ``user_id`` was refused ``action`` on
        ``target`` for want of ``missing`` (TICKET-04)."""
        await self.change_people("record_refusal", user_id=user_id, action=action,
                                 target=target, missing=missing, by=by)

    async def pause(self, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.pause, by=by)

    async def resume(self, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.resume, by=by)

    async def delete(self, *, by: str) -> Integration:
        return await asyncio.to_thread(self.app.delete, by=by)

    # -- queries -------------------------------------------------------------

    async def current(self) -> Integration | None:
        return await asyncio.to_thread(self.app.current)

    async def people(self) -> People:
        return await asyncio.to_thread(self.app.people)

    async def audit(self) -> list[AuditEntry]:
        return await asyncio.to_thread(self.app.audit)

    async def changes_after(self, notification_id: int, *, limit: int = 10) -> list[Change]:
        return await asyncio.to_thread(self.app.changes_after, notification_id, limit=limit)

    async def current_config(self) -> SyncConfig:
        """The config to start with; ``follow`` then reports changes made after it."""
        # Position first: a change landing between the two reads is reported
        # again by follow (harmless), never missed.
        position = await asyncio.to_thread(self.app.position)
        config = await asyncio.to_thread(self.app.current_config)
        self._baseline = position
        self.followed = position
        return config

    async def position(self) -> int:
        """The newest position of the integration's events (any replica's)."""
        return await asyncio.to_thread(self.app.position)

    async def follow(self, stop: asyncio.Event, on_change: Callable[[SyncConfig], None], *,
                     interval: float = 0.5) -> None:
        """Call ``on_change`` with the new config whenever any replica changes the integration.

        A root task: runs until ``stop`` is set. It starts from what the last
        ``current_config()`` saw; without one, it reports the current config
        at once. A database error is logged and the last config stays in
        force until the next poll succeeds.
        """
        if not 0 < interval <= 1:
            raise ValueError("interval must be in (0, 1] seconds: changes apply within one")
        seen = self._baseline
        failing = False
        while not stop.is_set():
            try:
                position = await _unless_stopped(self.app.position, stop)
                if position is None:
                    return
                if position != seen:
                    config = await _unless_stopped(self.app.current_config, stop)
                    if config is None:
                        return
                    seen = position
                    on_change(config)
                    self.followed = position
                    log.info("integration_config_applied", position=position,
                             paused=config.paused, active=config.active,
                             direction=config.direction)
                if failing:
                    log.info("integration_follow_recovered", position=position)
                    failing = False
            except PersistenceError as err:
                if not failing:
                    log.warning("integration_follow_failed",
                                error=f"{type(err).__name__}: {err}")
                failing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
