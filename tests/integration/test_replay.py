"""Replay (OPS-07, OWN-03) on the real embedded PostgreSQL and broker: rebuilds are
exact, dry runs change nothing, a killed replay leaves live state as it was, and a
window re-apply restores a store brought back from an older backup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.replay_kafka import KafkaEventSource
from projections import registry
from projections.batch import APPLY_LOCK, Message, Projection, apply_batch, reset_offset
from projections.config import SyncConfig
from projections.db import Conn
from projections.events import encode_event
from projections.last_states import Rebuilt
from projections.replay import (
    LEDGER,
    EventLogSource,
    EventSource,
    Lanes,
    Report,
    Window,
    compare,
    connections,
    reapply,
    rebuild_from_events,
    rebuild_ledger,
    rebuild_side_by_side,
)
from projections.sync import SyncProjection
from tests.support.brokers import on_both_brokers
from tests.support.events import change
from tests.support.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
STATE_QUERIES = {
    "sync.history": "SELECT * FROM sync.history ORDER BY hour, direction, module",
    "sync.failures": "SELECT * FROM sync.failures ORDER BY id",
    "handshake.board": "SELECT * FROM handshake.board ORDER BY ticket_id",
    "handshake.crm_keys": "SELECT * FROM handshake.crm_keys ORDER BY 1, 2, 3, 4",
    "handshake.deals": "SELECT * FROM handshake.deals ORDER BY deal_id",
    "handshake.departments": "SELECT * FROM handshake.departments ORDER BY 1",
    "ticket_stats.tickets": "SELECT * FROM ticket_stats.tickets ORDER BY 1",
    "ticket_stats.replies": "SELECT * FROM ticket_stats.replies ORDER BY 1",
    "ticket_stats.crm_contacts": "SELECT * FROM ticket_stats.crm_contacts ORDER BY 1",
    "ticket_stats.crm_leads": "SELECT * FROM ticket_stats.crm_leads ORDER BY 1",
    "ticket_stats.clock": "SELECT * FROM ticket_stats.clock",
    "crm_view.records": "SELECT * FROM crm_view.records ORDER BY module, record_id",
}


async def state(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in await conn.fetch(q)] for name, q in STATE_QUERIES.items()}


def live_projections() -> list[Projection]:
    return registry.live_projections(SyncConfig)


async def rebuild_all(conn: asyncpg.Connection, *, dry_run: bool) -> list[Report]:
    reports = [await rebuild_ledger(conn, LEDGER, dry_run=dry_run)]
    for spec in registry.SPECS:
        if spec.rebuild == "events":
            reports.append(await rebuild_from_events(conn, spec, EventLogSource(),
                                                     dry_run=dry_run))
    return reports


def changes(reports: list[Report]) -> dict[str, tuple[int, int, int]]:
    return {t.table: (t.added, t.changed, t.removed) for r in reports for t in r.tables
            if t.total}


# -- a random stream of events, applied as the projector would --------------------

EMAILS = ["ana@x.org", "bo@x.org", "cy@x.org", None]
hours = st.integers(0, 320)  # thirteen days: history hours get pruned


def _contact(source: str, rid: int, op: str, email: str | None, last: str | None,
             phone: str, hour: int) -> dict[str, Any]:
    return {"source": source, "module": "contacts", "record_id": str(rid), "op": op,
            "values": {"last_name": last, "email": email, "phone": phone,
                       **({"hard_deleted": True} if op == "delete" else {})}, "hour": hour}


contacts = st.builds(_contact, st.sampled_from(["desk", "crm"]), st.integers(1, 6),
                     st.sampled_from(["create", "update", "update", "delete"]),
                     st.sampled_from(EMAILS), st.sampled_from(["Doe", "Roe", None]),
                     st.sampled_from(["+33 6 12 34 56 78", "555-123-4567", "12"]), hours)
tickets = st.builds(
    lambda rid, email, dept, status, hour, contact, rating, due, priority: {
        "source": "desk", "module": "tickets", "record_id": str(rid), "op": "update",
        "values": {"department_id": dept, "status": status, "requester_email": email,
                   "requester_phone": None, "subject": f"t{rid}", "contact_id": contact,
                   "rating": rating, "priority": priority,
                   "due_date": None if due is None else (BASE + dt.timedelta(hours=due))
                   .isoformat()}, "hour": hour},
    st.integers(1, 3), st.sampled_from(EMAILS), st.sampled_from([1, 2]),
    st.sampled_from(["Open", "Closed"]), hours, st.integers(1, 6),
    st.sampled_from(["good", "bad", None]), st.one_of(st.none(), hours),
    st.sampled_from(["High", "Low", None]))
threads = st.builds(
    lambda rid, ticket, direction, deleted, hour: {
        "source": "desk", "module": "ticket_threads", "record_id": str(rid), "op": "update",
        "values": {"ticket_id": ticket, "direction": direction, "kind": "reply",
                   "deleted": deleted}, "hour": hour},
    st.integers(1, 4), st.integers(1, 3), st.sampled_from(["in", "out"]), st.booleans(), hours)
deals = st.builds(
    lambda rid, contact, stage, hour: {
        "source": "crm", "module": "deals", "record_id": str(rid), "op": "update",
        "values": {"contact_id": contact, "stage": stage}, "hour": hour},
    st.integers(1, 2), st.integers(1, 4), st.sampled_from(["open", "won", "lost"]), hours)
leads = st.builds(
    lambda rid, email, hour: {"source": "crm", "module": "leads", "record_id": str(rid),
                              "op": "update", "values": {"email": email}, "hour": hour},
    st.integers(1, 2), st.sampled_from(EMAILS), hours)
crm_items = st.builds(  # what only the CRM view keeps: accounts, notes and activities
    lambda module, rid, op, parent, hour: {
        "source": "crm", "module": module, "record_id": str(rid), "op": op,
        "values": {"parent_module": parent[0], "parent_id": parent[1], "subject": f"s{rid}",
                   **({"hard_deleted": True} if op == "delete" else {})}, "hour": hour},
    st.sampled_from(["accounts", "notes", "calls", "events", "tasks"]), st.integers(1, 3),
    st.sampled_from(["create", "update", "delete"]),
    st.sampled_from([("contacts", 1), ("accounts", 2), ("contacts", "x"), ("deals", 1)]), hours)
garbage = st.sampled_from([b"not json", b'{"v": 1, "source": "desk", "module": "contacts"}'])
stream_item = st.one_of(contacts, contacts, contacts, tickets, threads, deals, leads,
                         crm_items, garbage)


def encode(item: dict[str, Any] | bytes, n: int) -> bytes:
    if isinstance(item, bytes):
        return item
    at = BASE + dt.timedelta(hours=item["hour"], seconds=n)
    return encode_event(change(source=item["source"], module=item["module"],
                               record_id=item["record_id"], op=item["op"],
                               values=item["values"], at=at, event_id=uuid.UUID(int=n + 1)))


async def reset(conn: asyncpg.Connection) -> None:
    """Empty every table the stream touches (one database serves every example): the
    stores' and every projection's, as the registry names their schemas."""
    schemas = {"desk", "crm", "sync"} | {table.split(".")[0] for spec in registry.SPECS
                                         for table in (*spec.tables, *spec.stream_tables)}
    tables = [f"{r['schemaname']}.{r['tablename']}" for r in await conn.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])"
        " AND tablename <> 'stream_state'", sorted(schemas))]
    await conn.execute(f"TRUNCATE {', '.join(tables)}, syncd.event_log,"
                       " syncd.consumer_offsets RESTART IDENTITY")
    await conn.execute("UPDATE handshake.stream_state SET pruned_through = 0")
    await conn.execute("DROP SCHEMA IF EXISTS syncd_replay CASCADE")
    # Records the sync creates get ids the stream's own records never use, as in a
    # real store, where one sequence gives out every id.
    for table in ("desk.contacts", "crm.contacts"):
        await conn.execute("SELECT setval(pg_get_serial_sequence($1, 'id'), 1000)", table)


async def deliver(conn: asyncpg.Connection, bodies: list[bytes], cuts: list[int]) -> None:
    """Apply ``bodies`` in batches cut at random, a fresh projection each time (a restart)."""
    await reset_offset(conn, "g", ("t", 0), 0)
    offset = 0
    for size in [*cuts, len(bodies)]:
        chunk = bodies[offset:offset + max(1, size)]
        if not chunk:
            break
        messages = [Message("t", 0, offset + i, body) for i, body in enumerate(chunk)]
        outcome = await apply_batch(conn, group_id="g", messages=messages,
                                    starts={("t", 0): offset}, projections=live_projections())
        assert outcome.fenced is None
        offset += len(chunk)


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})


async def determinism(dsn: str, stream: list[dict[str, Any] | bytes], cuts: list[int]) -> None:
    conn = await connect(dsn)
    try:
        await reset(conn)
        await deliver(conn, [encode(item, n) for n, item in enumerate(stream)], cuts)
        live = await state(conn)
        assert changes(await rebuild_all(conn, dry_run=True)) == {}
        assert changes(await rebuild_all(conn, dry_run=False)) == {}
        assert await state(conn) == live
    finally:
        await conn.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(stream_item, min_size=20, max_size=80),
       cuts=st.lists(st.integers(1, 9), max_size=12))
def test_rebuilt_projections_equal_the_live_ones_row_for_row(
    database_url: str, stream: list[dict[str, Any] | bytes], cuts: list[int],
) -> None:
    """OWN-03: whatever the stream and its batching, replay rebuilds every projection exactly."""
    asyncio.run(determinism(database_url, stream, cuts))


FIXED_STREAM: list[dict[str, Any] | bytes] = [
    _contact("desk", 1, "create", "ana@x.org", "Doe", "12", 1),
    _contact("crm", 1, "create", "ana@x.org", "Doe", "12", 2),
    _contact("crm", 2, "create", "ana@x.org", "Roe", "12", 3),
    _contact("desk", 2, "create", "bo@x.org", None, "12", 4),
    _contact("desk", 3, "create", "cy@x.org", "Doe", "12", 5),
    b"not json",
    _contact("desk", 3, "update", "cy@x.org", "Doe", "555-123-4567", 200),
    _contact("desk", 2, "update", "bo@x.org", "Roe", "12", 201),
    {"source": "desk", "module": "tickets", "record_id": "1", "op": "update", "hour": 202,
     "values": {"department_id": 1, "status": "Open", "requester_email": "cy@x.org"}},
    {"source": "crm", "module": "deals", "record_id": "1", "op": "update", "hour": 203,
     "values": {"contact_id": 1, "stage": "won"}},
]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def corrupt(conn: asyncpg.Connection) -> None:
    await conn.execute("DELETE FROM sync.history WHERE hour = (SELECT min(hour) FROM sync.history)")
    await conn.execute("UPDATE sync.failures SET attempts = 99")
    await conn.execute("DELETE FROM handshake.crm_keys")
    await conn.execute("UPDATE handshake.board SET board_column = 'new'")
    # The CRM view, rebuilt into a scratch copy and written back where it differs: a
    # row lost, a row changed, a row that should not be there.
    await conn.execute("DELETE FROM crm_view.records WHERE (module, record_id) ="
                       " ('contacts', '1')")
    await conn.execute("""UPDATE crm_view.records SET "values" = '{"last_name": "X"}'"""
                       " WHERE (module, record_id) = ('contacts', '2')")
    await conn.execute("""INSERT INTO crm_view.records (module, record_id, "values")"""
                       """ VALUES ('deals', '99', '{}')""")


async def test_a_corrupted_projection_is_restored_exactly_and_live_events_are_kept(
        conn: asyncpg.Connection, database_url: str) -> None:
    """Dry run shows the damage only; replay restores it exactly, live batch included."""
    await deliver(conn, [encode(item, n) for n, item in enumerate(FIXED_STREAM)], [3, 4])
    # Enough history for the fold to take a while in small chunks.
    await conn.execute(
        "INSERT INTO sync.outcomes (seq, source, module, record_id, outcome, captured_at)"
        " SELECT NULL, 'desk', 'accounts', 'a' || g, 'added', $1::timestamptz"
        " + make_interval(hours => g % 150) FROM generate_series(1, 400) g", BASE)
    assert changes([await rebuild_ledger(conn, LEDGER, dry_run=False)]) != {}  # folds those in
    live = await state(conn)
    assert live["sync.failures"] and live["sync.history"]
    await corrupt(conn)
    damaged = await state(conn)
    dry = await rebuild_all(conn, dry_run=True)
    assert changes(dry)["sync.failures"] == (0, len(live["sync.failures"]), 0)
    assert changes(dry)["sync.history"] == (1, 0, 0)
    assert changes(dry)["crm_view.records"] == (1, 1, 1)
    assert await state(conn) == damaged
    sample = next(t for r in dry for t in r.tables if t.table == "sync.failures").samples[0]
    assert sample["columns"]["attempts"]["from"] == 99

    # A live batch (a new failure: no last name) commits while the rebuild folds.
    started = asyncio.Event()
    body = encode(_contact("desk", 4, "create", "dee@x.org", None, "12", 210), 500)

    async def live_batch() -> None:
        await started.wait()
        second = await connect(database_url)
        try:
            stored = await second.fetchval(
                "SELECT next_offset FROM syncd.consumer_offsets WHERE group_id = 'g'")
            outcome = await apply_batch(
                second, group_id="g", messages=[Message("t", 0, stored, body)],
                starts={("t", 0): stored}, projections=live_projections())
            assert outcome.applied
        finally:
            await second.close()

    task = asyncio.create_task(live_batch())
    report = await rebuild_ledger(conn, LEDGER, dry_run=False, chunk=1,
                                  progress=lambda phase, done, total: started.set())
    await task
    assert any("during the rebuild" in note for note in report.notes)
    await rebuild_from_events(conn, registry.spec("handshake"), EventLogSource(), dry_run=False)
    view = await rebuild_from_events(conn, registry.spec("crm_view"), EventLogSource(),
                                     dry_run=False)
    assert changes([view]) == {"crm_view.records": (1, 1, 1)}
    assert changes(await rebuild_all(conn, dry_run=True)) == {}
    restored = await state(conn)
    assert restored["crm_view.records"] == live["crm_view.records"]
    assert restored["sync.failures"][:len(live["sync.failures"])] == live["sync.failures"]
    assert len(restored["sync.failures"]) == len(live["sync.failures"]) + 1  # the live one
    assert await conn.fetchval("SELECT count(*) FROM pg_namespace"
                               " WHERE nspname = 'syncd_replay'") == 0


async def test_compare_finds_rows_only_removed_as_well_as_added_and_changed(
        conn: asyncpg.Connection) -> None:
    """Nothing new is not nothing changed: a table holding extra rows (the fresh one a
    subset of it) still reports them removed; equal tables report nothing."""
    async with conn.transaction():
        for name in ("cmp_live", "cmp_fresh"):
            await conn.execute(f"CREATE TEMP TABLE {name} (id int PRIMARY KEY, v text)"
                               " ON COMMIT DROP")
        await conn.execute("INSERT INTO cmp_live VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        await conn.execute("INSERT INTO cmp_fresh VALUES (1, 'a'), (2, 'b'), (3, 'c')")

        async def diff() -> tuple[int, int, int]:
            found = await compare(conn, live="cmp_live", fresh="cmp_fresh", key=["id"],
                                  label="t", apply=False)
            return found.added, found.changed, found.removed

        assert await diff() == (0, 0, 0)
        await conn.execute("DELETE FROM cmp_fresh WHERE id = 3")
        assert await diff() == (0, 0, 1)
        await conn.execute("UPDATE cmp_fresh SET v = 'B' WHERE id = 2")
        await conn.execute("INSERT INTO cmp_fresh VALUES (4, 'd')")
        assert await diff() == (1, 1, 1)


# -- side by side -------------------------------------------------------------------

EVENT_PROJECTIONS = [s for s in registry.SPECS if s.rebuild == "events"]


async def apply_lock_free(conn: Conn) -> bool:
    """Whether a batch could take the apply lock now (shared, as batches do)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock_shared($1)", APPLY_LOCK))


