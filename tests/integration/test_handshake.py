"""The handshake board (HS-01 … HS-07) on the real embedded stores, broker and projector."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from daemon.cli.client import SseEvent, SseParser
from daemon.cli.handshake import handshake
from daemon.http import BOARD_PREFIX
from daemon.http.auth import open_access
from daemon.http.board import REASON_FREE, REASON_GONE, BoardContext
from daemon.http.server import build_app
from daemon.runtime.settings import load_settings
from projections import events as envelope
from projections.batch import LoggedEvent
from projections.events import decode_event
from projections.handshake import HandshakeProjection
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.support.events import change
from tests.support.pipeline import Pipeline


@pytest.fixture(autouse=True)
def _ticket_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The desk's new tables are modules of the envelope.

    Stands in for adding ``ticket_statuses`` and ``ticket_threads`` to
    ``projections.events.MODULES`` (not this module's file to change); a no-op
    once they are there.
    """
    monkeypatch.setattr(envelope, "MODULES",
                        envelope.MODULES | {"ticket_statuses", "ticket_threads"})


@dataclass
class Board:
    pipe: Pipeline
    projection: HandshakeProjection

    async def settle(self) -> None:
        await self.pipe.settle()

    async def run(self, query: str, *args: Any) -> Any:
        """Write to a store as a person would, and wait until the board has applied it."""
        value = await self.pipe.fetchval(query, *args)
        await self.pipe.settle()
        return value

    async def column(self, ticket: int) -> str | None:
        return await self.pipe.fetchval(  # type: ignore[no-any-return]
            "SELECT board_column FROM handshake.board WHERE ticket_id = $1", str(ticket))

    async def columns(self, department: int) -> dict[str, list[int]]:
        rows = await self.pipe.fetch(
            "SELECT board_column, ticket_id::bigint AS id FROM handshake.board"
            " WHERE department_id = $1 ORDER BY 1, 2", str(department))
        out: dict[str, list[int]] = {}
        for row in rows:
            out.setdefault(row["board_column"], []).append(row["id"])
        return out

    async def moves(self, ticket: int) -> list[tuple[str | None, str | None]]:
        rows = await self.pipe.fetch(
            "SELECT from_column, to_column FROM handshake.moves WHERE ticket_id = $1"
            " ORDER BY seq", str(ticket))
        return [(r["from_column"], r["to_column"]) for r in rows]

    async def department(self, name: str) -> int:
        return await self.run(  # type: ignore[no-any-return]
            "INSERT INTO desk.departments (name) VALUES ($1) RETURNING id", name)

    async def ticket(self, department: int, *, email: str | None = None,
                     phone: str | None = None, status: str = "Open",
                     subject: str = "Help") -> int:
        return await self.run(  # type: ignore[no-any-return]
            "INSERT INTO desk.tickets (department_id, subject, status, requester_email,"
            " requester_phone, priority, channel) VALUES ($1, $2, $3, $4, $5, 'High', 'Email')"
            " RETURNING id", department, subject, status, email, phone)


@pytest.fixture
async def board(database_url: str, kafka_bootstrap: str,
                topic_prefix: str) -> AsyncIterator[Board]:
    """Relays and projector as the daemon runs them: the handshake projection after
    the sync."""
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix)
    await pipe.start()
    try:
        yield Board(pipe, pipe.parts.projection(HandshakeProjection))
    finally:
        await pipe.close()


@dataclass
class Api:
    session: ClientSession
    url: str
    state: dict[str, bool] = field(default_factory=dict)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.get(f"{self.url}{BOARD_PREFIX}{path}", **kwargs) as response:
            return response.status, await response.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(f"{self.url}{BOARD_PREFIX}{path}", json=body) as response:
            return response.status, await response.json()


async def serve_api(pool: asyncpg.Pool, *, edition: str, active: Callable[[], bool]
                    ) -> TestServer:
    app = build_app({}, board=BoardContext(pool, edition=edition, integration_active=active,
                                           authorize=open_access, keepalive=0.5))
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    """The handshake HTTP API, professional edition, on this test's database."""
    state = {"active": True}
    server = await serve_api(pool, edition="professional", active=lambda: state["active"])
    try:
        async with ClientSession(timeout=ClientTimeout(total=30)) as session:
            yield Api(session, str(server.make_url("")).rstrip("/"), state)
    finally:
        await server.close()


