"""The stats export: gauges read from the projections' tables, every round.

Which gauges, and the query behind each, are the projections' own: their
specifications list them (``projections.registry``, ``gauges``). A projection
that adds a gauge adds it there and in ``adapters.metrics``; nothing here changes.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from adapters import metrics
from projections import registry
from projections.db import Conn

log = structlog.get_logger(__name__)


async def export_round(conn: Conn) -> None:
    """Read every projection's gauges and set them (all queries first: a round that
    fails half-way changes no gauge)."""
    read = [(metrics.PROJECTION_GAUGES[g.metric], await conn.fetch(g.query))
            for g in registry.gauges()]
    for gauge, rows in read:
        gauge.clear()
        for row in rows:
            *labels, value = row.values()
            gauge.labels(*(str(label) for label in labels)).set(value or 0)


async def export_stats(pool: asyncpg.Pool, stop: asyncio.Event, *,
                       interval: float = 15.0) -> None:
    """A root task: one export round every ``interval`` seconds until ``stop``."""
    failing: str | None = None  # the error of the last round, while rounds fail
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await export_round(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            # The gauges keep their last values; the next round tries again.
            metrics.STATS_EXPORT_FAILURES.inc()
            failing = f"{type(err).__name__}: {err}"
            log.warning("stats_export_failed", error=failing, retry_in=interval)
        else:
            if failing:
                log.info("stats_export_recovered")
            failing = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
