"""The seven-day sync history (OPS-03), per day in a time zone."""

from __future__ import annotations

from typing import Any

import asyncpg


async def seven_days(pool: asyncpg.Pool, zone: str) -> list[dict[str, Any]]:
    """Added, updated and failed per day (in ``zone``), direction and module, newest
    day first, over the seven days before the latest recorded hour."""
    rows = await pool.fetch(
        """
        SELECT (hour AT TIME ZONE $1)::date AS day, direction, module,
               sum(added)::int AS added, sum(updated)::int AS updated,
               sum(failed)::int AS failed
        FROM sync.history
        WHERE hour > (SELECT max(hour) FROM sync.history) - interval '7 days'
        GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2, 3
        """, zone)
    return [{"day": r["day"].isoformat(), "direction": r["direction"], "module": r["module"],
             "added": r["added"], "updated": r["updated"], "failed": r["failed"]}
            for r in rows]
