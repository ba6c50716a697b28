"""The first sync (SYNC-08): bulk import and export of existing records.

It is a bulk *capture*: existing records created within the window are put
into their store's outbox as ``create`` events with origin ``import``, in
chunks, and the ordinary pipeline matches, links and writes them. So the
first sync obeys exactly the rules of live sync, and a kill at any point
loses nothing: each chunk and its progress row commit together, and what is
in the outbox stays there until the projector has applied it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

from projections import registry
from projections.catalog import Side
from projections.stores.embedded import EmbeddedStore
from projections.stores.outbox import Outbox

log = structlog.get_logger(__name__)

# Accounts first, so contacts find their accounts already linked. Then what only
# the other projections read (the handshake board: the CRM's leads and deals, the
# desk's departments, ticket statuses and tickets), as the registry lists it.
ORDER = ("accounts", "contacts", "products")


@dataclass(frozen=True)
class Progress:
    total: int
    captured: int
    applied: int

    @property
    def ratio(self) -> float:
        return 1.0 if self.total == 0 else min(1.0, self.applied / self.total)


def plan(direction: str) -> list[tuple[Side, str]]:
    sources: list[Side] = ["crm"] if direction == "crm_to_desk" else ["crm", "desk"]
    synced = [(source, module) for module in ORDER for source in sources]
    return synced + list(registry.first_sync_modules())


async def start(pool: asyncpg.Pool, *, direction: str, window_days: int,
                now: dt.datetime | None = None) -> None:
    """Record the plan and its cutoff once; a second call resumes the same plan."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=window_days)
    async with pool.acquire() as conn, conn.transaction():
        for source, module in plan(direction):
            # The count and the id bound from one snapshot: the plan is exactly the
            # records that exist now (later ones are captured live, or are the sync's own).
            total, until_id = await EmbeddedStore(conn, source).window(module, cutoff)
            await conn.execute(
                "INSERT INTO syncd.initial_sync (source, module, cutoff, total, until_id)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, module) DO NOTHING",
                source, module, cutoff, total, until_id)


async def capture_chunk(pool: asyncpg.Pool, source: Side, module: str, chunk: int) -> int:
    """Capture the next chunk of one source and module; return how many rows."""
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchrow(
            "SELECT cutoff, last_id, until_id, finished_at FROM syncd.initial_sync"
            " WHERE source = $1 AND module = $2 FOR UPDATE", source, module)
        if state is None or state["finished_at"] is not None:
            return 0
        ids = await EmbeddedStore(conn, source).capture(
            module, after_id=state["last_id"], cutoff=state["cutoff"],
            until_id=state["until_id"], limit=chunk)
        if ids:
            await conn.execute(
                "UPDATE syncd.initial_sync SET last_id = $3, captured = captured + $4"
                " WHERE source = $1 AND module = $2",
                source, module, max(ids), len(ids))
            await Outbox(conn, source).wake()
        else:
            await conn.execute(
                "UPDATE syncd.initial_sync SET finished_at = now()"
                " WHERE source = $1 AND module = $2", source, module)
        return len(ids)


async def progress(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> Progress | None:
    """Where the first sync stands: applied is what the batches released of its capture
    (``syncd.imports_released``), read without counting the outboxes (a count of
    hundreds of thousands of rows, twice a second, was much of a large first sync's
    PostgreSQL time). Never more than captured: a hosted store's bulk read releases
    import rows too, outside this plan."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(total), 0) AS total, coalesce(sum(captured), 0) AS captured,"
        " count(*) AS plans,"
        " (SELECT coalesce(sum(released), 0) FROM syncd.imports_released) AS released"
        " FROM syncd.initial_sync")
    if row is None or row["plans"] == 0:
        return None
    captured = int(row["captured"])
    return Progress(int(row["total"]), captured, min(captured, int(row["released"])))


async def captured_all(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> bool:
    """Whether a first sync was planned and every record of its plan captured (what is
    left is the pipeline's to apply)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS plans, count(*) FILTER (WHERE finished_at IS NULL) AS open"
        " FROM syncd.initial_sync")
    return row is not None and row["plans"] > 0 and row["open"] == 0


@dataclass(frozen=True)
class Finished:
    """A first sync that is over: every record of its plan captured and applied."""

    finished_at: dt.datetime
    total: int
    applied: int


async def finished(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
                   ) -> Finished | None:
    """The first sync if it is done; None if none was planned or any of it is left.

    It runs once (SYNC-08): once done, a ``run`` repeats only the old totals."""
    row = await conn.fetchrow(
        "SELECT count(*) AS plans, count(*) FILTER (WHERE finished_at IS NULL) AS open,"
        " max(finished_at) AS finished_at FROM syncd.initial_sync")
    if row is None or row["plans"] == 0 or row["open"]:
        return None
    current = await progress(conn)
    if current is None or current.applied < current.captured:
        return None
    return Finished(row["finished_at"], current.total, current.applied)


async def run(pool: asyncpg.Pool, *, direction: str = "two_way", window_days: int = 365,
              chunk: int = 5000, wait: bool = True,
              on_progress: Callable[[Progress], None] | None = None,
              stop: asyncio.Event | None = None) -> Progress:
    """Run (or resume) the first sync; with ``wait``, until every record is applied."""
    await start(pool, direction=direction, window_days=window_days)
    for source, module in plan(direction):
        while not (stop and stop.is_set()):
            if await capture_chunk(pool, source, module, chunk) == 0:
                break
            if on_progress is not None:
                async with pool.acquire() as conn:
                    current = await progress(conn)
                if current is not None:
                    on_progress(current)
    while True:
        async with pool.acquire() as conn:
            current = await progress(conn)
        assert current is not None
        if on_progress is not None:
            on_progress(current)
        if not wait or current.applied >= current.captured or (stop and stop.is_set()):
            log.info("initial_sync_progress", total=current.total, captured=current.captured,
                     applied=current.applied)
            return current
        await asyncio.sleep(0.5)
