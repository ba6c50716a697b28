"""The daemon's status: paused or running, lag, backlog, the configuration followed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from projections.config import SyncConfig


async def status(pool: asyncpg.Pool, *, config: SyncConfig, lag: dict[int, int],
                 last_applied_at: float | None, config_position: int) -> dict[str, Any]:
    """What ``GET /api/v1/status`` and ``syncd status`` show."""
    async with pool.acquire() as conn:
        backlog = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM desk.outbox) AS desk,"
            " (SELECT count(*) FROM crm.outbox) AS crm,"
            " (SELECT count(*) FROM sync.deferred) AS deferred")
    assert backlog is not None
    return {
        "state": config.state,
        "waiting_for": config.waiting_for,
        "consumer_lag": {str(p): n for p, n in sorted(lag.items())},
        "last_applied_at": (dt.datetime.fromtimestamp(last_applied_at, dt.UTC).isoformat()
                            if last_applied_at else None),
        "outbox_backlog": {"desk": backlog["desk"], "crm": backlog["crm"]},
        "deferred_while_paused": backlog["deferred"],
        "config_position": config_position,
    }
