"""Sales signals (TICKET-09) on the embedded PostgreSQL and broker: each signal decided
once with its origin, in gap-free order, the same after a rebuild; the origin agrees
with the handshake board; each user reads only what they may see and enabled; the
pipeline publishes each signal on its topic; the stream resumes without loss or
repeat."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner

from adapters.signal_publisher import SignalPublisher
from daemon.cli import cli
from daemon.http.server import build_app
from daemon.service.signals import signals_after
from projections.batch import reset_offset
from projections.db import Conn
from projections.events import ChangeEvent
from projections.handshake import HandshakeProjection
from projections.people import SIGNALS, CrmUser, People
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from projections.sales_signals import SalesSignalsProjection, signal_id
from tests.support.api import api_context
from tests.support.batches import deliver_batches
from tests.support.pipeline import Pipeline

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def at(minute: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute)


def event(source: str, module: str, rid: str, minute: float, values: dict[str, Any], *,
          op: str = "update") -> ChangeEvent:
    return ChangeEvent(
        event_id=uuid.uuid4(), source=source, module=module,  # type: ignore[arg-type]
        record_id=rid, op=op, values=values, modified_at=at(minute),  # type: ignore[arg-type]
        created_at=at(minute), origin="user", captured_at=at(minute))


def ticket(rid: str, minute: float, email: str, department: int, *, op: str = "update",
           **values: Any) -> ChangeEvent:
    return event("desk", "tickets", rid, minute,
                 {"subject": f"ticket {rid}", "status": "Open", "department_id": department,
                  "requester_email": email, **values}, op=op)


def thread(rid: str, ticket_id: str, minute: float, kind: str, direction: str
           ) -> ChangeEvent:
    return event("desk", "ticket_threads", rid, minute,
                 {"ticket_id": int(ticket_id), "kind": kind, "direction": direction,
                  "content": "hello"}, op="create")


def story() -> list[ChangeEvent]:
    """A lead, a contact without deals, a customer (won deal), an opportunity (open
    deal) and a stranger write in; comments, replies both ways, an escalation, ratings
    and a due date the clock passes."""
    return [
        event("crm", "leads", "L1", 0, {"email": "lead@example.com"}, op="create"),
        event("crm", "contacts", "C1", 0, {"email": "contact@example.com"}, op="create"),
        event("crm", "contacts", "C2", 0, {"email": "Customer@Example.com"}, op="create"),
        event("crm", "deals", "D1", 1, {"contact_id": "C2", "stage": "Won"}, op="create"),
        event("crm", "contacts", "C3", 1, {"email": "deal@example.com"}, op="create"),
        event("crm", "deals", "D2", 1, {"contact_id": "C3", "stage": "Open"}, op="create"),
        ticket("1", 2, "lead@example.com", 10, op="create"),
        ticket("2", 3, "customer@example.com", 20, op="create"),
        ticket("3", 4, "contact@example.com", 10, op="create", due_date=at(30).isoformat()),
        ticket("4", 5, "stranger@example.com", 10, op="create"),
        ticket("5", 6, "deal@example.com", 20, op="create"),
        thread("101", "1", 7, "comment", "out"),
        thread("102", "2", 8, "reply", "in"),
        thread("103", "2", 9, "reply", "out"),  # the agent's answer: no signal
        ticket("2", 10, "customer@example.com", 20, status="Escalated"),
        ticket("2", 11, "customer@example.com", 20, status="Escalated", subject="again"),
        ticket("1", 12, "lead@example.com", 10, rating="good"),
        ticket("3", 13, "contact@example.com", 10, rating="bad", due_date=at(30).isoformat()),
        ticket("5", 14, "deal@example.com", 20, rating="okay"),
        thread("104", "4", 20, "reply", "in"),  # the stranger's: no signal
        event("crm", "leads", "L2", 31, {"email": "late@example.com"}, op="create"),
    ]


EXPECTED = [
    ("new_ticket", "1", "lead", "10"), ("new_ticket", "2", "customer", "20"),
    ("new_ticket", "3", "contact", "10"), ("new_ticket", "5", "contact", "20"),
    ("new_comment", "1", "lead", "10"), ("new_reply", "2", "customer", "20"),
    ("escalated_ticket", "2", "customer", "20"), ("new_rating", "1", "lead", "10"),
    ("new_rating", "3", "contact", "10"), ("new_rating", "5", "contact", "20"),
    ("overdue_ticket", "3", "contact", "10"),
]


async def deliver(conn: Conn, events: list[ChangeEvent], *, start: int, size: int) -> int:
    """Apply ``events`` from offset ``start`` in batches of ``size``, the board then the
    signals, each batch with fresh instances (a restart); the next offset."""
    offset, _ = await deliver_batches(
        conn, events, start=start, size=size,
        projections=lambda: [HandshakeProjection(), SalesSignalsProjection()])
    return offset


async def signal_rows(conn: Conn) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT seq, id, kind, ticket_id, origin, department_id, at, event_id"
        " FROM sales_signals.signals ORDER BY seq")]


async def table_rows(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in spec("signals").tables}


async def test_each_signal_once_with_its_origin_and_a_rebuild_gives_the_same(
        pool: asyncpg.Pool) -> None:
    """The story's signals, in order, seq 1..11; redelivered events add none; the
    origins agree with the board's columns; a rebuild from the log finds nothing to
    change, and restores damaged signals with the same ids and sequence numbers."""
    events = story()
    async with pool.acquire() as conn:
        await reset_offset(conn, "g", ("t", 0), 0)
        offset = await deliver(conn, events, start=0, size=3)
        await deliver(conn, events, start=offset, size=7)  # every event again
        rows = await signal_rows(conn)
        assert [(r[2], r[3], r[4], r[5]) for r in rows] == EXPECTED
        assert [r[0] for r in rows] == list(range(1, len(EXPECTED) + 1))
        assert rows[0][1] == signal_id("new_ticket", "1")
        assert rows[-1][6] == at(30)  # overdue at its due date, decided at minute 31
        assert rows[-1][7] == events[-1].event_id

        # The board's column of each open ticket is the origin's standing (HS-01).
        board = {r["ticket_id"]: r["board_column"] for r in await conn.fetch(
            "SELECT ticket_id, board_column FROM handshake.board")}
        assert board == {"1": "contacts_leads", "3": "contacts_leads", "4": "new",
                         "5": "opportunities"}
        ticket2 = await conn.fetchval("SELECT count(*) FROM handshake.board WHERE ticket_id = '2'")
        assert ticket2 == 0  # escalated: off the board, a customer by its signals

        before = await table_rows(conn)
        report = await rebuild_from_events(conn, spec("signals"), EventLogSource(),
                                           dry_run=True)
        assert report.events == len(events) and report.changes == 0
        await conn.execute("DELETE FROM sales_signals.signals WHERE seq > 4")
        await conn.execute("UPDATE sales_signals.clock SET last_seq = 4")
        report = await rebuild_from_events(conn, spec("signals"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 7 + 1
        assert await table_rows(conn) == before


async def test_threads_logged_before_their_tickets_wait_for_them(pool: asyncpg.Pool) -> None:
    """The story with every thread logged before every ticket, one event a batch (each
    batch a restart reading the tables): the same signals, the waiting threads' at their
    own times; none left waiting; a rebuild finds nothing to change."""
    events = story()
    threads = [e for e in events if e.module == "ticket_threads"]
    reordered = [e for e in events if e.source == "crm" and e.record_id != "L2"] + threads + [
        e for e in events if e.module == "tickets"] + [events[-1]]
    async with pool.acquire() as conn:
        await reset_offset(conn, "g", ("t", 0), 0)
        await deliver(conn, reordered, start=0, size=1)
        rows = await signal_rows(conn)
        assert sorted((r[2], r[3], r[4], r[5]) for r in rows) == sorted(EXPECTED)
        waited = {r[1]: r[6] for r in rows if r[2] in ("new_comment", "new_reply")}
        assert waited == {signal_id("new_comment", "101"): at(7),
                          signal_id("new_reply", "102"): at(8)}
        # The stranger's reply (thread 104) found no one to tell: nothing waits either.
        assert await conn.fetchval("SELECT count(*) FROM sales_signals.waiting_threads") == 0
        report = await rebuild_from_events(conn, spec("signals"), EventLogSource(),
                                           dry_run=True)
        assert report.changes == 0


async def test_each_user_reads_what_they_may_see_and_enabled(pool: asyncpg.Pool) -> None:
    """Visibility 'departments': a user of department 10 reads its signals only, one of
    department 20 none of 10's; 'all' shows every one; a disabled kind never comes;
    pages resume after their cursor without loss or repeat."""
    async with pool.acquire() as conn:
        await reset_offset(conn, "g", ("t", 0), 0)
        await deliver(conn, story(), start=0, size=50)
        ten = CrmUser("u10", "Ten", "ten@example.com", departments=frozenset({"10"}))
        twenty = CrmUser("u20", "Twenty", "tw@example.com", departments=frozenset({"20"}),
                         signals=frozenset(set(SIGNALS) - {"new_reply"}))
        page = await signals_after(conn, ten, "departments", 0, limit=100)
        assert [(s["kind"], s["ticket_id"]) for s in page.signals] == [
            (k, t) for k, t, _, d in EXPECTED if d == "10"]
        assert page.cursor == len(EXPECTED) and not page.more
        page = await signals_after(conn, twenty, "departments", 0, limit=100)
        assert {s["department_id"] for s in page.signals} == {"20"}
        assert "new_reply" not in {s["kind"] for s in page.signals}
        page = await signals_after(conn, twenty, "all", 0, limit=100)
        assert len(page.signals) == len(EXPECTED) - 1  # all but the reply

        seen: list[int] = []
        cursor = 0
        while True:
            page = await signals_after(conn, ten, "departments", cursor, limit=2)
            seen.extend(s["seq"] for s in page.signals)
            cursor = page.cursor
            if not page.more:
                break
        every = [s["seq"] for s in (await signals_after(
            conn, ten, "departments", 0, limit=100)).signals]
        assert seen == every


class FakeIntegration:
    """The integration's people, as ``IntegrationService.people`` gives them."""

    def __init__(self, people: People) -> None:
        self.value = people

    async def people(self) -> People:
        return self.value


