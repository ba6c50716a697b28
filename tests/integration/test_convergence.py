"""SYNC-15 and OWN-02 as a property: whatever the interleaving of concurrent edits on
both sides, redeliveries and restarts, both stores end with the same values, the
newest edit of each field, and no duplicate links."""

from __future__ import annotations

import asyncio
import functools
import random

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.relay import FETCH_OUTBOX
from projections.batch import Message, apply_batch, reset_offset
from projections.config import Direction, SyncConfig
from projections.sync import SyncProjection

FIELDS = ("first_name", "phone", "mobile")
TABLES = ("desk.contacts, crm.contacts, desk.outbox, crm.outbox, sync.links, sync.failures,"
          " sync.history, sync.outcomes, sync.deferred, syncd.event_log, syncd.consumer_offsets")

edit = st.tuples(st.sampled_from(["desk", "crm"]), st.integers(0, 2), st.sampled_from(FIELDS),
                 st.sampled_from(["a", "b", "c", None]))


async def drain(conn: asyncpg.Connection) -> dict[tuple[str, str], list[bytes]]:
    """Outbox rows as encoded events, per record, in capture order."""
    per_record: dict[tuple[str, str], list[bytes]] = {}
    for source in ("desk", "crm"):
        rows = await conn.fetch(FETCH_OUTBOX.format(schema=source), 0, 100_000, source)
        for row in rows:
            per_record.setdefault((source, row["key"]), []).append(row["body"].encode())
    return per_record


def _constant(config: SyncConfig) -> SyncConfig:
    return config


async def deliver(conn: asyncpg.Connection, bodies: list[bytes], batch_sizes: list[int],
                  offset: int, *configs: SyncConfig) -> int:
    """Apply ``bodies`` in batches of ``batch_sizes`` (then the rest), the n-th batch
    under the n-th of ``configs`` (the last one for the rest; SyncConfig() if none)."""
    position = 0
    for n, size in enumerate([*batch_sizes, len(bodies)]):
        chunk = bodies[position:position + max(1, size)]
        if not chunk:
            break
        messages = [Message("t", 0, offset + i, body) for i, body in enumerate(chunk)]
        config = configs[min(n, len(configs) - 1)] if configs else SyncConfig()
        outcome = await apply_batch(conn, group_id="g", messages=messages,
                                    starts={("t", 0): offset},  # a restart each time:
                                    projections=[SyncProjection(functools.partial(
                                        _constant, config))])
        assert outcome.fenced is None
        offset += len(chunk)
        position += len(chunk)
    return offset


async def scenario(dsn: str, edits: list[tuple[str, int, str, str | None]], seed: int,
                   redeliver: list[int], batch_sizes: list[int],
                   directions: list[Direction] | None = None) -> None:
    """Without ``directions``: every edit converges on both sides. With them (one per
    batch; SYNC-02), no CRM edit is lost: a field whose newest edit was made in the
    CRM ends with that value on both sides, whatever mode each batch ran in."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
        await reset_offset(conn, "g", ("t", 0), 0)
        await conn.execute("INSERT INTO desk.contacts (last_name, first_name, phone, mobile)"
                           " SELECT 'r' || g, 'f0', 'p0', 'm0' FROM generate_series(1, 3) g")
        first = await drain(conn)
        offset = await deliver(conn, [b for bodies in first.values() for b in bodies], [], 0)
        links = await conn.fetch("SELECT desk_id, crm_id FROM sync.links ORDER BY desk_id")
        assert len(links) == 3
        local: dict[tuple[str, int], dict[str, str | None]] = {
            (side, i): {"first_name": "f0", "phone": "p0", "mobile": "m0"}
                 for side in ("desk", "crm") for i in range(3)}
        expected: list[dict[str, str | None]] = [
            {"first_name": "f0", "phone": "p0", "mobile": "m0"} for _ in range(3)]
        newest_by: dict[tuple[int, str], str] = {}
        for side, i, field, value in edits:
            record_id = links[i][f"{side}_id"]
            await conn.execute(f"UPDATE {side}.contacts SET {field} = $1 WHERE id = $2",
                               value, int(record_id))
            if local[(side, i)][field] != value:  # an edit that changes nothing is no edit
                local[(side, i)][field] = value
                expected[i][field] = value
                newest_by[(i, field)] = side
        per_record = await drain(conn)
        rng = random.Random(seed)
        queues = [list(bodies) for bodies in per_record.values()]
        order: list[bytes] = []
        while any(queues):  # keep each record's order, interleave records at random
            queue = rng.choice([q for q in queues if q])
            order.append(queue.pop(0))
        for index in redeliver:  # a redelivered copy arrives again, later
            if order:
                copy = order[index % len(order)]
                order.insert(rng.randint(index % len(order), len(order)), copy)
        configs = [SyncConfig(direction=d) for d in directions or []]
        await deliver(conn, order, batch_sizes, offset, *configs)
        for i, link in enumerate(links):
            desk = await conn.fetchrow("SELECT * FROM desk.contacts WHERE id = $1",
                                       int(link["desk_id"]))
            crm = await conn.fetchrow("SELECT * FROM crm.contacts WHERE id = $1",
                                      int(link["crm_id"]))
            assert desk is not None and crm is not None
            if directions is None:
                assert {f: desk[f] for f in FIELDS} == expected[i]
                assert {f: crm[f] for f in FIELDS} == expected[i]
                continue
            for f in FIELDS:
                if newest_by.get((i, f)) == "crm":
                    assert (desk[f], crm[f]) == (expected[i][f], expected[i][f]), (i, f)
        assert await conn.fetchval("SELECT count(*) FROM sync.links") == 3
        assert await conn.fetchval("SELECT count(*) FROM crm.contacts") == 3
    finally:
        await conn.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=st.lists(edit, min_size=1, max_size=12), seed=st.integers(0, 2**32),
       redeliver=st.lists(st.integers(0, 50), max_size=4),
       batch_sizes=st.lists(st.integers(1, 6), max_size=5))
def test_concurrent_edits_converge_in_any_order(
    database_url: str, edits: list[tuple[str, int, str, str | None]], seed: int,
    redeliver: list[int], batch_sizes: list[int],
) -> None:
    """Any interleaving, redelivery and batching of concurrent edits converges to the
    newest value of each field on both sides, with no duplicate links."""
    asyncio.run(scenario(database_url, edits, seed, redeliver, batch_sizes))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=st.lists(edit, min_size=1, max_size=12), seed=st.integers(0, 2**32),
       batch_sizes=st.lists(st.integers(1, 6), max_size=5),
       directions=st.lists(st.sampled_from(["two_way", "crm_to_desk"]), min_size=1,
                           max_size=6))
def test_no_crm_edit_is_lost_across_mode_switches(
    database_url: str, edits: list[tuple[str, int, str, str | None]], seed: int,
    batch_sizes: list[int], directions: list[Direction],
) -> None:
    """SYNC-02 with invariant 5: switching between two-way and one-way mid-stream never
    loses a CRM edit (one-way desk edits are seen, so they hold nothing back)."""
    asyncio.run(scenario(database_url, edits, seed, [], batch_sizes, directions))
