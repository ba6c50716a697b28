"""SYNC rules on the real embedded services: capture → Kafka → projector → stores."""

from __future__ import annotations

from tests.support.pipeline import Pipeline


async def crm_contact_for(pipe: Pipeline, desk_id: int) -> dict[str, object] | None:
    row = await pipe.fetchrow(
        "SELECT c.* FROM sync.links l JOIN crm.contacts c ON c.id = l.crm_id::bigint"
        " WHERE l.module = 'contacts' AND l.desk_id = $1", str(desk_id))
    return dict(row) if row else None


async def test_desk_create_appears_in_crm_and_back(pipeline: Pipeline) -> None:
    """SYNC-09: a desk create reaches the CRM, linked; a CRM edit comes back to the desk."""
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (first_name, last_name, email, phone)"
        " VALUES ('Ana', 'Silva', 'ana@example.com', '+351 1') RETURNING id")
    await pipeline.settle()
    crm = await crm_contact_for(pipeline, desk_id)
    assert crm is not None
    assert (crm["first_name"], crm["last_name"], crm["email"]) == (
        "Ana", "Silva", "ana@example.com")
    await pipeline.execute("UPDATE crm.contacts SET phone = '+351 2' WHERE id = $1", crm["id"])
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT phone FROM desk.contacts WHERE id = $1", desk_id) == "+351 2"
    history = await pipeline.fetch(
        "SELECT direction, module, added, updated, failed FROM sync.history ORDER BY direction")
    assert [tuple(r) for r in history] == [
        ("crm_to_desk", "contacts", 0, 1, 0), ("desk_to_crm", "contacts", 1, 0, 0)]


async def test_sync_writes_are_never_synced_back(pipeline: Pipeline) -> None:
    """SYNC-14: the sync's own writes are never applied back; nothing loops.

    Its writes to crm.contacts are logged, with origin ``sync``, for the handshake board
    (0013_capture_sync_writes.sql); its other writes produce no events."""
    await pipeline.execute(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('L1', 'l1@example.com')")
    await pipeline.execute("INSERT INTO crm.accounts (account_name) VALUES ('Acme')")
    await pipeline.settle()
    await pipeline.execute("UPDATE crm.contacts SET first_name = 'X'")
    await pipeline.settle()
    # Three changes by people, three user events; the sync's CRM contact create is
    # logged as a sync event, its desk account and desk contact writes are not.
    by_origin = {(r["origin"], r["source"], r["module"]): r["n"] for r in await pipeline.fetch(
        "SELECT origin, source, module, count(*) AS n FROM syncd.event_log"
        " GROUP BY 1, 2, 3")}
    assert by_origin == {("user", "desk", "contacts"): 1, ("user", "crm", "accounts"): 1,
                         ("user", "crm", "contacts"): 1, ("sync", "crm", "contacts"): 1}
    # The sync decided something about the three user events only.
    assert await pipeline.fetchval("SELECT count(*) FROM sync.outcomes") == 3
    assert await pipeline.fetchval("SELECT sum(added + updated) FROM sync.history") == 3


async def test_bulk_update_of_10000_rows_arrives_complete(pipeline: Pipeline) -> None:
    """SYNC-09: a bulk update of 10,000 rows arrives whole on the other side."""
    await pipeline.execute(
        "INSERT INTO desk.contacts (last_name, email)"
        " SELECT 'n' || g, 'bulk' || g || '@example.com' FROM generate_series(1, 10000) g")
    await pipeline.settle(timeout=120)
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 10000
    await pipeline.execute("UPDATE desk.contacts SET mobile = '555-' || id")
    await pipeline.settle(timeout=120)
    assert await pipeline.fetchval(
        "SELECT count(*) FROM crm.contacts c JOIN sync.links l ON l.crm_id = c.id::text"
        " JOIN desk.contacts d ON d.id::text = l.desk_id WHERE c.mobile = d.mobile") == 10000
