"""The failure log and the seven-day history: written by every projection path.

Times come from the events, never from the wall clock, so a replay writes the
same rows.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from projections.db import Conn

FailureRow = tuple[str, str, str, Any, str, str, bytes | None, dt.datetime]


async def record_failures(conn: Conn, rows: Sequence[FailureRow]) -> None:
    """Add failures to the log; a repeat of an open one counts another attempt."""
    await conn.executemany(
        """
        INSERT INTO sync.failures AS f (source, module, record_id, event_id, reason, detail, raw,
            first_failed_at, last_failed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
        ON CONFLICT (source, module, record_id, reason) WHERE status = 'open'
        DO UPDATE SET attempts = f.attempts + 1, event_id = EXCLUDED.event_id,
            detail = EXCLUDED.detail,
            last_failed_at = greatest(f.last_failed_at, EXCLUDED.last_failed_at)
        """,
        rows,
    )


async def add_history(conn: Conn, counts: Counter[tuple[dt.date, str, str, str]]) -> None:
    """Add to the seven-day history and drop days more than seven days before the
    newest day seen. Days are the events' capture days: time from events, never
    from the wall clock, so a replay writes the same rows."""
    if not counts:
        return
    keys = sorted(counts)
    await conn.execute(
        """
        INSERT INTO sync.history AS h (day, direction, module, added, updated, failed)
        SELECT day, direction, module,
               coalesce(sum(n) FILTER (WHERE outcome = 'added'), 0),
               coalesce(sum(n) FILTER (WHERE outcome = 'updated'), 0),
               coalesce(sum(n) FILTER (WHERE outcome = 'failed'), 0)
        FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::int[])
            AS c(day, direction, module, outcome, n)
        GROUP BY day, direction, module
        ON CONFLICT (day, direction, module) DO UPDATE SET
            added = h.added + EXCLUDED.added,
            updated = h.updated + EXCLUDED.updated,
            failed = h.failed + EXCLUDED.failed
        """,
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        [k[3] for k in keys], [counts[k] for k in keys],
    )
    newest_day = max(k[0] for k in keys)
    await conn.execute("DELETE FROM sync.history WHERE day <= $1",
                       newest_day - dt.timedelta(days=7))
