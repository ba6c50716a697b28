"""Outcomes, the failure log and the seven-day history.

The sync records one outcome per event it decided about (and one per
rejected message). The failure log (OPS-04) and the history (OPS-03) are
maintained incrementally from each batch's outcomes, and ``rebuild_*`` folds
the whole outcome table into them again, for replay. Times come from the
events (their capture time), never from the wall clock.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from projections.db import Conn

COUNTED = {"added": "added", "updated": "updated", "failed": "failed"}
RESOLVING = {"added", "updated", "unchanged", "echo"}
HistoryKey = tuple[dt.datetime, str, str, str]


@dataclass
class Outcome:
    seq: int | None
    event_id: Any
    source: str
    module: str
    record_id: str
    captured_at: dt.datetime
    outcome: str = "unchanged"
    reason: str | None = None
    detail: str = ""
    raw: bytes | None = None


def direction_of(source: str) -> str | None:
    return {"desk": "desk_to_crm", "crm": "crm_to_desk"}.get(source)


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def record_outcomes(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """Append the batch's outcomes, then fold them into the failure log and history."""
    if not outcomes:
        return
    await conn.executemany(
        "INSERT INTO sync.outcomes (seq, event_id, source, module, record_id, outcome, reason,"
        " detail, raw, captured_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [(o.seq, o.event_id, o.source, o.module, o.record_id, o.outcome, o.reason,
          o.detail[:2000], o.raw, o.captured_at) for o in outcomes],
    )
    await fold(conn, outcomes)


def segments(outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
    """Cut the outcomes where a record repeats: inside a segment each record appears
    once, so set-based statements give exactly the effect of going one by one, and
    any chunking of the same stream folds to the same tables."""
    out: list[list[Outcome]] = [[]]
    seen: set[tuple[str, str, str]] = set()
    for o in outcomes:
        key = (o.source, o.module, o.record_id)
        if key in seen:
            out.append([])
            seen.clear()
        seen.add(key)
        out[-1].append(o)
    return [segment for segment in out if segment]


async def fold(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """Apply outcomes, in order, to the failure log and the history."""
    for segment in segments(outcomes):
        await _fold_segment(conn, segment)


async def _fold_segment(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    failed = [o for o in outcomes if o.outcome == "failed"]
    resolving = [o for o in outcomes if o.outcome in RESOLVING]
    if resolving:
        await conn.execute(
            """
            UPDATE sync.failures f SET status = 'resolved', resolved_at = r.at
            FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                AS r(source, module, record_id, at)
            WHERE f.status = 'open' AND f.source = r.source AND f.module = r.module
              AND f.record_id = r.record_id AND f.last_failed_at <= r.at
            """,
            [o.source for o in resolving], [o.module for o in resolving],
            [o.record_id for o in resolving], [o.captured_at for o in resolving],
        )
    if failed:
        await conn.executemany(
            """
            INSERT INTO sync.failures AS f (source, module, record_id, event_id, reason, detail,
                raw, first_failed_at, last_failed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
            ON CONFLICT (source, module, record_id, reason) WHERE status = 'open'
            DO UPDATE SET attempts = f.attempts + 1, event_id = EXCLUDED.event_id,
                detail = EXCLUDED.detail, raw = coalesce(EXCLUDED.raw, f.raw),
                last_failed_at = greatest(f.last_failed_at, EXCLUDED.last_failed_at)
            """,
            [(o.source, o.module, o.record_id, o.event_id, o.reason or "", o.detail[:2000],
              o.raw, o.captured_at) for o in failed],
        )
    counts: Counter[HistoryKey] = Counter()
    for o in outcomes:
        way = direction_of(o.source)
        if o.outcome in COUNTED and way is not None and o.module != "unknown":
            counts[(hour_of(o.captured_at), way, o.module, COUNTED[o.outcome])] += 1
    await add_history(conn, counts)


async def add_history(conn: Conn, counts: Counter[HistoryKey]) -> None:
    """Add to the history and drop hours more than eight days before the newest."""
    if not counts:
        return
    keys = sorted(counts)
    await conn.execute(
        """
        INSERT INTO sync.history AS h (hour, direction, module, added, updated, failed)
        SELECT hour, direction, module,
               coalesce(sum(n) FILTER (WHERE outcome = 'added'), 0),
               coalesce(sum(n) FILTER (WHERE outcome = 'updated'), 0),
               coalesce(sum(n) FILTER (WHERE outcome = 'failed'), 0)
        FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[])
            AS c(hour, direction, module, outcome, n)
        GROUP BY hour, direction, module
        ON CONFLICT (hour, direction, module) DO UPDATE SET
            added = h.added + EXCLUDED.added,
            updated = h.updated + EXCLUDED.updated,
            failed = h.failed + EXCLUDED.failed
        """,
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        [k[3] for k in keys], [counts[k] for k in keys],
    )
    newest = max(k[0] for k in keys)
    await conn.execute("DELETE FROM sync.history WHERE hour < $1",
                       newest - dt.timedelta(days=8))


async def rebuild(conn: Conn, *, failures_table: str = "sync.failures",
                  history_table: str = "sync.history") -> int:
    """Fold every outcome, in decision order, into empty failure-log and history tables.

    Used by replay; the caller swaps the tables in. Returns the outcomes folded.
    """
    del failures_table, history_table  # rebuilt in place inside the caller's transaction
    await conn.execute("DELETE FROM sync.failures")
    await conn.execute("DELETE FROM sync.history")
    total = 0
    last = 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM sync.outcomes WHERE id > $1 ORDER BY id LIMIT 20000", last)
        if not rows:
            return total
        await fold(conn, [Outcome(r["seq"], r["event_id"], r["source"], r["module"],
                                  r["record_id"], r["captured_at"], r["outcome"], r["reason"],
                                  r["detail"], r["raw"]) for r in rows])
        last = rows[-1]["id"]
        total += len(rows)
