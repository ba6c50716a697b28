"""A batch bigger than PostgreSQL's lock table (OWN-05's match-key locks).

The lock table is shared by the whole server and holds about
max_locks_per_transaction x max_connections locks (6,400 by default). A lock per
match key ran it out of space ("out of shared memory") on a first sync's batches
of new records; the keys are now hashed into a bounded number of buckets.
"""

from __future__ import annotations

import asyncpg

from adapters.relay import FETCH_OUTBOX
from projections.batch import Message, apply_batch, reset_offset
from projections.config import SyncConfig
from projections.handshake import HandshakeProjection
from projections.sync import SyncProjection

NEW = 12_000


async def test_a_batch_of_new_records_beyond_the_lock_table_applies(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(
            "INSERT INTO crm.contacts (last_name, email, phone)"
            " SELECT 'n' || g, 'p' || g || '@example.com', '+1555' || g"
            " FROM generate_series(1, $1) g", NEW)
        rows = await conn.fetch(FETCH_OUTBOX.format(schema="crm"), 0, NEW, "crm")
        assert len(rows) == NEW
        await reset_offset(conn, "g", ("t", 0), 0)
        messages = [Message("t", 0, i, row["body"].encode()) for i, row in enumerate(rows)]
        outcome = await apply_batch(conn, group_id="g", messages=messages,
                                    starts={("t", 0): 0},
                                    projections=[SyncProjection(SyncConfig),
                                                 HandshakeProjection()])
        assert outcome.fenced is None
        assert await conn.fetchval("SELECT count(*) FROM sync.links") == NEW
        assert await conn.fetchval("SELECT count(*) FROM desk.contacts") == NEW
    finally:
        await conn.close()