def lanes_of(database_url: str) -> Lanes:
    return connections(lambda: connect(database_url))


async def test_projections_rebuilt_side_by_side_are_restored_while_batches_wait(
        conn: asyncpg.Connection, database_url: str) -> None:
    """Every projection of the log, two at a time on connections of their own, is
    rebuilt exactly; the apply lock is held for the whole of it and free after."""
    await deliver(conn, [encode(item, n) for n, item in enumerate(FIXED_STREAM)], [3, 4])
    live = await state(conn)
    await corrupt(conn)
    probe = await connect(database_url)
    finished: list[int] = []
    try:
        def progress(phase: str, done: int, total: int | None) -> None:
            finished.append(done)

        locked_during: list[bool] = []
        lanes = lanes_of(database_url)

        @contextlib.asynccontextmanager
        async def watched() -> AsyncIterator[Conn]:
            async with lanes() as own:
                locked_during.append(not await apply_lock_free(own))
                yield own

        reports = await rebuild_side_by_side(conn, watched, EVENT_PROJECTIONS,
                                             EventLogSource(), ledger=LEDGER,
                                             dry_run=False, progress=progress)
        # Two lanes of rebuilds, each opened while the lock was held, and the ledger's
        # (which does not wait for it).
        assert len(locked_during) == 3 and sum(locked_during) >= 2
        assert finished == list(range(len(EVENT_PROJECTIONS) + 2))  # 0, then each step
        assert [r.what for r in reports] == ["rebuild history, failures from sync.outcomes"] + [
            f"rebuild {s.name} from the event log" for s in EVENT_PROJECTIONS]
        assert changes(reports)["handshake.crm_keys"][0] > 0  # restored what was deleted
        assert await state(conn) == live
        assert await apply_lock_free(probe)
        assert changes(await rebuild_all(conn, dry_run=True)) == {}
    finally:
        await probe.close()


