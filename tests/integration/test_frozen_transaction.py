from __future__ import annotations

import asyncio

import asyncpg
import pytest

from daemon.app import create_pool


async def test_a_frozen_batch_transaction_is_ended_by_the_database(database_url: str) -> None:
    """A transaction left idle (its process frozen mid-batch) is ended by PostgreSQL, so
    its row locks cannot block the replica that took over (the chaos run once hung)."""
    pool = await create_pool(database_url, max_size=2, idle_in_transaction_timeout=0.5)
    try:
        conn = await pool.acquire()
        try:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("UPDATE syncd.consumer_offsets SET next_offset = 0")
            await asyncio.sleep(1.5)  # frozen, holding its locks
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await conn.execute("SELECT 1")
        finally:
            await pool.release(conn)
    finally:
        pool.terminate()
