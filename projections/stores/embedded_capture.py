"""The first sync's capture on the embedded stores: a store's existing records of a
window put into its outbox as ``create`` events of origin ``import``, in chunks
(``projections.stores.port.WindowCapture`` has the contract). With
``projections.stores.embedded``, the only module outside the migrations that reads
the stores' tables.
"""

from __future__ import annotations

import datetime as dt

from projections.catalog import Side
from projections.db import Conn
from projections.events import MODULES


class EmbeddedCapture:
    def __init__(self, conn: Conn, side: Side) -> None:
        if side not in ("desk", "crm"):
            raise ValueError(f"unknown store {side!r}")
        self.conn = conn
        self.side: Side = side

    def _table(self, module: str) -> str:
        if module not in MODULES:
            raise ValueError(f"not a module of the stores: {module!r}")
        return f"{self.side}.{module}"

    async def window(self, module: str, cutoff: dt.datetime) -> tuple[int, int]:
        """How many live records were created at or after ``cutoff``, and the highest id
        now (one snapshot: later records are captured live, or are the sync's own)."""
        row = await self.conn.fetchrow(
            "SELECT count(*) FILTER (WHERE NOT deleted AND created_time >= $1) AS total,"
            f" coalesce(max(id), 0) AS until_id FROM {self._table(module)}", cutoff)
        assert row is not None
        return int(row["total"]), int(row["until_id"])

    async def capture(self, module: str, *, after_id: int, cutoff: dt.datetime,
                      until_id: int | None, limit: int) -> list[int]:
        """Append to the outbox the next ``limit`` live records of the window (ids above
        ``after_id``, at most ``until_id``, created at or after ``cutoff``), in id order,
        as ``create`` events of origin ``import``; return their ids."""
        rows = await self.conn.fetch(
            f"INSERT INTO {self.side}.outbox (module, record_id, op, \"values\", changed,"
            " modified_at, created_at, origin)"
            " SELECT $1, t.id::text, 'create', to_jsonb(t), NULL, t.modified_time,"
            f" t.created_time, 'import' FROM {self._table(module)} t"
            " WHERE t.id > $2 AND NOT t.deleted AND t.created_time >= $3"
            " AND ($5::bigint IS NULL OR t.id <= $5)"
            " ORDER BY t.id LIMIT $4 RETURNING record_id::bigint AS id",
            module, after_id, cutoff, limit, until_id)
        return [int(r["id"]) for r in rows]
