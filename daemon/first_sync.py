"""The first sync as a root task: it follows the integration (SYNC-08).

It starts when sync is enabled on the integration (set up, then a sync type
chosen, as the sources describe), not on the daemon's first start; a first sync
a restart interrupted is resumed; once every record of its plan is captured the
task idles (the pipeline applies what it captured).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from adapters import initial_sync, metrics
from projections.config import SyncConfig

log = structlog.get_logger(__name__)


async def first_sync(pool: asyncpg.Pool, config: Callable[[], SyncConfig],
                     stop: asyncio.Event, *, window_days: int, poll: float = 0.5) -> None:
    """Wait for sync to be enabled, run (or resume) the first sync, then idle."""
    async with pool.acquire() as conn:
        done = await initial_sync.captured_all(conn)
    if not done and await _enabled(config, stop, poll=poll):
        await initial_sync.run(pool, direction=config().direction,
                               window_days=window_days, on_progress=_report, stop=stop)
    await stop.wait()


def _report(progress: initial_sync.Progress) -> None:
    metrics.INITIAL_SYNC_PROGRESS.set(progress.ratio)


async def _enabled(config: Callable[[], SyncConfig], stop: asyncio.Event, *,
                   poll: float) -> bool:
    """Wait until sync is enabled on a live integration; False if ``stop`` came first."""
    told = False
    while not stop.is_set():
        current = config()
        if current.enabled and current.active:
            if told:
                log.info("initial_sync_starting", direction=current.direction)
            return True
        if not told:
            log.info("initial_sync_waiting", reason=current.waiting_for)
            told = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll)
    return False
