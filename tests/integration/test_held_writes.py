"""Invariant 5 and SYNC-02: a write the guard holds back lands later or fails with a
reason, never vanishes; one-way mode treats the desk's own changes as seen."""

from __future__ import annotations

import asyncpg

from daemon.service.failures import retry_failures
from projections.sync import held_while_paused
from projections.sync_plan import REASON_UNSEEN_EDIT
from tests.integration.test_sync_rules import linked, open_failures
from tests.support.pipeline import Pipeline


async def _pair(pipe: Pipeline) -> tuple[int, int]:
    crm_id = await pipe.fetchval(
        "INSERT INTO crm.contacts (first_name, last_name, phone) VALUES ('Ana', 'Lima', 'p0')"
        " RETURNING id")
    await pipe.settle()
    pair = await linked(pipe, "contacts", crm_id=crm_id)
    assert pair is not None
    return pair


async def test_one_way_desk_edit_does_not_hold_back_later_crm_changes(
        pipeline: Pipeline) -> None:
    """SYNC-02: in one-way mode a desk edit is logged, not applied, and seen: the CRM's
    next change of the record reaches the desk, and the CRM's values win there."""
    pipeline.configure(direction="crm_to_desk")
    desk_id, crm_id = await _pair(pipeline)
    await pipeline.execute("UPDATE desk.contacts SET first_name = 'Desk' WHERE id = $1", desk_id)
    await pipeline.settle()
    await pipeline.execute("UPDATE crm.contacts SET phone = 'p1' WHERE id = $1", crm_id)
    await pipeline.settle()
    desk = await pipeline.fetchrow("SELECT * FROM desk.contacts WHERE id = $1", desk_id)
    crm = await pipeline.fetchrow("SELECT * FROM crm.contacts WHERE id = $1", crm_id)
    assert desk is not None and crm is not None
    assert (desk["phone"], desk["first_name"]) == ("p1", "Ana")  # the CRM is the source
    assert (crm["phone"], crm["first_name"]) == ("p1", "Ana")  # nothing reached the CRM
    assert await open_failures(pipeline) == []


async def test_one_way_desk_edit_racing_a_crm_change_is_written_over(
        pipeline: Pipeline) -> None:
    """SYNC-02: a CRM change written while the desk's newer edit is still on its way is
    held back, then made when that desk edit arrives (the CRM is the source)."""
    pipeline.configure(direction="crm_to_desk")
    desk_id, crm_id = await _pair(pipeline)
    await pipeline.execute("UPDATE crm.contacts SET phone = 'p1' WHERE id = $1", crm_id)
    await pipeline.execute("UPDATE desk.contacts SET phone = 'desk' WHERE id = $1", desk_id)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT phone FROM desk.contacts WHERE id = $1", desk_id) == "p1"
    assert await open_failures(pipeline) == []


async def test_switching_direction_mid_stream_converges(pipeline: Pipeline) -> None:
    """SYNC-02: two-way, then one-way, then two-way again: every CRM change arrives (with
    the CRM's values of the record: a desk edit made in one-way mode is replaced at
    the CRM's next change), and a desk edit made after switching back reaches the CRM."""
    desk_id, crm_id = await _pair(pipeline)
    pipeline.configure(direction="crm_to_desk")
    await pipeline.execute("UPDATE desk.contacts SET mobile = 'm-desk' WHERE id = $1", desk_id)
    await pipeline.settle()
    await pipeline.execute("UPDATE crm.contacts SET phone = 'p-crm' WHERE id = $1", crm_id)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT phone FROM desk.contacts WHERE id = $1", desk_id) == "p-crm"
    pipeline.configure(direction="two_way")
    await pipeline.execute("UPDATE desk.contacts SET first_name = 'Bia' WHERE id = $1", desk_id)
    await pipeline.settle()
    desk = await pipeline.fetchrow("SELECT * FROM desk.contacts WHERE id = $1", desk_id)
    crm = await pipeline.fetchrow("SELECT * FROM crm.contacts WHERE id = $1", crm_id)
    assert desk is not None and crm is not None
    assert (desk["phone"], desk["first_name"]) == ("p-crm", "Bia")
    assert (crm["phone"], crm["first_name"]) == ("p-crm", "Bia")
    assert await open_failures(pipeline) == []


