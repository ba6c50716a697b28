"""A batch reads the rows it touches, found by index, not whole tables: each query here
once read a table in full, a cost that grew with the table (the steady benchmark at
1,000,000 events: the outboxes' guard asks 77 s of 554, the signals' people 29 s)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from projections.batch import LoggedEvent
from projections.db import Conn
from projections.events import ChangeEvent
from projections.sales_signals import SalesSignalsProjection
from projections.stores.outbox import Outbox

T = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


async def rows_read(conn: Conn, table: str) -> int:
    """Rows of ``table`` this session has read and not yet reported (in a transaction:
    the difference of two readings is what the statements between them read)."""
    return int(await conn.fetchval(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
        " WHERE relid = $1::regclass", table))


async def test_the_guard_finds_changes_in_flight_by_record(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO desk.outbox (module, record_id, op, \"values\", modified_at,"
            " created_at, origin) SELECT 'contacts', i::text, CASE WHEN i % 2 = 0 THEN"
            " 'update' ELSE 'delete' END, '{}', now(), now(), CASE WHEN i % 3 = 0 THEN"
            " 'sync' ELSE 'user' END FROM generate_series(1, 5000) AS i")
        await conn.execute("ANALYZE desk.outbox")
        outbox = Outbox(conn, "desk")
        async with conn.transaction():
            before = await rows_read(conn, "desk.outbox")
            changes = await outbox.changes_in_flight("contacts", ["2", "3", "4", "9000"])
            deletes = await outbox.deletes_in_flight("contacts", ["2", "3", "4", "9000"])
            read = await rows_read(conn, "desk.outbox") - before
        assert changes == {"2", "4"} and deletes == {"3"}  # 3 is the sync's own delete
        assert read <= 6  # three rows, each found twice


async def test_the_signals_read_the_people_a_batch_names(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sales_signals.people (kind, record_id, email_keys, phone_keys)"
            " SELECT 'contact', 'c' || i, ARRAY['p' || i || '@x.org'], '{}'"
            " FROM generate_series(1, 5000) AS i")
        await conn.execute("ANALYZE sales_signals.people")
        event = ChangeEvent(
            event_id=uuid.uuid4(), source="crm", module="contacts", record_id="c7",
            op="update", values={"email": "seven@x.org"}, modified_at=T, created_at=T,
            origin="user", captured_at=T)
        async with conn.transaction():
            before = await rows_read(conn, "sales_signals.people")
            await SalesSignalsProjection().apply(conn, [LoggedEvent(1, event)])
            read = await rows_read(conn, "sales_signals.people") - before
        assert read <= 2  # c7, before its upsert (and again by the upsert's conflict)
        keys = await conn.fetchval("SELECT email_keys FROM sales_signals.people"
                                   " WHERE record_id = 'c7'")
        assert keys == ["seven@x.org"]
