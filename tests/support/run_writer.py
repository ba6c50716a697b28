"""``python -m tests.support.run_writer DSN URL``: a command writer for the CRM
against a fake record service, in a process of its own (a test SIGKILLs it)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from adapters.command_writer import Backoff, CommandWriter
from tests.support.record_service import RecordServiceTarget


async def main(dsn: str, url: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    target = RecordServiceTarget(url)
    writer = CommandWriter(pool, target, backoff=Backoff(base=0.05, cap=0.2),
                           attempt_timeout=60)
    try:
        await writer.run(asyncio.Event())
    finally:
        await target.close()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
