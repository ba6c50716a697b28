"""Two batches at once (two replicas, or one projector's lanes) lock the pairs they touch
without deadlocking each other.

A pair's desk record and CRM record are on different partitions, so one batch can hold
the CRM side of pair 1 and the desk side of pair 2 while another holds the reverse.
The links were locked one statement a side: each batch took its first side's rows,
then waited for the other's, and PostgreSQL broke the deadlock by rolling one back
(a second's wait and the whole batch done again; it showed as ``batch_conflicted``
in every steady benchmark run with two lanes)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from typing import Any

import asyncpg

from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.stores.kinds import EMBEDDED
from projections.sync import _Batch

T = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def change(source: str, record_id: str) -> ChangeEvent:
    return ChangeEvent(event_id=uuid.uuid4(), source=source, module="contacts",  # type: ignore[arg-type]
                       record_id=record_id, op="update", values={"phone": "+331"},
                       changed=["phone"], modified_at=T, created_at=T, origin="user",
                       captured_at=T)


class Turns:
    """Makes two transactions take turns between their statements: after each fetch a
    transaction waits (a little, at most) for the other to have made its own, which is
    the interleaving that deadlocked when a batch's links took two statements."""

    def __init__(self) -> None:
        self.fetched = {"a": asyncio.Event(), "b": asyncio.Event()}

    def connection(self, conn: Any, me: str, other: str) -> Any:
        turns = self

        class Taking:
            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

            async def fetch(self, *args: Any) -> Any:
                rows = await conn.fetch(*args)
                turns.fetched[me].set()
                # At most a little: the other may be waiting for a lock this one holds.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(turns.fetched[other].wait(), 0.5)
                return rows

        return Taking()


async def test_two_batches_lock_crossed_pairs_without_deadlock(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sync.links (module, desk_id, crm_id, linked_at, updated_at)"
            " VALUES ('contacts', 'd1', 'c1', $1, $1), ('contacts', 'd2', 'c2', $1, $1)", T)
    turns = Turns()

    async def load(me: str, other: str, events: list[ChangeEvent]) -> set[str]:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL deadlock_timeout = '100ms'")
            batch = _Batch(turns.connection(conn, me, other), SyncConfig(), EMBEDDED)
            await batch._load_links(events)
            return {link.crm_id for link in batch.links.values() if link.crm_id}

    # Batch a: pair 1's CRM side, pair 2's desk side; batch b the reverse.
    a, b = await asyncio.gather(
        load("a", "b", [change("crm", "c1"), change("desk", "d2")]),
        load("b", "a", [change("crm", "c2"), change("desk", "d1")]),
        return_exceptions=True)
    assert not isinstance(a, BaseException), a
    assert not isinstance(b, BaseException), b
    assert a == b == {"c1", "c2"}


async def test_a_batch_that_waited_for_a_pair_reads_it_as_the_other_left_it(
        pool: asyncpg.Pool) -> None:
    """The batch that waits for a pair's lock gets the pair once the other batch commits,
    as that batch wrote it: a link missing from its reading would make the pair look
    unlinked (a delete of it, say, would not be recorded on the link)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sync.links (module, desk_id, crm_id, linked_at, updated_at)"
            " SELECT 'contacts', 'd' || i, 'c' || i, $1, $1 FROM generate_series(1, 3000) i",
            T)
        await conn.execute("ANALYZE sync.links")
    async with pool.acquire() as first, pool.acquire() as second:
        holding = first.transaction()
        await holding.start()
        holder = _Batch(first, SyncConfig(), EMBEDDED)
        await holder._load_links([change("desk", "d7")])
        async with second.transaction():
            waiter = _Batch(second, SyncConfig(), EMBEDDED)
            # The other side of the same pair, among many others of both sides.
            events = [change("crm", f"c{i}") for i in range(1, 1500)] + [
                change("desk", f"d{i}") for i in range(2000, 3000)]
            waiting = asyncio.create_task(waiter._load_links(events))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # it waits for the pair's row lock
            # What a flush writes: every column, the ids unchanged.
            await first.execute(
                "UPDATE sync.links l SET desk_id = r.d, crm_id = r.c, desk_gone = 'soft',"
                " desk_seen = $4 FROM unnest($1::bigint[], $2::text[], $3::text[])"
                " AS r(id, d, c) WHERE l.link_id = r.id",
                [holder.links[("contacts", "desk", "d7")].link_id], ["d7"], ["c7"], T)
            await holding.commit()
            await waiting
        link = waiter.links[("contacts", "crm", "c7")]
        assert (link.desk_gone, link.desk_seen) == ("soft", T)
        assert len({id(v) for v in waiter.links.values()}) == 1499 + 1000
