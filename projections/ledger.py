"""Outcomes, the failure log and the seven-day history.

The sync records one outcome per event it decided about (and one per
rejected message). The failure log (OPS-04) and the history (OPS-03) are
maintained incrementally from each batch's outcomes, and ``fold_range`` folds
the outcome table into them again, for replay (``projections.replay``), into
the live tables or into fresh copies (``LedgerTables``). Times come from the
events (their capture time), never from the wall clock.

Two choices make the fold a pure function of ``sync.outcomes``, whatever the
batching (OWN-03): a failure-log entry's id is the id of the outcome that
opened it (not a sequence value, which rolled-back batches would skip), and
the history keeps the hours within eight days of the newest hour it holds
(not of the newest hour of the batch at hand).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from projections.db import Conn

COUNTED = {"added": "added", "updated": "updated", "failed": "failed"}
RESOLVING = {"added", "updated", "unchanged", "echo"}
HistoryKey = tuple[dt.datetime, str, str, str]
HISTORY_KEEP = dt.timedelta(days=8)


@dataclass(frozen=True, slots=True)
class LedgerTables:
    """Where a fold writes: the live tables, or a replay's fresh copies.

    Names are schema-qualified identifiers chosen by this code, never input.
    """

    failures: str = "sync.failures"
    history: str = "sync.history"


LIVE = LedgerTables()


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
    id: int | None = None  # sync.outcomes.id, set when recorded


# The batch's outcomes reach PostgreSQL as one JSON array of objects, encoded by msgspec
# straight from the dataclasses (the raw bytes as base64): ten typed arrays cost asyncpg
# a check and an encoding per element, 26 to 31 ms of Python for 5,000 outcomes against
# 8 for the JSON, and more time in all (timed twice on the embedded PostgreSQL, the rows
# written compared equal, raw bytes, nulls and a detail cut at 2,000 characters included).
_INSERT_OUTCOMES = """
INSERT INTO sync.outcomes (seq, event_id, source, module, record_id, outcome, reason,
    detail, raw, captured_at)
SELECT seq, event_id, source, module, record_id, outcome, reason, left(detail, 2000),
    decode(raw, 'base64'), captured_at
FROM ROWS FROM (json_to_recordset($1::json) AS (seq bigint, event_id uuid, source text,
        module text, record_id text, outcome text, reason text, detail text, raw text,
        captured_at timestamptz))
    WITH ORDINALITY AS o(seq, event_id, source, module, record_id, outcome, reason, detail,
                         raw, captured_at, ord)
ORDER BY ord RETURNING id
"""
_encode = msgspec.json.Encoder().encode


def direction_of(source: str) -> str | None:
    return {"desk": "desk_to_crm", "crm": "crm_to_desk"}.get(source)


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def record_outcomes(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    """Append the batch's outcomes, then fold them into the failure log and history."""
    if not outcomes:
        return
    # Ids are drawn in decision order (the insert numbers the rows as they come, in
    # ``ord`` order), because the fold needs them: a failure entry is named after the
    # outcome that opened it. The table lock comes first and is held to commit, as the
    # INSERT's would be: a replay that locks the table EXCLUSIVE to read the newest id
    # then waits for every id already drawn.
    await conn.execute("LOCK TABLE sync.outcomes IN ROW EXCLUSIVE MODE")
    rows = await conn.fetch(_INSERT_OUTCOMES, _encode(list(outcomes)).decode())
    for outcome, drawn in zip(outcomes, sorted(row["id"] for row in rows), strict=True):
        outcome.id = drawn
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