class Stream:
    """A server-sent-events reader that hands out events as they arrive."""

    def __init__(self, session: ClientSession, url: str, headers: dict[str, str]) -> None:
        self.session = session
        self.url = url
        self.headers = headers
        self.queue: asyncio.Queue[SseEvent] = asyncio.Queue()
        self.status = 0
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def _read(self) -> None:
        async with self.session.get(self.url, headers=self.headers) as response:
            self.status = response.status
            self._opened.set()
            parser = SseParser()
            async for raw in response.content:
                event = parser.feed(raw.decode())
                if event is not None:
                    self.queue.put_nowait(event)

    async def __aenter__(self) -> Stream:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def next(self, timeout: float = 15) -> SseEvent:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def moves(self, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.next()
            if event.event == "move":
                found.append(json.loads(event.data) | {"_id": event.id})
        return found


# -- the columns -----------------------------------------------------------------


async def test_ticket_moves_through_every_column_and_back(board: Board) -> None:
    """HS-01, HS-05: a ticket walks every column and back as its requester's standing changes."""
    dept = await board.department("Support")
    ticket = await board.ticket(dept, email="  Ana.Silva@Example.COM ")
    assert await board.column(ticket) == "new"
    lead = await board.run(
        "INSERT INTO crm.leads (last_name, email) VALUES ('Silva', 'ana.silva@example.com')"
        " RETURNING id")
    assert await board.column(ticket) == "contacts_leads"
    await board.run("UPDATE crm.leads SET converted = true WHERE id = $1", lead)
    assert await board.column(ticket) == "new"  # a converted lead is no longer a lead
    contact = await board.run(
        "INSERT INTO crm.contacts (last_name, email) VALUES ('Silva', 'ANA.SILVA@example.com')"
        " RETURNING id")
    assert await board.column(ticket) == "contacts_leads"
    lost = await board.run(
        "INSERT INTO crm.deals (deal_name, stage, contact_id) VALUES ('old', 'lost', $1)"
        " RETURNING id", contact)
    assert await board.column(ticket) == "contacts_leads"  # a lost deal counts for nothing
    open_deal = await board.run(
        "INSERT INTO crm.deals (deal_name, stage, contact_id) VALUES ('renewal', 'open', $1)"
        " RETURNING id", contact)
    assert await board.column(ticket) == "opportunities"
    await board.run("UPDATE crm.deals SET stage = 'won' WHERE id = $1", lost)
    assert await board.column(ticket) == "customers"  # won beats open
    await board.run("UPDATE crm.deals SET stage = 'lost' WHERE id = $1", lost)
    assert await board.column(ticket) == "opportunities"
    await board.run("DELETE FROM crm.deals WHERE id = $1", open_deal)
    assert await board.column(ticket) == "contacts_leads"
    await board.run("UPDATE crm.contacts SET deleted = true WHERE id = $1", contact)
    assert await board.column(ticket) == "new"
    assert await board.moves(ticket) == [
        (None, "new"), ("new", "contacts_leads"), ("contacts_leads", "new"),
        ("new", "contacts_leads"), ("contacts_leads", "opportunities"),
        ("opportunities", "customers"), ("customers", "opportunities"),
        ("opportunities", "contacts_leads"), ("contacts_leads", "new"),
    ]


async def test_email_and_phone_matching(board: Board) -> None:
    """HS-02: e-mail matches case-insensitively, else the normalised phone; e-mail decides first."""
    dept = await board.department("Support")
    by_phone = await board.ticket(dept, email="nobody@example.org", phone="+33 6 12 34 56 78")
    by_email = await board.ticket(dept, email="Lead@Example.org", phone="0033 612345678")
    no_keys = await board.ticket(dept, phone="12 34")
    await board.run("INSERT INTO crm.leads (last_name, email) VALUES ('L', 'lead@example.org')")
    contact = await board.run(
        "INSERT INTO crm.contacts (last_name, mobile) VALUES ('P', '06.12.34.56.78 ext. 9')"
        " RETURNING id")
    row = await board.pipe.fetchrow(
        "SELECT board_column, matched_by FROM handshake.board WHERE ticket_id = $1",
        str(by_phone))
    assert row is not None
    assert (row["board_column"], row["matched_by"]) == ("contacts_leads", "phone")
    await board.run("INSERT INTO crm.deals (stage, contact_id) VALUES ('won', $1)", contact)
    assert await board.column(by_phone) == "customers"
    assert await board.column(by_email) == "contacts_leads"
    assert await board.column(no_keys) == "new"
    # The contact's phone changes: the ticket that matched only by phone goes back to New.
    await board.run("UPDATE crm.contacts SET mobile = '+34 699 000 111' WHERE id = $1", contact)
    assert await board.column(by_phone) == "new"
    # The requester's own phone changes to the new number: the ticket follows (HS-05).
    await board.run("UPDATE desk.tickets SET requester_phone = '699000111' WHERE id = $1",
                    by_phone)
    assert await board.column(by_phone) == "customers"


async def test_custom_status_mapped_to_open(board: Board) -> None:
    """HS-03: a custom status mapped to Open is on the board; remapping moves its tickets."""
    dept = await board.department("Support")
    await board.run("INSERT INTO desk.ticket_statuses (name, maps_to)"
                    " VALUES ('Awaiting reply', 'Open'), ('Waiting on vendor', 'On Hold')")
    awaiting = await board.ticket(dept, email="a@x.org", status="awaiting REPLY")
    vendor = await board.ticket(dept, email="b@x.org", status="Waiting on vendor")
    on_hold = await board.ticket(dept, email="c@x.org", status="On Hold")
    unknown = await board.ticket(dept, email="d@x.org", status="Nobody defined this")
    assert await board.columns(dept) == {"new": [awaiting]}
    await board.run("UPDATE desk.ticket_statuses SET maps_to = 'Open'"
                    " WHERE name = 'Waiting on vendor'")
    assert await board.columns(dept) == {"new": sorted([awaiting, vendor])}
    await board.run("UPDATE desk.tickets SET status = 'Open' WHERE id = ANY($1::bigint[])",
                    [on_hold, unknown])
    await board.run("UPDATE desk.tickets SET status = 'Escalated' WHERE id = $1", awaiting)
    assert await board.columns(dept) == {"new": sorted([vendor, on_hold, unknown])}
    assert await board.moves(awaiting) == [(None, "new"), ("new", None)]


async def test_departments_are_kept_apart(board: Board) -> None:
    """HS-04: departments have separate boards; a ticket changing department moves across."""
    support = await board.department("Support")
    billing = await board.department("Billing")
    in_support = await board.ticket(support, email="kim@x.org")
    in_billing = await board.ticket(billing, email="kim@x.org")
    other = await board.ticket(billing, email="lee@x.org")
    contact = await board.run("INSERT INTO crm.contacts (last_name, email)"
                              " VALUES ('Kim', 'kim@x.org') RETURNING id")
    await board.run("INSERT INTO crm.deals (stage, contact_id) VALUES ('open', $1)", contact)
    assert await board.columns(support) == {"opportunities": [in_support]}
    assert await board.columns(billing) == {"new": [other], "opportunities": [in_billing]}
    await board.run("UPDATE desk.tickets SET department_id = $1 WHERE id = $2", support, other)
    assert await board.columns(support) == {"new": [other], "opportunities": [in_support]}
    assert await board.columns(billing) == {"opportunities": [in_billing]}
    rows = await board.pipe.fetch(
        "SELECT department_id::bigint AS d, from_column, to_column FROM handshake.moves"
        " WHERE ticket_id = $1 ORDER BY seq", str(other))
    assert [(r["d"], r["from_column"], r["to_column"]) for r in rows] == [
        (billing, None, "new"), (billing, "new", None), (support, None, "new")]


async def test_contact_written_by_the_sync_counts(board: Board) -> None:
    """A CRM contact the sync wrote (an event with origin ``sync``, which the sync itself
    ignores, SYNC-14) moves the requester's ticket."""
    dept = await board.department("Support")
    ticket = await board.ticket(dept, email="desk.only@x.org")
    assert await board.column(ticket) == "new"
    await board.run("INSERT INTO desk.contacts (last_name, email)"
                    " VALUES ('Desk', 'Desk.Only@x.org')")
    assert await board.pipe.fetchval("SELECT count(*) FROM crm.contacts") == 1
    assert await board.column(ticket) == "contacts_leads"


async def test_a_phone_edited_while_paused_moves_the_tickets_on_resume(board: Board) -> None:
    """OWN-03, issue 13: the resume drain writes a desk edit made while paused to the CRM;
    the board follows (the sync's CRM write is an event), and a rebuild of the board
    from the event log finds nothing to change."""
    dept = await board.department("Support")
    desk_id = await board.run("INSERT INTO desk.contacts (last_name, email, phone)"
                              " VALUES ('Pa', 'pa@x.org', '+33 6 11 11 11 11') RETURNING id")
    crm_id = await board.pipe.fetchval(
        "SELECT crm_id::bigint FROM sync.links WHERE module = 'contacts' AND desk_id = $1",
        str(desk_id))
    assert crm_id is not None
    old_number = await board.ticket(dept, email="someone@else.org", phone="06 11 11 11 11")
    new_number = await board.ticket(dept, email="another@else.org", phone="06 22 22 22 22")
    assert (await board.column(old_number), await board.column(new_number)) == (
        "contacts_leads", "new")

    board.pipe.configure(paused=True)
    await board.pipe.execute("UPDATE desk.contacts SET phone = '+33 6 22 22 22 22'"
                             " WHERE id = $1", desk_id)
    await board.pipe.wait_for_count("SELECT count(*) FROM sync.deferred", 1)
    assert await board.pipe.fetchval(
        "SELECT phone FROM crm.contacts WHERE id = $1", crm_id) == "+33 6 11 11 11 11"
    board.pipe.configure(paused=False)
    await board.settle()  # the drain, then the CRM write it made, through the projector
    assert await board.pipe.fetchval(
        "SELECT phone FROM crm.contacts WHERE id = $1", crm_id) == "+33 6 22 22 22 22"
    assert (await board.column(old_number), await board.column(new_number)) == (
        "new", "contacts_leads")

    conn = await asyncpg.connect(board.pipe.dsn, server_settings={"timezone": "UTC"})
    try:  # as `syncd replay --projection handshake --dry-run` does
        report = await rebuild_from_events(conn, spec("handshake"), EventLogSource(),
                                             dry_run=True)
    finally:
        await conn.close()
    assert report.changes == 0, report.as_dict()


# -- serving it -------------------------------------------------------------------


async def test_board_endpoint_drops_empty_columns_and_close_moves_the_last_ticket(
        board: Board, api: Api) -> None:
    """HS-04, HS-07: closing the last Customers ticket from the board removes that column."""
    dept = await board.department("Support")
    stranger = await board.ticket(dept, email="who@x.org", subject="Who am I")
    buyer = await board.ticket(dept, email="buyer@x.org", subject="Invoice")
    contact = await board.run("INSERT INTO crm.contacts (last_name, email)"
                              " VALUES ('B', 'buyer@x.org') RETURNING id")
    await board.run("INSERT INTO crm.deals (stage, contact_id) VALUES ('won', $1)", contact)
    status, body = await api.get(f"/{dept}")
    assert status == 200
    assert body["department"] == {"id": str(dept), "name": "Support"}
    assert [(c["column"], c["title"], c["count"], [t["id"] for t in c["tickets"]])
            for c in body["columns"]] == [
        ("new", "New", 1, [str(stranger)]), ("customers", "Customers", 1, [str(buyer)])]
    assert body["columns"][1]["tickets"][0]["subject"] == "Invoice"
    assert (await api.get("/support"))[1]["columns"] == body["columns"]  # by name
    for bad in ("0", "5001", "²", "x"):
        assert (await api.get(f"/{dept}", params={"limit": bad}))[0] == 400
    assert (await api.get("/no such department"))[0] == 404

    status, closed = await api.post(f"/{dept}/tickets/{buyer}/close")
    assert status == 202 and closed["previous_status"] == "Open"
    await board.settle()
    status, body = await api.get(f"/{dept}")
    assert [c["column"] for c in body["columns"]] == ["new"]
    assert await board.pipe.fetchval(
        "SELECT status FROM desk.tickets WHERE id = $1", buyer) == "Closed"
    logged = await board.pipe.fetchrow(
        "SELECT origin, payload FROM syncd.event_log WHERE module = 'tickets'"
        " AND record_id = $1 ORDER BY seq DESC LIMIT 1", str(buyer))
    assert logged is not None and logged["origin"] == "user"
    assert json.loads(logged["payload"])["values"]["status"] == "Closed"
    assert (await api.post(f"/{dept}/tickets/{buyer}/close"))[1]["changed"] is False
    assert (await api.post(f"/{dept}/tickets/999999/close"))[0] == 404


async def test_reply_from_the_board_reaches_the_desk(board: Board, api: Api) -> None:
    """HS-07: a board reply is stored in the desk as a person's event; bad bodies change nothing."""
    dept = await board.department("Support")
    ticket = await board.ticket(dept, email="ana@x.org")
    status, body = await api.post(f"/{dept}/tickets/{ticket}/replies",
                                  {"content": "We are on it.", "author": "agent.rui"})
    assert status == 202
    await board.settle()
    row = await board.pipe.fetchrow(
        "SELECT ticket_id, direction, kind, author, channel, content FROM desk.ticket_threads"
        " WHERE id = $1", int(body["thread"]))
    assert row is not None
    assert dict(row) == {"ticket_id": ticket, "direction": "out", "kind": "reply",
                         "author": "agent.rui", "channel": "Email",
                         "content": "We are on it."}
    assert await board.pipe.fetchval(
        "SELECT origin FROM syncd.event_log WHERE module = 'ticket_threads'"
        " AND record_id = $1", body["thread"]) == "user"
    for bad in ({}, {"content": "  "}, {"content": "x", "cc": "y"}, ["x"],
                {"content": "x", "author": 7}):
        assert (await api.post(f"/{dept}/tickets/{ticket}/replies", bad))[0] == 400
    other = await board.department("Billing")
    assert (await api.post(f"/{other}/tickets/{ticket}/replies", {"content": "x"}))[0] == 404
    assert await board.pipe.fetchval("SELECT count(*) FROM desk.ticket_threads") == 1


async def test_stream_delivers_each_move_once_and_in_order(board: Board, api: Api) -> None:
    """HS-05: the SSE stream sends each move of its department once, in order, resumable."""
    dept = await board.department("Support")
    elsewhere = await board.department("Billing")
    ticket = await board.ticket(dept, email="eve@x.org")
    url = f"{api.url}{BOARD_PREFIX}/{dept}/stream"
    async with Stream(api.session, url, {}) as stream:
        assert stream.status == 200
        first = await stream.next()
        assert first.event == "board"
        assert [c["column"] for c in json.loads(first.data)["columns"]] == ["new"]
        contact = await board.run("INSERT INTO crm.contacts (last_name, email)"
                                  " VALUES ('E', 'eve@x.org') RETURNING id")
        await board.ticket(elsewhere, email="eve@x.org")  # another board: not streamed here
        deal = await board.run("INSERT INTO crm.deals (stage, contact_id)"
                               " VALUES ('open', $1) RETURNING id", contact)
        await board.run("UPDATE crm.deals SET stage = 'won' WHERE id = $1", deal)
        second = await board.ticket(dept, email="eve@x.org")
        await board.run("UPDATE desk.tickets SET status = 'Closed' WHERE id = $1", ticket)
        moves = await stream.moves(5)
        await asyncio.sleep(1.2)  # over two keep-alive periods: nothing more may come
        assert all(e.event != "move" for e in _drain(stream.queue))
    assert [(m["ticket"]["id"], m["kind"], m["from"], m["to"]) for m in moves] == [
        (str(ticket), "moved", "new", "contacts_leads"),
        (str(ticket), "moved", "contacts_leads", "opportunities"),
        (str(ticket), "moved", "opportunities", "customers"),
        (str(second), "added", None, "customers"),
        (str(ticket), "removed", "customers", None),
    ]
    ids = [int(m["_id"]) for m in moves]
    assert ids == sorted(set(ids)) and ids == [m["seq"] for m in moves]
    assert {m["department"] for m in moves} == {str(dept)}
    # A client that saw the second move resumes with exactly the remaining three.
    async with Stream(api.session, url, {"Last-Event-ID": str(ids[1])}) as again:
        resumed = await again.moves(3)
    assert [m["seq"] for m in resumed] == ids[2:]


def _drain(queue: asyncio.Queue[SseEvent]) -> list[SseEvent]:
    found: list[SseEvent] = []
    while not queue.empty():
        found.append(queue.get_nowait())
    return found


async def test_free_edition_is_refused_and_deleted_integration_is_gone(
        pool: asyncpg.Pool, api: Api) -> None:
    """HS-06: the free edition gets 403 with the reason; a deleted integration gets 404."""
    server = await serve_api(pool, edition="free", active=lambda: True)
    try:
        base = str(server.make_url("")).rstrip("/")
        for method, path in (("GET", "/1"), ("GET", "/1/stream"),
                             ("POST", "/1/tickets/1/close")):
            async with api.session.request(method, f"{base}{BOARD_PREFIX}{path}") as response:
                assert response.status == 403
                assert (await response.json())["error"] == {
                    "code": "not_in_edition", "message": REASON_FREE, "edition": "free"}
    finally:
        await server.close()
    assert (await api.get("/1"))[0] == 200
    api.state["active"] = False
    for path in ("/1", "/1/stream"):
        status, body = await api.get(path)
        assert (status, body["error"]["message"]) == (404, REASON_GONE)
    assert (await api.post("/1/tickets/1/replies", {"content": "x"}))[0] == 404


async def test_open_streams_end_on_deletion_and_on_shutdown(pool: asyncpg.Pool,
                                                            api: Api) -> None:
    """HS-06: an open stream says gone on deletion and ends at once on server shutdown."""
    async with Stream(api.session, f"{api.url}{BOARD_PREFIX}/1/stream", {}) as stream:
        assert (await stream.next()).event == "board"
        api.state["active"] = False
        gone = await stream.next(timeout=5)
        assert (gone.event, json.loads(gone.data)["message"]) == ("gone", REASON_GONE)
    server = await serve_api(pool, edition="enterprise", active=lambda: True)
    async with ClientSession() as session:
        url = str(server.make_url(f"{BOARD_PREFIX}/1/stream"))
        async with Stream(session, url, {}) as stream:
            assert (await stream.next()).event == "board"
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.close()
            assert loop.time() - started < 3


async def test_two_replicas_applying_a_ticket_and_its_contact_at_once_still_match(
        pool: asyncpg.Pool) -> None:
    """OWN-05: a ticket applied while a replica applies its matching contact waits, then matches."""
    contact = change(source="crm", module="contacts", record_id="1",
                     values={"email": "same@x.org"})
    ticket = change(source="desk", module="tickets", record_id="9",
                    values={"department_id": 1, "status": "Open",
                            "requester_email": "SAME@x.org"})
    async with pool.acquire() as first, pool.acquire() as second:
        held = first.transaction()
        await held.start()
        await HandshakeProjection().apply(first, [LoggedEvent(1, contact)])

        async def other_replica() -> None:
            async with second.transaction():
                await HandshakeProjection().apply(second, [LoggedEvent(2, ticket)])

        racing = asyncio.create_task(other_replica())
        await asyncio.sleep(0.5)
        assert not racing.done()  # it waits on the shared match key
        await held.commit()
        await asyncio.wait_for(racing, 10)
    assert await pool.fetchval(
        "SELECT board_column FROM handshake.board WHERE ticket_id = '9'") == "contacts_leads"


async def test_cli_prints_the_board_and_follows_its_moves(board: Board, pool: asyncpg.Pool,
                                                         tmp_path: Path) -> None:
    """`syncd handshake` prints the board, --json the API body, --watch each move until gone."""
    dept = await board.department("Support")
    ticket = await board.ticket(dept, email="cli@x.org", subject="Printer jams")
    state = {"active": True}
    server = await serve_api(pool, edition="professional", active=lambda: state["active"])
    try:
        settings = load_settings(data_dir=tmp_path, http_listen=f"127.0.0.1:{server.port}")

        def cli(*args: str) -> Result:
            return CliRunner().invoke(handshake, [*args, "Support"], obj=settings)

        shown = await asyncio.to_thread(cli)
        assert shown.exit_code == 0, shown.output
        assert shown.output.splitlines()[:4] == [
            f"Support (department {dept}): 1 open ticket", "", "New (1)",
            f"  #{ticket}  Printer jams  cli@x.org  High"]
        as_json = await asyncio.to_thread(cli, "--json")
        assert json.loads(as_json.output)["columns"][0]["tickets"][0]["id"] == str(ticket)

        watching = asyncio.create_task(asyncio.to_thread(cli, "--watch"))
        await asyncio.sleep(1.0)
        await board.run("INSERT INTO crm.leads (last_name, email) VALUES ('C', 'cli@x.org')")
        await asyncio.sleep(1.0)
        state["active"] = False
        watched = await asyncio.wait_for(watching, 15)
        assert watched.exit_code == 0, watched.output
        assert f"#{ticket} Printer jams: New → Contacts/Leads" in watched.output
        assert watched.output.count("Contacts/Leads") == 1
    finally:
        await server.close()


# -- replay and scale ----------------------------------------------------------------


_STATE_QUERIES = {
    "board": "SELECT ticket_id, department_id, board_column, matched_by, email_key, phone_key,"
             " created_at, summary FROM handshake.board ORDER BY ticket_id",
    "crm_keys": "SELECT * FROM handshake.crm_keys ORDER BY 1, 2, 3, 4",
    "deals": "SELECT * FROM handshake.deals ORDER BY deal_id",
    "departments": "SELECT * FROM handshake.departments ORDER BY department_id",
}


async def _state(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in await conn.fetch(q)] for name, q in _STATE_QUERIES.items()}


