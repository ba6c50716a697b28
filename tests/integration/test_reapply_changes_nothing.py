"""OPS-07: a window re-apply over ordinary use has nothing to do, and says so: it honours
the sync type each event was applied under, writes nothing where the merged values are
there already (the mapping table's bookkeeping included), and holds an absent custom
key and a null one to be the same."""

from __future__ import annotations

from projections.catalog import default_field_pairs
from projections.config import default_mappings
from projections.mapping import build_mapping
from projections.replay import EventLogSource, Window, reapply
from projections.sync import SyncProjection
from tests.support.pipeline import Pipeline


async def test_a_reapply_after_ordinary_use_changes_nothing(pipeline: Pipeline) -> None:
    mapping = build_mapping("accounts", [
        *({"desk": d, "crm": c} for d, c in default_field_pairs("accounts")),
        {"desk": "custom.seats", "desk_type": "integer",
         "crm": "custom.seats", "crm_type": "integer"}])
    pipeline.configure(mappings={**default_mappings(), "accounts": mapping})
    since = await pipeline.fetchval("SELECT clock_timestamp()")
    # Two-way: records both ways, edits, an echo-free round trip.
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email, phone) VALUES ('Doe', 'd@x.org', 'p0')"
        " RETURNING id")
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email) VALUES ('Roe', 'r@x.org') RETURNING id")
    await pipeline.execute("INSERT INTO crm.accounts (account_name) VALUES ('Acme')")
    await pipeline.settle()
    await pipeline.execute("UPDATE desk.contacts SET phone = 'p1' WHERE id = $1", desk_id)
    await pipeline.execute("UPDATE crm.accounts SET website = 'acme.example'")
    await pipeline.settle()
    # One-way: a desk edit logged, not applied; then a CRM edit that is.
    pipeline.configure(direction="crm_to_desk")
    await pipeline.execute("UPDATE desk.contacts SET mobile = 'one-way' WHERE id = $1", desk_id)
    await pipeline.settle()
    await pipeline.execute("UPDATE crm.contacts SET phone = 'c1' WHERE id = $1", crm_id)
    await pipeline.settle()
    pipeline.configure(direction="two_way")
    await pipeline.execute("UPDATE desk.accounts SET industry = 'Retail'")
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT mobile FROM crm.contacts WHERE email = 'd@x.org'") is None

    sync = SyncProjection(lambda: pipeline.config)
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn:
        report = await reapply(conn, sync, EventLogSource(), Window(since=since), dry_run=True)
    assert report.events > 0
    assert {t.table: (t.added, t.changed, t.removed, t.samples) for t in report.tables
            if t.total} == {}
    # The same under the other sync type in force now: what was applied is what counts.
    pipeline.configure(direction="crm_to_desk")
    async with pipeline.pool.acquire() as conn:
        report = await reapply(conn, SyncProjection(lambda: pipeline.config),
                               EventLogSource(), Window(since=since), dry_run=True)
    assert [t.table for t in report.tables if t.total] == []


async def test_custom_null_and_absent_are_one_value(pipeline: Pipeline) -> None:
    """A custom field the sync sets to null is removed, not written as null."""
    mapping = build_mapping("accounts", [
        *({"desk": d, "crm": c} for d, c in default_field_pairs("accounts")),
        {"desk": "custom.seats", "desk_type": "integer",
         "crm": "custom.seats", "crm_type": "integer"}])
    pipeline.configure(mappings={**default_mappings(), "accounts": mapping})
    await pipeline.execute("INSERT INTO crm.accounts (account_name, custom)"
                           " VALUES ('Acme', '{\"seats\": 5}')")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT custom FROM desk.accounts") == '{"seats": 5}'
    await pipeline.execute("UPDATE crm.accounts SET custom = '{}'")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT custom FROM desk.accounts") == "{}"
    # A null appearing where nothing was is no change: nothing is captured for it.
    before = await pipeline.fetchval("SELECT count(*) FROM crm.outbox")
    await pipeline.execute("UPDATE crm.accounts SET custom = '{\"seats\": null}'")
    assert await pipeline.fetchval("SELECT count(*) FROM crm.outbox") == before
