"""The webhook intake: an accepted change notification goes to its store's outbox."""

from __future__ import annotations

import asyncpg

from adapters.remote_capture import wake
from projections.catalog import Side
from projections.events import ChangeEvent
from projections.stores.outbox import Outbox


async def accept(pool: asyncpg.Pool, event: ChangeEvent) -> None:
    """Write ``event`` to its source's outbox (once per event id) and wake the relay.

    Written before the sender gets its answer, so nothing acknowledged can vanish with
    the broker; a sender's retry with the same ``event_id`` adds nothing."""
    async with pool.acquire() as conn:
        await Outbox(conn, event.source).append(event, keep_id=True)


async def wake_capture(pool: asyncpg.Pool, store: Side) -> None:
    """A remote store said it changed: wake its capture (the replica that polls it)."""
    async with pool.acquire() as conn:
        await wake(conn, store)