async def fold(conn: Conn, outcomes: Sequence[Outcome], *,
               tables: LedgerTables = LIVE) -> None:
    """Apply outcomes, in order, to the failure log and the history."""
    # Resolving needs an open entry: with none open (the usual case) and none opened
    # by this batch yet, the statement is skipped.
    any_open = bool(await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {tables.failures} WHERE status = 'open')"))
    for segment in segments(outcomes):
        any_open = await _fold_segment(conn, segment, tables, any_open=any_open)
    # Counts add up in any order, and the history keeps hours by its own newest hour,
    # so one statement for the whole batch folds to the same rows as one per segment.
    counts: Counter[HistoryKey] = Counter()
    for o in outcomes:
        way = direction_of(o.source)
        if o.outcome in COUNTED and way is not None and o.module != "unknown":
            counts[(hour_of(o.captured_at), way, o.module, COUNTED[o.outcome])] += 1
    await add_history(conn, counts, table=tables.history)


async def _fold_segment(conn: Conn, outcomes: Sequence[Outcome],
                        tables: LedgerTables, *, any_open: bool) -> bool:
    """The failure log's part of the fold; return whether an entry may be open now."""
    failed = [o for o in outcomes if o.outcome == "failed"]
    resolving = [o for o in outcomes if o.outcome in RESOLVING]
    if resolving and any_open:
        await conn.execute(
            f"""
            UPDATE {tables.failures} f SET status = 'resolved', resolved_at = r.at
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
            f"""
            INSERT INTO {tables.failures} AS f (id, source, module, record_id, event_id, reason,
                detail, raw, first_failed_at, last_failed_at)
            VALUES ($9, $1, $2, $3, $4, $5, $6, $7, $8, $8)
            ON CONFLICT (source, module, record_id, reason) WHERE status = 'open'
            DO UPDATE SET attempts = f.attempts + 1, event_id = EXCLUDED.event_id,
                detail = EXCLUDED.detail, raw = coalesce(EXCLUDED.raw, f.raw),
                last_failed_at = greatest(f.last_failed_at, EXCLUDED.last_failed_at)
            """,
            [(o.source, o.module, o.record_id, o.event_id, o.reason or "", o.detail[:2000],
              o.raw, o.captured_at, o.id) for o in failed],
        )
    return any_open or bool(failed)


async def add_history(conn: Conn, counts: Counter[HistoryKey], *,
                      table: str = LIVE.history) -> None:
    """Add to the history and drop hours more than eight days before the newest it holds.

    Measured from the newest hour in the table, not in ``counts``: then what is kept
    does not depend on how the outcomes were cut into batches (a replay folds them in
    other chunks than the live batches did).
    """
    if not counts:
        return
    keys = sorted(counts)
    await conn.execute(
        f"""
        INSERT INTO {table} AS h (hour, direction, module, added, updated, failed)
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
    # Exact hours (an interval of days would follow the session's time zone over DST).
    await conn.execute(
        f"DELETE FROM {table} WHERE hour < (SELECT max(hour) FROM {table})"
        f" - interval '{int(HISTORY_KEEP.total_seconds())} seconds'")


def outcome_from_row(row: Any) -> Outcome:
    return Outcome(row["seq"], row["event_id"], row["source"], row["module"], row["record_id"],
                   row["captured_at"], row["outcome"], row["reason"], row["detail"], row["raw"],
                   row["id"])


async def fold_range(conn: Conn, *, tables: LedgerTables, after: int = 0,
                     through: int | None = None, chunk: int = 20_000,
                     on_chunk: Callable[[int], None] | None = None) -> int:
    """Fold the outcomes with ``after < id <= through``, in decision (id) order, into
    ``tables``; return the last id folded (``after`` when there was none).

    Used by replay to build fresh failure-log and history tables; any chunking
    folds to the same rows (see ``segments`` and ``add_history``).
    ``on_chunk`` is told how many outcomes each chunk held.
    """
    last = after
    while True:
        rows = await conn.fetch(
            "SELECT * FROM sync.outcomes WHERE id > $1 AND ($2::bigint IS NULL OR id <= $2)"
            " ORDER BY id LIMIT $3", last, through, chunk)
        if not rows:
            return last
        await fold(conn, [outcome_from_row(r) for r in rows], tables=tables)
        last = rows[-1]["id"]
        if on_chunk is not None:
            on_chunk(len(rows))
