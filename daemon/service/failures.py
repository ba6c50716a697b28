"""The failure log (OPS-04): list it, retry what failed."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg

from projections.catalog import SYNCED_MODULES
from projections.db import Conn
from projections.events import ChangeEvent, decode_event
from projections.stores.embedded import EmbeddedStore
from projections.stores.outbox import Outbox
from projections.sync_plan import REASON_UNSEEN_EDIT

State = Literal["open", "resolved", "all"]

RETRY_CHUNK = 500
"""Failures a retry selects, locks and re-sends per transaction: ``retry --all`` over
a large failure log holds a bounded number of row locks and rows in memory at a time."""


async def list_failures(pool: asyncpg.Pool, *, state: State, reason: str | None,
                        module: str | None, limit: int, offset: int) -> dict[str, Any]:
    """A page of the failure log, newest first, with the total that matches."""
    where = ("($1 = 'all' OR status = $1) AND ($2::text IS NULL OR reason = $2)"
             " AND ($3::text IS NULL OR module = $3)")
    args = [state, reason, module]
    total = await pool.fetchval(f"SELECT count(*) FROM sync.failures WHERE {where}", *args)
    rows = await pool.fetch(
        f"SELECT id, source, module, record_id, event_id, reason, detail, first_failed_at,"
        f" last_failed_at, attempts, status, resolved_at FROM sync.failures"
        f" WHERE {where} ORDER BY last_failed_at DESC, id DESC"
        f" LIMIT {int(limit)} OFFSET {int(offset)}", *args)
    return {"total": total, "limit": limit, "offset": offset,
            "failures": [dict(r) for r in rows]}


async def retry_failures(pool: asyncpg.Pool, *, ids: list[int] | None, reason: str | None,
                         everything: bool, chunk: int = RETRY_CHUNK) -> dict[str, int]:
    """Re-apply the original events of open failures against the current state.

    A retry is itself an event: the original change goes through the store's
    outbox again (new event id, same values and source times), so replicas and
    replays see it like any change. Rejected messages that never decoded
    cannot be retried.

    The selected failures are taken in id order, ``chunk`` at a time, each chunk in
    a transaction of its own (locked, re-sent, committed), so memory and locks stay
    bounded however many are open. Each chunk starts after the last id of the one
    before; a chunk that commits stays committed if a later one fails.
    """
    selected = retried = skipped = 0
    after = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT f.id, f.source, f.reason, e.payload::text AS payload"
                " FROM sync.failures f LEFT JOIN syncd.event_log e ON e.event_id = f.event_id"
                " WHERE f.status = 'open' AND f.id > $4"
                " AND ($1 OR f.id = ANY($2::bigint[]) OR f.reason = $3)"
                " ORDER BY f.id LIMIT $5 FOR UPDATE OF f",
                everything, ids or [], reason, after, chunk)
            for row in rows:
                if row["payload"] is None or row["source"] not in ("desk", "crm"):
                    skipped += 1
                    continue
                event = decode_event(row["payload"].encode())
                if row["reason"] == REASON_UNSEEN_EDIT:
                    await _acknowledge_rows(conn, event)
                await Outbox(conn, event.source).append(event, keep_id=False)
                retried += 1
        selected += len(rows)
        if len(rows) < chunk:
            break
        after = rows[-1]["id"]
    return {"selected": selected, "retried": retried, "not_retryable": skipped}


async def _acknowledge_rows(conn: Conn, event: ChangeEvent) -> None:
    """A retry of *the record changed after the sync last saw it*: nothing captured that
    change, so nothing would ever bring it. Retrying takes both rows of the pair as
    seen as they are now; the write then goes ahead, and the uncaptured values of
    mapped fields give way to the synced ones."""
    if event.module not in SYNCED_MODULES:
        return
    link = await conn.fetchrow(
        f"SELECT link_id, desk_id, crm_id FROM sync.links WHERE module = $1"
        f" AND {event.source}_id = $2 FOR UPDATE", event.module, event.record_id)
    if link is None:
        return
    for side in ("desk", "crm"):
        record_id = link[f"{side}_id"]
        if record_id is None:
            continue
        held = (await EmbeddedStore(conn, side).read(event.module, [record_id])).get(record_id)
        if held is None:
            continue
        await conn.execute(
            f"UPDATE sync.links SET {side}_seen = greatest({side}_seen, $2), {side}_fp = NULL"
            " WHERE link_id = $1", link["link_id"], held.modified_time)
