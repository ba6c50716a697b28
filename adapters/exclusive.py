"""One active instance across replicas: a root task that waits for a session
advisory lock, works while it holds it, and gives it up when it stops or its
connection goes (a replica that dies releases it with its connection; the others
stand by and take over). The command writers and a remote store's capture use it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from projections.db import CONNECTION_LOST, Conn

log = structlog.get_logger(__name__)

Body = Callable[[Conn, asyncio.Event], Awaitable[None]]
"""The work done while the lock is held, on the lock's connection, until ``stop``."""


async def run_exclusively(pool: asyncpg.Pool, key: int, stop: asyncio.Event, body: Body, *,
                          task: str, active: asyncio.Event, retry_after: float = 1.0) -> None:
    """Until ``stop``: take the lock ``key`` if no one holds it, run ``body`` with
    ``active`` set, release the lock; the database away is logged and waited out."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    active.set()
                    try:
                        await body(conn, stop)
                    finally:
                        active.clear()
                        with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
                            await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except CONNECTION_LOST as err:
            log.warning("database_unavailable", task=task,
                        error=f"{type(err).__name__}: {err}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_after)