async def read_stream(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                      count: int) -> list[dict[str, Any]]:
    """The first ``count`` signals of a stream (then the connection is dropped)."""
    found: list[dict[str, Any]] = []
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        frame: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if frame.get("event") == "signal":
                    data = json.loads(frame["data"])
                    assert frame["id"] == str(data["seq"])
                    found.append(data)
                    if len(found) == count:
                        return found
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                frame[name] = value
    return found


async def read_topic(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[bytes, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(found) < count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend((r.key, json.loads(r.value)) for r in records)
        # Anything more would be a repeat: give it a moment to show.
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            found.extend((r.key, json.loads(r.value)) for r in records)
    finally:
        await consumer.stop()
    return found


async def test_the_pipeline_publishes_each_signal_once_and_streams_it_per_user(
        pipeline: Pipeline, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Changes captured from both stores become signals on the signals topic, once each,
    keyed by ticket; over SSE a user of department 10 gets department 10's, a user of 20
    none of them, a user who disabled new tickets none of those; a stream dropped and
    resumed with Last-Event-ID misses and repeats nothing."""
    events = story()
    crm = [e for e in events if e.source == "crm" and e.record_id != "L2"]
    for e in crm:  # the CRM first: its records are logged before the tickets name them
        await pipeline.captured("crm", e)
    await pipeline.drain()
    desk = [e for e in events if e.source == "desk"]
    for e in desk:
        await pipeline.captured("desk", e)
    await pipeline.drain()
    # Captured now, the due date (minute 30 of 2026-11-02) is past: ticket 3 goes overdue
    # at once. Every other signal is the story's.
    expected = len(EXPECTED)
    await pipeline.wait_for_count("SELECT count(*) FROM sales_signals.signals", expected)
    rows = await pipeline.fetch("SELECT seq, kind, ticket_id, origin, id"
                                " FROM sales_signals.signals ORDER BY seq")
    assert sorted((r["kind"], r["ticket_id"], r["origin"]) for r in rows) == sorted(
        (k, t, o) for k, t, o, _ in EXPECTED)

    published = await read_topic(kafka_bootstrap, f"{topic_prefix}.signals", expected)
    assert sorted(v["seq"] for _, v in published) == list(range(1, expected + 1))
    assert all(key == v["ticket_id"].encode() for key, v in published)
    assert {v["id"] for _, v in published} == {str(r["id"]) for r in rows}

    token = "viewer-token-for-signals"
    people = People(users={
        "u10": CrmUser("u10", "Ten", "ten@example.com", departments=frozenset({"10"})),
        "u20": CrmUser("u20", "Twenty", "tw@example.com", departments=frozenset({"20"})),
        "quiet": CrmUser("quiet", "Quiet", "q@example.com", departments=frozenset({"10"}),
                         signals=frozenset(set(SIGNALS) - {"new_ticket"}))},
        visibility="departments")
    assert pipeline.pool is not None
    ctx = api_context(pipeline.pool, integration=FakeIntegration(people),
                      tokens={token: ("crm-app", "viewer")}, signal_keepalive=0.2)
    ten = [dict(r) for r in rows if r["ticket_id"] in ("1", "3", "4")]
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/api/v1/signals/stream"
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(url, headers=auth) as response:
            assert response.status == 401  # no CRM user named
        async with session.get(url, headers={**auth, "X-Syncd-Crm-User": "nobody"}
                               ) as response:
            assert response.status == 403
        as_ten = {**auth, "X-Syncd-Crm-User": "u10", "Last-Event-ID": "0"}
        first = await read_stream(session, url, as_ten, 3)
        rest = await read_stream(session, url, {**as_ten, "Last-Event-ID": str(
            first[-1]["seq"])}, len(ten) - 3)
        assert [s["seq"] for s in first + rest] == [r["seq"] for r in ten]

        page_url = f"http://127.0.0.1:{server.port}/api/v1/signals"
        async with session.get(page_url, headers={**auth, "X-Syncd-Crm-User": "u20"}
                               ) as response:
            answer = await response.json()
        assert {s["department_id"] for s in answer["signals"]} == {"20"}
        assert answer["cursor"] == expected
        async with session.get(page_url, headers={**auth, "X-Syncd-Crm-User": "quiet"}
                               ) as response:
            quiet = (await response.json())["signals"]
        assert [s["seq"] for s in quiet] == [r["seq"] for r in ten
                                             if r["kind"] != "new_ticket"]

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": token,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}
        result = await asyncio.to_thread(CliRunner().invoke, cli,
                                         ["signals", "--as", "u10", "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["seq"] for line in result.output.splitlines()] == [
            r["seq"] for r in ten]
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["signals", "--as", "ten@example.com", "--after",
                                      str(ten[1]["seq"])], env=env)
        assert result.exit_code == 0, result.output
        assert len(result.output.splitlines()) == len(ten) - 2
        assert "from a contact" in result.output
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["signals"], env=env)
        assert result.exit_code == 1 and "crm_user_required" in result.output

        # Following: every signal after 0, then the stream ends ("gone") once the
        # integration no longer knows the user.
        following = asyncio.create_task(asyncio.to_thread(
            CliRunner().invoke, cli,
            ["signals", "--as", "u10", "--follow", "--after", "0", "--json"], env=env))
        await asyncio.sleep(1.0)
        ctx.integration = FakeIntegration(People(  # type: ignore[assignment]
            users={k: v for k, v in people.users.items() if k != "u10"},
            visibility="departments"))
        result = await asyncio.wait_for(following, 30)
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines()
                 if line.startswith("{")]
        assert [s["seq"] for s in lines] == [r["seq"] for r in ten]
        assert "no longer known" in result.output
        ctx.integration = FakeIntegration(people)  # type: ignore[assignment]

        # A live stream from now on: a new comment arrives on it, once.
        live = asyncio.create_task(read_stream(
            session, url, {**auth, "X-Syncd-Crm-User": "u10"}, 1))
        await asyncio.sleep(0.5)
        comment = thread("105", "3", 40, "comment", "out")
        await pipeline.captured("desk", comment)
        got = await asyncio.wait_for(live, 30)
        assert [(s["kind"], s["id"]) for s in got] == [
            ("new_comment", str(signal_id("new_comment", "105")))]


async def publish_until(pool: asyncpg.Pool, bootstrap: str, topic: str, through: int
                        ) -> None:
    """Run a publisher until it has committed ``through``, then stop it."""
    stop = asyncio.Event()

    def sent(last: int) -> None:
        if last >= through:
            stop.set()

    publisher = SignalPublisher(pool=pool, bootstrap=bootstrap, topic=topic, partitions=3,
                                poll_interval=0.1, batch_max=4, on_sent=sent)
    await asyncio.wait_for(publisher.run(stop), 60)


async def test_a_restart_sends_again_from_the_last_committed_position(
        pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str,
        topic_prefix: str) -> None:
    """The publisher sends every signal, in pages, and commits its position after the
    acks; one that stopped before committing (the position set back) sends the rest
    again: repeats with the same ids, nothing missing; a consumer keeping the first of
    each id has each signal once."""
    async with pool.acquire() as conn:
        await reset_offset(conn, "g", ("t", 0), 0)
        await deliver(conn, story(), start=0, size=50)
    topic = f"{topic_prefix}.signals"
    total = len(EXPECTED)
    await publish_until(pool, kafka_bootstrap, topic, total)
    assert await pool.fetchval("SELECT through FROM sales_signals.published") == total
    await pool.execute("UPDATE sales_signals.published SET through = 6")  # a lost commit
    await publish_until(pool, kafka_bootstrap, topic, total)
    published = await read_topic(kafka_bootstrap, topic, total + total - 6)
    seqs = sorted(v["seq"] for _, v in published)
    assert seqs == sorted([*range(1, total + 1), *range(7, total + 1)])
    first: dict[str, dict[str, Any]] = {}
    for _, value in published:
        first.setdefault(value["id"], value)
    assert sorted(v["seq"] for v in first.values()) == list(range(1, total + 1))