async def test_replay_rebuilds_the_board_exactly(board: Board) -> None:
    """OWN-03: replaying the event log in differently cut batches rebuilds the exact state."""
    support = await board.department("Support")
    billing = await board.department("Billing")
    await board.run("INSERT INTO desk.ticket_statuses (name, maps_to)"
                    " VALUES ('Awaiting reply', 'Open')")
    tickets = [await board.ticket(support if i < 4 else billing, email=f"p{i}@x.org",
                                  phone=f"06 00 00 00 0{i}",
                                  status="Awaiting reply" if i % 2 else "Open")
               for i in range(6)]
    contact = await board.run("INSERT INTO crm.contacts (last_name, email, phone)"
                              " VALUES ('P', 'p1@x.org', '+33 600000002') RETURNING id")
    await board.run("INSERT INTO crm.leads (last_name, email) VALUES ('Q', 'p3@x.org')")
    await board.run("INSERT INTO crm.deals (stage, contact_id) VALUES ('won', $1)", contact)
    await board.run("UPDATE desk.tickets SET status = 'Closed' WHERE id = $1", tickets[4])
    await board.run("UPDATE crm.contacts SET email = 'p5@x.org' WHERE id = $1", contact)
    await board.run("UPDATE desk.tickets SET department_id = $1 WHERE id = $2",
                    billing, tickets[0])

    conn = await asyncpg.connect(board.pipe.dsn, server_settings={"timezone": "UTC"})
    try:
        live = await _state(conn)
        assert len(live["board"]) == 5
        assert {r[2] for r in live["board"]} == {"new", "contacts_leads", "customers"}
        logged = [LoggedEvent(r["seq"], decode_event(r["payload"].encode()))
                  for r in await conn.fetch(
                      "SELECT seq, payload::text FROM syncd.event_log ORDER BY seq")]
        rebuilt = HandshakeProjection()
        async with conn.transaction():
            for table in _STATE_QUERIES:  # as projections.replay.rebuild_from_events does
                await conn.execute(f"DELETE FROM handshake.{table}")
            for start in range(0, len(logged), 3):
                await rebuilt.apply(conn, logged[start:start + 3])
        assert await _state(conn) == live
    finally:
        await conn.close()