async def test_a_rebuild_failing_side_by_side_changes_nothing_and_frees_the_lock(
        conn: asyncpg.Connection, database_url: str) -> None:
    """The failing rebuild writes nothing, its error is raised as one at a time raises
    it, and the projector's lock is released."""
    await deliver(conn, [encode(item, n) for n, item in enumerate(FIXED_STREAM)], [3])
    await conn.execute("UPDATE handshake.board SET board_column = 'new'")
    damaged = await state(conn)

    async def broken(own: Conn) -> Rebuilt:
        await own.execute("DELETE FROM handshake.board")
        # The board's match keys, read by its batches alone, were truncated.
        assert await own.fetchval("SELECT count(*) FROM handshake.crm_keys") == 0
        raise RuntimeError("the board's rules failed")

    board = dataclasses.replace(registry.spec("handshake"), from_last_states=broken)
    specs = [board if s.name == "handshake" else s for s in EVENT_PROJECTIONS]
    reported: list[str] = []
    with pytest.raises(RuntimeError, match="the board's rules failed"):
        await rebuild_side_by_side(conn, lanes_of(database_url), specs,
                                   EventLogSource(), ledger=LEDGER, dry_run=False,
                                   finished=lambda name, _report: reported.append(name))
    assert "handshake" not in reported  # what finished is reported, the failure is not
    assert await state(conn) == damaged
    assert damaged["handshake.crm_keys"]  # put back by the rollback (in ``state``)
    assert await apply_lock_free(conn)
    with pytest.raises(ValueError, match="share a table"):
        await rebuild_side_by_side(conn, lanes_of(database_url), [board, board],
                                   EventLogSource(), dry_run=False)


