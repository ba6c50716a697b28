"""A first sync running while people edit (found by the short chaos run once the first
sync started with the integration, not on the daemon's first start).

The first sync captures each record as it is, as a ``create`` event of origin
``import`` that touches every field at the record's modification time. For a record
the live sync has linked already, that time belongs to the record's newest change
only: merged as a change, the import restamped the record's older fields with it and
beat a newer edit of the other side still on its way, which was then lost on both
sides."""

from __future__ import annotations

import asyncpg

from adapters import initial_sync
from projections.batch import reset_offset
from tests.integration.test_convergence import deliver, drain


async def test_an_import_of_a_linked_record_does_not_undo_a_newer_edit(
        database_url: str) -> None:
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await reset_offset(conn, "g", ("t", 0), 0)
        await conn.execute("INSERT INTO desk.contacts (last_name, first_name, phone)"
                           " VALUES ('Doe', 'f0', 'p0')")
        offset = await deliver(conn, [b for bs in (await drain(conn)).values() for b in bs], [], 0)
        crm_id = await conn.fetchval("SELECT crm_id FROM sync.links")
        # A person edits the CRM twin's first name, then another the desk record's phone.
        await conn.execute("UPDATE crm.contacts SET first_name = 'crm-new' WHERE id = $1",
                           int(crm_id))
        await conn.execute("UPDATE desk.contacts SET phone = 'p1'")
        pending = await drain(conn)
        crm_edit = pending[("crm", f"contacts:{crm_id}")]
        desk_edit = [b for (source, _), bs in pending.items() if source == "desk" for b in bs]
        # The CRM edit is applied first: its write to the desk is held back, the desk
        # record having changed since (its event is on its way).
        offset = await deliver(conn, crm_edit, [], offset)
        assert await conn.fetchval("SELECT first_name FROM desk.contacts") == "f0"
        # The first sync captures the desk record as it is now (f0, p1)...
        await initial_sync.start(pool, direction="two_way", window_days=365)
        assert await initial_sync.capture_chunk(pool, "desk", "contacts", 100) == 1
        imported = [b for (source, _), bs in (await drain(conn)).items() if source == "desk"
                    for b in bs if b not in desk_edit]
        assert len(imported) == 1
        # ... then the desk edit arrives (the held write lands), then the import.
        offset = await deliver(conn, desk_edit, [], offset)
        offset = await deliver(conn, imported, [], offset)

        values = await conn.fetchrow(
            "SELECT d.first_name AS desk, c.first_name AS crm FROM desk.contacts d,"
            " crm.contacts c")
        assert values is not None
        assert (values["desk"], values["crm"]) == ("crm-new", "crm-new")
    finally:
        await pool.close()
        await conn.close()
