"""The daemon's status: paused or running, lag, backlog, the configuration followed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from projections.config import SyncConfig
from projections.stores.outbox import Outbox


async def status(pool: asyncpg.Pool, *, config: SyncConfig, lag: dict[int, int],
                 last_applied_at: float | None, config_position: int,
                 remote_stores: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``GET /api/v1/status`` and ``syncd status`` show."""
    async with pool.acquire() as conn:
        backlog = {side: await Outbox(conn, side).backlog() for side in ("desk", "crm")}
        deferred = await conn.fetchval("SELECT count(*) FROM sync.deferred")
    return {
        "state": config.state,
        "waiting_for": config.waiting_for,
        "consumer_lag": {str(p): n for p, n in sorted(lag.items())},
        "last_applied_at": (dt.datetime.fromtimestamp(last_applied_at, dt.UTC).isoformat()
                            if last_applied_at else None),
        "outbox_backlog": backlog,
        "deferred_while_paused": deferred,
        "config_position": config_position,
        # Each remote store's writer: writing, standby (another replica writes), or
        # why its writes wait (parked for API credits, unavailable).
        "remote_stores": remote_stores or {},
    }
