"""A store's outbox in the daemon's database: its change feed, on its way to Kafka.

Every store kind has one (``<side>.outbox``): the embedded stores' capture triggers
fill it, the webhook intake and a retry append to it, the relay sends it, and the
batch that logs an event releases its row. One implementation for every store kind,
since the outbox is the daemon's own table whatever the store is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from projections.catalog import Side
from projections.db import Conn
from projections.events import ChangeEvent, Origin

NOTIFY_CHANNEL = "syncd_outbox"
"""Woken with the side as payload when rows are appended (the relay listens)."""

_RELEASE = """
WITH gone AS (
    DELETE FROM {side}.outbox WHERE event_id = ANY($1::uuid[]) RETURNING event_id, origin)
INSERT INTO syncd.imports_released AS t (source, kafka_partition, released)
SELECT $3, r.part, count(*)
FROM gone JOIN unnest($1::uuid[], $2::int[]) AS r(event_id, part) USING (event_id)
WHERE gone.origin = 'import'
GROUP BY r.part
ON CONFLICT (source, kafka_partition) DO UPDATE SET released = t.released + EXCLUDED.released
"""


class Outbox:
    def __init__(self, conn: Conn, side: Side) -> None:
        if side not in ("desk", "crm"):
            raise ValueError(f"unknown store {side!r}")
        self.conn = conn
        self.side: Side = side

    async def append(self, event: ChangeEvent, *, keep_id: bool,
                     origin: Origin = "user") -> None:
        """Append a change (a person's, by default; the sync's own write that landed on
        a remote store, from its writer) and wake the relay. ``keep_id``: under the
        event's own id, once (a sender's retry with the same id adds nothing);
        otherwise as a new event (a retry of a failure: same values and source times)."""
        values = msgspec.json.encode(event.values).decode()
        if keep_id:
            await self.conn.execute(
                f"INSERT INTO {self.side}.outbox (event_id, module, record_id, op, \"values\","
                " changed, modified_at, created_at, origin) VALUES ($1, $2, $3, $4, $5::jsonb,"
                " $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
                event.event_id, event.module, event.record_id, event.op, values,
                event.changed, event.modified_at, event.created_at, origin)
        else:
            await self.conn.execute(
                f"INSERT INTO {self.side}.outbox (module, record_id, op, \"values\", changed,"
                " modified_at, created_at, origin) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7,"
                " $8)",
                event.module, event.record_id, event.op, values, event.changed,
                event.modified_at, event.created_at, origin)
        await self.wake()

    async def append_many(self, events: Sequence[ChangeEvent]) -> None:
        """Append changes as new events (``append`` without ``keep_id``), each of its
        own ``origin``, in one round of statements, and wake the relay once."""
        if not events:
            return
        await self.conn.executemany(
            f"INSERT INTO {self.side}.outbox (module, record_id, op, \"values\", changed,"
            " modified_at, created_at, origin) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7,"
            " $8)",
            [(e.module, e.record_id, e.op, msgspec.json.encode(e.values).decode(), e.changed,
              e.modified_at, e.created_at, e.origin) for e in events])
        await self.wake()

    async def wake(self) -> None:
        await self.conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, self.side)

    async def release(self, rows: Sequence[tuple[uuid.UUID, int]], *,
                      imports: bool = True) -> None:
        """The event log (or the failure log) holds these events now, each given with
        the Kafka partition it came from: their rows may go. The first sync's rows
        among them are counted as released (``syncd.imports_released``, per partition:
        its progress, without counting the outbox). ``imports=False``: the caller knows
        none of them is the first sync's (a plain delete, the live batches' case)."""
        by_id = dict(rows)  # a copy of an event twice in one batch: one row, counted once
        if not by_id:
            return
        if imports:
            await self.conn.execute(_RELEASE.format(side=self.side), list(by_id),
                                    list(by_id.values()), self.side)
        else:
            await self.conn.execute(
                f"DELETE FROM {self.side}.outbox WHERE event_id = ANY($1::uuid[])",
                list(by_id))

    async def changes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a change here that is not the sync's own (the port's
        ``Store.changes_in_flight``, for the stores whose capture fills this outbox)."""
        rows = await self.conn.fetch(
            f"SELECT DISTINCT record_id FROM {self.side}.outbox WHERE module = $1"
            " AND record_id = ANY($2::text[])"
            " AND origin <> 'sync'",  # the sync's own logged writes bring nothing to it
            module, list(ids))
        return {row["record_id"] for row in rows}

    async def deletes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a delete here (``Store.deletes_in_flight``)."""
        rows = await self.conn.fetch(
            f"SELECT DISTINCT record_id FROM {self.side}.outbox"
            " WHERE module = $1 AND op = 'delete' AND record_id = ANY($2::text[])",
            module, list(ids))
        return {row["record_id"] for row in rows}

    async def backlog(self) -> int:
        """Rows not yet released: captured changes the event log does not hold yet."""
        return int(await self.conn.fetchval(f"SELECT count(*) FROM {self.side}.outbox"))
