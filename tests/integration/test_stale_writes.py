"""A write a remote store refused as stale (its guard: the record changed since the sync
decided) goes once something will bring the decision again, and never for a change
that will not come (invariant 5): ``remote_capture.after_stale_write`` and the
writer's stale path, on a real database with a target that answers stale."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg

from adapters.command_writer import Backoff, CommandWriter, Landed
from adapters.remote_capture import COMING, REDECIDED, WAIT, after_stale_write, remember
from adapters.write_errors import Stale
from projections.db import Conn, loads_json
from projections.stores import commands
from projections.stores.commands import Cause, Command
from projections.sync_plan import REASON_UNSEEN_EDIT

T = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
VALUES = {"first_name": "Ana", "last_name": "Silva", "modified_time": T.isoformat(),
          "created_time": "2026-01-01T00:00:00+00:00", "deleted": False}


async def _nudges(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT record_id, op, origin, changed, \"values\", modified_at"
                            " FROM desk.outbox ORDER BY seq")


async def test_what_brings_the_decision_again(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():  # the capture never fetched the record
            assert await after_stale_write(conn, "desk", "contacts", "7", T) == WAIT
        await remember(conn, "desk", "contacts", "7", VALUES, T - dt.timedelta(seconds=1))
        async with conn.transaction():  # it fetched an older version only
            assert await after_stale_write(conn, "desk", "contacts", "7", T) == WAIT
        assert await _nudges(conn) == []
        await remember(conn, "desk", "contacts", "7", VALUES, T)
        async with conn.transaction():  # it has this version, and nothing of it waits
            assert await after_stale_write(conn, "desk", "contacts", "7", T) == REDECIDED
        (nudge,) = await _nudges(conn)
        assert (nudge["record_id"], nudge["op"], nudge["origin"]) == ("7", "update", "user")
        assert list(nudge["changed"]) == []  # touches no field: the merge keeps all
        assert loads_json(nudge["values"]) == VALUES and nudge["modified_at"] == T
        async with conn.transaction():  # that change now waits to be applied
            assert await after_stale_write(conn, "desk", "contacts", "7", T) == COMING
        assert len(await _nudges(conn)) == 1


class StaleUntil:
    """A desk target whose guard refuses every write: the record is newer (``T``)."""

    store = "desk"

    def __init__(self) -> None:
        self.attempts = 0

    async def write(self, command: Command) -> Landed:
        self.attempts += 1
        raise Stale(f"contacts {command.record_id} was modified at {T}", modified_time=T)


def _update(record_id: str) -> Command:
    return Command(store="desk", module="contacts", record_key=record_id, op="update",
                   record_id=record_id, payload={"first_name": "Bia"},
                   seen=T - dt.timedelta(minutes=1),
                   cause=Cause(uuid.uuid4(), "crm", "contacts", "c-" + record_id))


async def _until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_stale_write_waits_for_the_capture_then_has_the_pair_decided_again(
        pool: asyncpg.Pool) -> None:
    """The capture has not fetched the record's new version: the command waits (it is
    not dropped); once the capture has it, the command goes and the pair is decided
    again from a change touching no field."""
    target = StaleUntil()
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [_update("8")])
    writer = CommandWriter(pool, target, backoff=Backoff(base=0.05, cap=0.1),  # type: ignore[arg-type]
                           poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await _until(lambda: _true_after(target, 3))
        assert await pool.fetchval("SELECT count(*) FROM sync.commands") == 1
        async with pool.acquire() as conn:
            await remember(conn, "desk", "contacts", "8", VALUES, T)

        async def gone() -> bool:
            return not await pool.fetchval("SELECT count(*) FROM sync.commands")

        await _until(gone)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    async with pool.acquire() as conn:
        (nudge,) = await _nudges(conn)
    assert nudge["record_id"] == "8" and list(nudge["changed"]) == []
    assert await pool.fetchval("SELECT count(*) FROM sync.failures") == 0


async def _true_after(target: StaleUntil, attempts: int) -> bool:
    return target.attempts >= attempts


async def test_a_stale_write_whose_capture_never_comes_is_a_failure(
        pool: asyncpg.Pool) -> None:
    """Past the budget with no capture of the new version, the write fails with its
    reason (retryable), rather than waiting for ever or going without a word."""
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [_update("9")])
    writer = CommandWriter(pool, StaleUntil(), poll_interval=0.05,  # type: ignore[arg-type]
                           backoff=Backoff(base=0.05, cap=0.1, budget=0.3))
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))

    async def failed() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM sync.failures"))

    try:
        await _until(failed)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    row = await pool.fetchrow("SELECT record_id, reason, detail FROM sync.failures")
    assert row is not None and (row["record_id"], row["reason"]) == ("c-9", REASON_UNSEEN_EDIT)
    assert "no capture of it came" in row["detail"]
    assert await pool.fetchval("SELECT count(*) FROM sync.commands") == 0