async def test_a_touch_that_captures_nothing_does_not_hold_a_write_back(
        pipeline: Pipeline) -> None:
    """Invariant 5: a row whose modification time moved without a change of its values
    (no event will come) still takes the sync's write."""
    desk_id, crm_id = await _pair(pipeline)
    await pipeline.execute(
        "UPDATE desk.contacts SET modified_time = clock_timestamp() WHERE id = $1", desk_id)
    await pipeline.execute("UPDATE crm.contacts SET phone = 'p1' WHERE id = $1", crm_id)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT phone FROM desk.contacts WHERE id = $1", desk_id) == "p1"
    assert await open_failures(pipeline) == []


async def test_an_uncaptured_edit_makes_the_held_write_a_failure(pipeline: Pipeline) -> None:
    """Invariant 5: a row changed behind the sync's back (nothing captured, so nothing
    will ever bring its change) makes the write a failure with a reason; a retry
    takes the row as it is now and then lands the write."""
    desk_id, crm_id = await _pair(pipeline)
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.origin = 'sync'")  # as if the sync wrote it
        await conn.execute("UPDATE desk.contacts SET mobile = 'hidden',"
                           " modified_time = clock_timestamp() WHERE id = $1", desk_id)
    await pipeline.execute("UPDATE crm.contacts SET phone = 'p1' WHERE id = $1", crm_id)
    await pipeline.settle()
    assert await open_failures(pipeline) == [("crm", str(crm_id), REASON_UNSEEN_EDIT)]
    assert await pipeline.fetchval(
        "SELECT phone FROM desk.contacts WHERE id = $1", desk_id) == "p0"
    assert await retry_failures(pipeline.pool, ids=None, reason=REASON_UNSEEN_EDIT,
                                everything=False) == {
        "selected": 1, "retried": 1, "not_retryable": 0}
    await pipeline.settle()
    assert await open_failures(pipeline) == []
    desk = await pipeline.fetchrow("SELECT * FROM desk.contacts WHERE id = $1", desk_id)
    assert desk is not None and (desk["phone"], desk["mobile"]) == ("p1", None)


async def test_held_while_paused_reads_the_queue_not_the_whole_log(pool: asyncpg.Pool) -> None:
    """The guard asks, for the writes it refused, which records have a change queued
    while paused: that reads the queue (``sync.deferred``) and the log rows it names,
    not the whole log. It read every logged event before (121 ms a refused batch at
    100,000 events in the steady benchmark, a full scan of a log that only grows)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO syncd.event_log (event_id, source, module, record_id, op, origin,"
            " modified_at, captured_at, payload, kafka_topic, kafka_partition, kafka_offset)"
            " SELECT gen_random_uuid(), 'desk', 'contacts', i::text, 'update', 'user', now(),"
            " now(), '{}', 't', 0, i FROM generate_series(1, 5000) AS i")
        await conn.execute("ANALYZE syncd.event_log")
        await conn.execute("INSERT INTO sync.deferred (seq) SELECT seq FROM syncd.event_log"
                           " WHERE record_id IN ('7', '9')")
        read = ("SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables"
                " WHERE relid = 'syncd.event_log'::regclass")
        async with conn.transaction():  # counts not yet flushed: the difference is ours
            before = await conn.fetchval(read)
            held = await held_while_paused(conn, "desk", "contacts", ["7", "8", "4999"])
            rows_read = await conn.fetchval(read) - before
        assert held == {"7"}
        assert rows_read <= 2  # the two queued events, found by their key