# -- the command: lock, SIGKILL, restart ------------------------------------------


def syncd(database_url: str, data_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url, "SYNCD_DATA_DIR": str(data_dir),
           "SYNCD_LOG_FORMAT": "json"}
    env.pop("SYNCD_KAFKA_BOOTSTRAP", None)
    return subprocess.Popen([sys.executable, "-m", "daemon", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def test_a_killed_replay_leaves_live_state_as_it_was_and_a_second_is_refused(
        conn: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    """SIGKILL mid-swap changes nothing live; a second replay is refused; a rerun restores."""
    await deliver(conn, [encode(item, n) for n, item in enumerate(FIXED_STREAM)], [2])
    live = await state(conn)
    await corrupt(conn)
    damaged = await state(conn)
    blocker = await connect(database_url)
    first: subprocess.Popen[str] | None = None
    try:
        # Hold one failure row, as a slow reader with FOR UPDATE would: the replay
        # rewrites the history, then waits on that row in the same transaction.
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT * FROM sync.failures ORDER BY id LIMIT 1 FOR UPDATE")
        first = syncd(database_url, tmp_path, "replay", "--projection", "all")

        async def stuck() -> bool:
            if first is not None and first.poll() is not None:
                raise AssertionError(f"the replay exited early: {first.communicate()}")
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd-replay'"
                " AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM sync.failures%'"))

        await wait_for(stuck, "the replay never reached the failure log", timeout=90)
        second = syncd(database_url, tmp_path, "replay", "--projection", "history")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 3, err
        assert "another replay is running" in err
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
        if first is not None and first.poll() is None:
            first.kill()
            first.communicate()

    async def gone() -> bool:
        return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity"
                                       " WHERE application_name = 'syncd-replay'")

    await wait_for(gone, "the killed replay's session did not end")
    # Each projection is as it was or rebuilt, never half of one: the ledger, killed in
    # its swap, as it was; the board, rebuilt beside it, either way.
    after = await state(conn)
    for table, rows in after.items():
        expected = (damaged[table],) if table.startswith("sync.") else (
            damaged[table], live[table])
        assert rows in expected, table
    assert await conn.fetchval("SELECT count(*) FROM pg_namespace"
                               " WHERE nspname = 'syncd_replay'") == 1  # left behind

    again = syncd(database_url, tmp_path, "replay", "--projection", "all", "--json")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert {t["table"] for r in json.loads(out) for t in r["tables"] if t["changed"]} >= {
        "sync.failures"}
    assert await state(conn) == live
    dry = syncd(database_url, tmp_path, "replay", "--projection", "all", "--dry-run")
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    assert "nothing to change" in out and "added" not in out


