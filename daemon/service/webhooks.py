"""The webhook intake: an accepted change notification goes to its store's outbox."""

from __future__ import annotations

import asyncpg
import msgspec

from projections.events import ChangeEvent


async def accept(pool: asyncpg.Pool, event: ChangeEvent) -> None:
    """Write ``event`` to its source's outbox (once per event id) and wake the relay.

    Written before the sender gets its answer, so nothing acknowledged can vanish with
    the broker; a sender's retry with the same ``event_id`` adds nothing."""
    await pool.execute(
        f"INSERT INTO {event.source}.outbox (event_id, module, record_id, op, \"values\","
        " changed, modified_at, created_at, origin) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7,"
        " $8, 'user') ON CONFLICT (event_id) DO NOTHING",
        event.event_id, event.module, event.record_id, event.op,
        msgspec.json.encode(event.values).decode(), event.changed, event.modified_at,
        event.created_at)
    await pool.execute("SELECT pg_notify('syncd_outbox', $1)", event.source)