@pytest.mark.slow
async def test_a_won_deal_moves_exactly_its_contacts_tickets_among_50000(board: Board) -> None:
    """HS-05: among 50,000 tickets a won deal examines and moves exactly its contact's 20."""
    dept = await board.department("Support")
    await board.pipe.execute(
        "INSERT INTO desk.tickets (department_id, subject, requester_email, requester_phone)"
        " SELECT $1, 'Ticket ' || i,"
        "  CASE WHEN i % 2500 = 0 THEN 'big.buyer@x.org' ELSE 'r' || i || '@x.org' END,"
        "  '+351 2' || lpad(i::text, 8, '0')"
        " FROM generate_series(1, 50000) AS i", dept)
    await board.pipe.settle(timeout=240)
    assert await board.pipe.fetchval("SELECT count(*) FROM handshake.board") == 50_000
    contact = await board.run("INSERT INTO crm.contacts (last_name, email)"
                              " VALUES ('Buyer', 'big.buyer@x.org') RETURNING id")
    deal = await board.run("INSERT INTO crm.deals (stage, contact_id) VALUES ('open', $1)"
                           " RETURNING id", contact)
    before = dataclasses.replace(board.projection.totals)
    await board.run("UPDATE crm.deals SET stage = 'won' WHERE id = $1", deal)
    after = board.projection.totals
    assert (after.examined - before.examined, after.moves - before.moves) == (20, 20)
    assert await board.pipe.fetchval(
        "SELECT count(*) FROM handshake.board WHERE board_column = 'customers'") == 20
    assert await board.pipe.fetchval(
        "SELECT count(*) FROM handshake.board WHERE board_column = 'new'") == 49_980
