"""Issue 19, item 2: the projections of the log run while the sync plans.

A batch's Python and PostgreSQL took turns: the sync read, decided in Python, wrote;
then each other projection ran its statements. Now the projections that read only the
batch's events and their own tables (the statistics, the CRM view, the board, the sales
signals) run on the batch's connection while the sync decides, so their statements
execute while its Python runs. What must hold, checked on a real batch: they start after
the sync's reads (and their locks) and end before its writes, so every batch takes its
locks in one order; the planner decides while they run; the ticket actions come after
all of it; an error on either side still leaves the connection idle for the rollback."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from projections import registry, sync
from projections.batch import LoggedEvent, Projection, apply_projections
from projections.config import SyncConfig
from projections.events import ChangeEvent, Source

T = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def created(source: Source, n: int) -> ChangeEvent:
    return ChangeEvent(event_id=uuid.uuid4(), source=source, module="contacts",
                       record_id=str(900_000 + n), op="create",
                       values={"id": 900_000 + n, "last_name": f"L{n}",
                               "email": f"p{n}@beside.example", "phone": f"+3361234{n:04d}"},
                       modified_at=T, created_at=T, origin="user", captured_at=T)


class Timeline:
    """What ran when: the sync's reads done, each slice it decided, its writes begun,
    each other projection's start and end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.marks: list[str] = []
        batch = sync._Batch
        load, decide, flush = batch._load_ref_links, batch.decide, batch._flush

        async def loaded(me: Any, events: Any) -> None:
            await load(me, events)
            self.marks.append("read")

        def deciding(me: Any, logged: Sequence[LoggedEvent]) -> None:
            self.marks.append(f"decide {len(logged)}")
            decide(me, logged)

        async def flushing(me: Any) -> None:
            self.marks.append("write")
            await flush(me)

        monkeypatch.setattr(batch, "_load_ref_links", loaded)
        monkeypatch.setattr(batch, "decide", deciding)
        monkeypatch.setattr(batch, "_flush", flushing)

    def watch(self, projection: Projection, monkeypatch: pytest.MonkeyPatch) -> None:
        apply = projection.apply

        async def watched(conn: Any, events: Sequence[LoggedEvent]) -> Any:
            self.marks.append(f"start {projection.name}")
            report = await apply(conn, events)
            self.marks.append(f"end {projection.name}")
            return report

        monkeypatch.setattr(projection, "apply", watched)

    def index(self, mark: str) -> int:
        return self.marks.index(mark)


def pipeline(timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> list[Projection]:
    projections = registry.live_projections(lambda: SyncConfig())
    for projection in projections:
        if projection.name != "sync":
            timeline.watch(projection, monkeypatch)
    return projections


def batch(size: int) -> list[LoggedEvent]:
    events = [created("desk" if n % 2 else "crm", n) for n in range(size)]
    return [LoggedEvent(seq, event) for seq, event in enumerate(events, 1)]


async def test_the_projections_of_the_log_run_while_the_sync_decides(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    timeline = Timeline(monkeypatch)
    projections = pipeline(timeline, monkeypatch)
    logged = batch(3 * sync.DECIDE_SLICE + 17)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await apply_projections(conn, logged, projections)
            # Each record got its twin, and its link: the sync wrote after the others ran.
            assert await conn.fetchval("SELECT count(*) FROM sync.links") == len(logged)
            assert await conn.fetchval("SELECT count(*) FROM sync.outcomes") == len(logged)
            assert await conn.fetchval(
                "SELECT count(*) FROM handshake.crm_keys WHERE record_id LIKE '9%'") > 0
        finally:
            await transaction.rollback()
    marks = timeline.marks
    beside = ["statistics", "crm_view", "handshake", "signals"]
    assert [m.split()[1] for m in marks if m.startswith("start")] == [
        *beside, "ticket_actions"]
    # After the sync's reads and before its writes; the ticket actions after its writes.
    assert timeline.index("read") < timeline.index("start statistics")
    assert timeline.index("end signals") < timeline.index("write")
    assert timeline.index("write") < timeline.index("start ticket_actions")
    # Decided a slice at a time, and (the point) while the others ran.
    slices = [int(m.split()[1]) for m in marks if m.startswith("decide")]
    assert sum(slices) == len(logged) and max(slices) == sync.DECIDE_SLICE
    during = marks[timeline.index("start statistics"):timeline.index("end signals")]
    assert any(m.startswith("decide") for m in during), marks


class Broken(Exception):
    pass


@pytest.mark.parametrize("side", ["planner", "beside"])
async def test_an_error_on_either_side_leaves_the_connection_free_for_the_rollback(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, side: str) -> None:
    """The batch fails with the error, only once both sides are done (a rollback sent
    while a statement of the other side ran would fail: "another operation is in
    progress"), and the connection is usable afterwards."""
    timeline = Timeline(monkeypatch)
    projections = pipeline(timeline, monkeypatch)
    if side == "planner":
        def broken(_me: Any, _logged: Any) -> None:
            raise Broken
        monkeypatch.setattr(sync._Batch, "decide", broken)
    else:
        board = next(p for p in projections if p.name == "handshake")

        async def failing(_conn: Any, _events: Any) -> None:
            raise Broken
        monkeypatch.setattr(board, "apply", failing)
    async with pool.acquire() as conn:
        with pytest.raises(Broken):
            async with conn.transaction():
                await apply_projections(conn, batch(2 * sync.DECIDE_SLICE), projections)
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT count(*) FROM sync.outcomes") == 0
    if side == "planner":  # the others ran to their end before the error left the batch
        assert "end signals" in timeline.marks
    assert "write" not in timeline.marks
