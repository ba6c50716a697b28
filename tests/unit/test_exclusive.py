"""``run_exclusively``: the lock's holder starts over when its connection breaks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from adapters.exclusive import run_exclusively


class _Conn:
    def __init__(self) -> None:
        self.unlocked = 0

    async def fetchval(self, query: str, *args: Any) -> bool:
        return True  # pg_try_advisory_lock: no one else holds it

    async def execute(self, query: str, *args: Any) -> str:
        self.unlocked += 1
        return "SELECT 1"


class _Pool:
    def __init__(self) -> None:
        self.conns: list[_Conn] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        conn = _Conn()
        self.conns.append(conn)
        yield conn


@pytest.mark.parametrize("broken", [
    asyncpg.InterfaceError("connection is closed"),
    # asyncpg's protocol left mid-operation by a server-side termination (a known
    # asyncpg defect, MagicStack/asyncpg#1069): the writer died of it in CI.
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
])
async def test_a_broken_connection_starts_the_holder_over(broken: Exception) -> None:
    pool, stop, active = _Pool(), asyncio.Event(), asyncio.Event()
    runs = 0

    async def body(conn: Any, stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise broken
        stop.set()

    await asyncio.wait_for(run_exclusively(
        pool, 1, stop, body, task="test", active=active, retry_after=0.01), 5)  # type: ignore[arg-type]
    assert runs == 2
    assert len(pool.conns) == 2 and not active.is_set()