async def test_a_failed_replay_names_what_it_committed_before_the_failure(
        conn: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    """Each step commits on its own: a later one failing does not undo an earlier one,
    and the message says which were committed (it said "nothing was changed")."""
    await deliver(conn, [encode(item, n) for n, item in enumerate(FIXED_STREAM)], [2])
    live = await state(conn)
    await conn.execute("DELETE FROM sync.history WHERE hour = (SELECT min(hour) FROM sync.history)")
    await conn.execute("CREATE TABLE crm_view.stray (id int PRIMARY KEY)")
    try:
        # (Two steps, one after the other: the fold, then the CRM view.)
        run = syncd(database_url, tmp_path, "replay", "--projection", "history",
                    "--projection", "crm_view")
        _, err = run.communicate(timeout=120)
    finally:
        await conn.execute("DROP TABLE crm_view.stray")
    assert run.returncode == 1, err
    assert "crm_view has table(s) its registry entry does not name" in err
    assert "committed before it: rebuild history from sync.outcomes" in err
    assert "nothing was changed" not in err
    assert (await state(conn))["sync.history"] == live["sync.history"]


# -- re-applying a window after a store came back from an older backup -------------


@pytest.fixture
def kafka_bootstrap(kafka_bootstrap: str, request: pytest.FixtureRequest) -> str:
    """The embedded broker, or what a case asks for (``indirect``: the real cluster)."""
    return on_both_brokers(getattr(request, "param", "embedded"), kafka_bootstrap, request)


_CLUSTER = pytest.mark.xdist_group("kafka-cluster")
REAPPLY_CASES = [
    pytest.param("embedded", False, id="event-log-embedded"),
    pytest.param("embedded", True, id="kafka-embedded"),
    pytest.param("cluster", False, id="event-log-kafka-cluster", marks=_CLUSTER),
    pytest.param("cluster", True, id="kafka-kafka-cluster", marks=_CLUSTER),
]


@pytest.mark.parametrize(("kafka_bootstrap", "from_kafka"), REAPPLY_CASES,
                         indirect=["kafka_bootstrap"])
async def test_a_window_reapply_writes_back_what_a_restored_backup_lost(
        pipeline: Pipeline, kafka_bootstrap: str, from_kafka: bool) -> None:
    """A window re-apply writes back what a CRM restore lost, same ids, counting no sync."""
    since = await pipeline.fetchval("SELECT clock_timestamp()")
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email, phone) VALUES ('Doe', 'zoe@x.org', 'p0')"
        " RETURNING id")
    await pipeline.settle()
    crm_id = await pipeline.fetchval(
        "SELECT crm_id::bigint FROM sync.links WHERE module = 'contacts' AND desk_id = $1",
        str(desk_id))
    await pipeline.execute("UPDATE desk.contacts SET phone = 'p1' WHERE id = $1", desk_id)
    late = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email, phone) VALUES ('Roe', 'rae@x.org', 'r0')"
        " RETURNING id")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT phone FROM crm.contacts WHERE id = $1", crm_id) == "p1"
    assert await pipeline.fetchval("SELECT count(*) FROM sync.links") == 2

    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn, conn.transaction():
        # The restore: the backup predates both changes; it is not captured.
        await conn.execute("SET LOCAL syncd.origin = 'sync'")
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.execute("UPDATE crm.contacts SET phone = 'p0',"
                           " modified_time = modified_time - interval '1 hour' WHERE id = $1",
                           crm_id)
        await conn.execute("DELETE FROM crm.contacts WHERE id = $1", late)
    ledger = ("SELECT (SELECT count(*) FROM sync.outcomes),"
              " (SELECT coalesce(sum(added + updated + failed), 0) FROM sync.history)")
    counted = tuple(await pipeline.fetchrow(ledger) or ())

    source: EventSource = (KafkaEventSource(kafka_bootstrap, topic=pipeline.topic,
                                            group_id=pipeline.group)
                           if from_kafka else EventLogSource())
    window = Window(since=since, source=None, module="contacts")
    sync = SyncProjection(lambda: pipeline.config)
    async with pipeline.pool.acquire() as conn:
        dry = await reapply(conn, sync, source, window, dry_run=True)
        assert changes([dry]) == {"crm.contacts": (1, 1, 0)}
        assert await conn.fetchval("SELECT phone FROM crm.contacts WHERE id = $1",
                                   crm_id) == "p0"
        done = await reapply(conn, sync, source, window, dry_run=False)
        assert changes([done]) == {"crm.contacts": (1, 1, 0)}
        assert done.events >= 3
        row = await conn.fetchrow("SELECT * FROM crm.contacts WHERE id = $1", late)
        assert row is not None and (row["last_name"], row["phone"]) == ("Roe", "r0")
        assert await conn.fetchval("SELECT phone FROM crm.contacts WHERE id = $1",
                                   crm_id) == "p1"
        assert tuple(await conn.fetchrow(ledger) or ()) == counted  # no new sync counted
        assert changes([await reapply(conn, sync, source, window, dry_run=True)]) == {}
        fresh = await conn.fetchval("INSERT INTO crm.contacts (last_name) VALUES ('New')"
                                    " RETURNING id")
        assert fresh > late  # the id sequence moved past the record written back
    # The daemon goes on syncing after the replay.
    await pipeline.execute("UPDATE desk.contacts SET phone = 'p2' WHERE id = $1", desk_id)
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT phone FROM crm.contacts WHERE id = $1", crm_id) == "p2"
