"""The embedded stores' adapter: the desk and the CRM as schemas ``desk`` and ``crm``
of the daemon's database, read and written on the batch's connection (inside the
batch transaction), their capture triggers filling ``<side>.outbox``; and the first
sync's capture of a window of existing records into that outbox (``WindowCapture``).

The only module, with the migrations, that names those schemas' tables for the sync
(``projections.stores.port`` has the contract of each operation). Table names come
from the catalogue (``projections.catalog``), never from outside.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from projections.catalog import SYNCED_MODULES, Side
from projections.db import Conn, loads_json
from projections.events import MODULES
from projections.ledger import Outcome
from projections.stores.outbox import Outbox
from projections.stores.port import Found, Held, Values

# The expressions of the key indexes (migrations/0012_match_keys.sql): the same keys
# as projections.keys computes.
_PRIMARY_KEY = {"contacts": "syncd.email_key(email)",
                "accounts": "syncd.account_key(account_name)"}
_SECONDARY_KEY = "syncd.email_key(secondary_email)"


class EmbeddedStore:
    """One embedded store on one connection (the batch's)."""

    deferred = False

    def __init__(self, conn: Conn, side: Side) -> None:
        if side not in ("desk", "crm"):
            raise ValueError(f"unknown store {side!r}")
        self.conn = conn
        self.side: Side = side

    def _any_table(self, module: str) -> str:
        """A table of the store, synced or not (the first sync also captures what
        only the other projections read: leads, deals, tickets, ...)."""
        if module not in MODULES:
            raise ValueError(f"not a module of the stores: {module!r}")
        return f"{self.side}.{module}"

    def _table(self, module: str) -> str:
        if module not in (*SYNCED_MODULES, "departments"):
            raise ValueError(f"not a synced module: {module!r}")
        return f"{self.side}.{module}"

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        primary = _PRIMARY_KEY.get(module)
        if primary is None or not keys:
            return []
        other = _SECONDARY_KEY if secondary and module == "contacts" else "NULL"
        where = f"{primary} = ANY($1)"
        if other != "NULL":
            where = f"({where} OR {other} = ANY($1))"
        rows = await self.conn.fetch(
            f"SELECT id::text AS id, to_jsonb(t) AS v, {primary} AS k1, {other} AS k2"
            f" FROM {self._table(module)} t WHERE NOT deleted AND {where} ORDER BY id",
            list(keys))
        wanted = set(keys)
        found: list[Found] = []
        for row in rows:
            values = loads_json(row["v"])
            if row["k1"] in wanted:
                found.append(Found(row["id"], values, row["k1"], via_secondary=False))
            if row["k2"] is not None and row["k2"] in wanted and row["k2"] != row["k1"]:
                found.append(Found(row["id"], values, row["k2"], via_secondary=True))
        return found

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        rows = await self.conn.fetch(
            f"SELECT id::text AS id, modified_time, to_jsonb(t) AS v"
            f" FROM {self._table(module)} t WHERE id = ANY($1::bigint[])",
            [int(i) for i in ids if i.isdigit()])
        return {row["id"]: Held(loads_json(row["v"]), row["modified_time"]) for row in rows}

    async def existing(self, module: str, ids: Sequence[str]) -> set[str]:
        rows = await self.conn.fetch(
            f"SELECT id FROM {self._table(module)} WHERE id = ANY($1::bigint[])",
            sorted({int(i) for i in ids if i.isdigit()}))
        return {str(row["id"]) for row in rows}

    async def allocate_ids(self, module: str, count: int) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT nextval(pg_get_serial_sequence($1, 'id')) AS id"
            " FROM generate_series(1, $2)", self._table(module), count)
        return [str(row["id"]) for row in rows]

    async def create(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     *, causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        if not rows:
            return {}
        table = self._table(module)
        cols = ["id", *columns, "custom", "created_time", "modified_time"]
        select = ", ".join(
            "jsonb_strip_nulls(coalesce(r.custom, '{}'))" if c == "custom" else f"r.{c}"
            for c in cols)
        await self.conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select}"
            f" FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) r", _json(rows))
        return {str(row["id"]): row["modified_time"] for row in rows}

    async def update(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     seen: Sequence[dt.datetime | None], *,
                     causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        if not rows:
            return {}
        table = self._table(module)
        sets = "".join(f"{c} = r.{c}, " for c in columns)
        written = await self.conn.fetch(
            # A custom key set to null is removed: absent and null are one value.
            f"UPDATE {table} t SET {sets}"
            "custom = jsonb_strip_nulls(t.custom || coalesce(r.custom, '{}')),"
            " modified_time = greatest(t.modified_time, r.modified_time), deleted = false"
            f" FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) r"
            " JOIN unnest($2::bigint[], $3::timestamptz[]) AS g(id, seen) ON g.id = r.id"
            " WHERE t.id = r.id AND t.modified_time <= g.seen"
            " RETURNING t.id, t.modified_time",
            _json(rows), [int(r["id"]) for r in rows], list(seen))
        return {str(r["id"]): r["modified_time"] for r in written}

    async def changes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        self._table(module)
        return await Outbox(self.conn, self.side).changes_in_flight(module, ids)

    async def deletes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        self._table(module)
        return await Outbox(self.conn, self.side).deletes_in_flight(module, ids)

    async def mark_own_writes(self) -> None:
        await self.conn.execute("SET LOCAL syncd.origin = 'sync'")

    # -- the first sync's capture (WindowCapture) ----------------------------

    async def window(self, module: str, cutoff: dt.datetime) -> tuple[int, int]:
        """How many live records were created at or after ``cutoff``, and the highest id
        now (one snapshot: later records are captured live, or are the sync's own)."""
        row = await self.conn.fetchrow(
            "SELECT count(*) FILTER (WHERE NOT deleted AND created_time >= $1) AS total,"
            f" coalesce(max(id), 0) AS until_id FROM {self._any_table(module)}", cutoff)
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
            f" t.created_time, 'import' FROM {self._any_table(module)} t"
            " WHERE t.id > $2 AND NOT t.deleted AND t.created_time >= $3"
            " AND ($5::bigint IS NULL OR t.id <= $5)"
            " ORDER BY t.id LIMIT $4 RETURNING record_id::bigint AS id",
            module, after_id, cutoff, limit, until_id)
        return [int(r["id"]) for r in rows]



def _json(rows: Sequence[Values]) -> str:
    """Rows as JSON text for jsonb_populate_recordset (transport only: nothing keeps
    this text, so any valid JSON of the same values will do, and msgspec writes it
    several times faster than the json module)."""
    return msgspec.json.encode(list(rows)).decode()
