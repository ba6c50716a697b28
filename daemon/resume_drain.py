"""The resume drain: after a resume, what was queued while paused is applied (OPS-01)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import structlog

from daemon.consumer import Coordinates, report_problems
from projections.db import CONNECTION_LOST, Conn
from projections.ledger import Outcome
from projections.sync import SyncProjection

log = structlog.get_logger(__name__)

_DRAIN_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError, asyncpg.SerializationError, *CONNECTION_LOST)


async def drain_deferred(pool: asyncpg.Pool, sync: SyncProjection, stop: asyncio.Event, *,
                         topic: str = "", retry_after: float = 0.5) -> None:
    """A root task: apply what accumulated while paused, oldest first, until ``stop``.

    Each round logs and counts its failures as the consumer loop does
    (``report_problems``); a round that fails (a conflict with a live batch, the
    database away) is logged, and the next round tries again."""
    while not stop.is_set():
        drained = None
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    drained = await sync.drain_deferred(conn)
                problems = drained.report.problems
                located = await _event_coordinates(conn, problems) if problems else {}
        except _DRAIN_ERRORS as err:
            log.warning("deferred_drain_failed", error=f"{type(err).__name__}: {err}",
                        sqlstate=getattr(err, "sqlstate", None), retry_in=retry_after)
        else:
            if problems:
                report_problems(problems, located, topic=topic)
        if drained is not None and drained.events:
            log.info("deferred_applied", events=drained.events,
                     failed=len(drained.report.problems))
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_after)


async def _event_coordinates(conn: Conn, problems: Sequence[Outcome]
                             ) -> dict[object, Coordinates]:
    """Where the event log says the failed events were read from Kafka."""
    rows = await conn.fetch(
        "SELECT event_id, kafka_topic, kafka_partition, kafka_offset FROM syncd.event_log"
        " WHERE event_id = ANY($1::uuid[])", [o.event_id for o in problems])
    return {r["event_id"]: (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"])
            for r in rows}
