"""Zoho Desk's tickets and departments on the handshake board (issue 16, part 2),
against the emulator of the documented v1 API (ops/emulators/zoho_desk.py): captured
in the embedded desk's shape (by the webhook's intake and by the poll), placed and
moved as the embedded desk's are, and the board's close and reply reaching the
desk's API."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from adapters.command_writer import Backoff
from adapters.remote_capture import RemoteCapture
from adapters.remote_store import RemoteStore
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_capture import DeskWebhookIntake, ZohoDeskPoll
from adapters.zoho.desk_store import zoho_desk_store
from daemon.http import BOARD_PREFIX
from daemon.http.auth import open_access
from daemon.http.board import BoardContext
from daemon.http.server import build_app
from ops.emulators.zoho import Fault
from ops.emulators.zoho_desk import ORG_ID, ZohoDeskEmulator, running_emulator
from tests.support.hosted import desk_pipeline
from tests.support.pipeline import Pipeline


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoDeskEmulator]:
    async with running_emulator() as emu:
        yield emu


def desk_store(emulator: ZohoDeskEmulator, *, poll_interval: float) -> Any:
    return zoho_desk_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                           poll_interval=poll_interval, first_window=dt.timedelta(hours=1))


COLUMN = "SELECT board_column FROM handshake.board WHERE ticket_id = $1"


async def test_a_persons_ticket_reaches_the_board_moves_and_leaves_it(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    """By the poll alone: a department and a ticket made in the desk by a person reach
    the board (``new``: nobody in the CRM), the ticket moves when a CRM contact with
    its e-mail appears, a department renamed is renamed on the board, and the ticket
    closed in the desk leaves it. The sync leaves tickets and departments alone."""
    async with desk_pipeline(emulator, database_url, kafka_bootstrap, topic_prefix) as pipe:
        support = emulator.person_creates("departments", {"name": "Support"})
        ticket = emulator.person_creates("tickets", {
            "subject": "Printer on fire", "departmentId": support, "email": "Ana@X.example",
            "phone": "+33 6 12 34 56 78", "priority": "High",
            "dueDate": "2026-12-24T10:00:00.000Z"})
        await pipe.eventually(COLUMN, "new", ticket)
        row = await pipe.fetchrow("SELECT * FROM handshake.board WHERE ticket_id = $1", ticket)
        assert row is not None
        assert (row["department_id"], row["email_key"], row["phone_key"]) == (
            support, "ana@x.example", "612345678")
        made = emulator.records["tickets"][ticket]
        assert json.loads(row["summary"]) == {
            "id": ticket, "subject": "Printer on fire", "status": "Open", "priority": "High",
            "channel": "Email", "owner": None, "due_date": "2026-12-24T10:00:00+00:00",
            "requester_email": "Ana@X.example", "requester_phone": "+33 6 12 34 56 78",
            "contact_id": None,
            "created_time": dt.datetime.fromisoformat(made["createdTime"]).isoformat(),
            "modified_time": dt.datetime.fromisoformat(made["modifiedTime"]).isoformat()}
        await pipe.eventually("SELECT name FROM handshake.departments"
                         " WHERE department_id = $1", "Support", support)

        await pipe.execute("INSERT INTO crm.contacts (last_name, email)"
                           " VALUES ('Ana', 'ana@x.example')")
        await pipe.eventually(COLUMN, "contacts_leads", ticket)
        emulator.person_edits("departments", support, {"name": "Help desk"})
        await pipe.eventually("SELECT name FROM handshake.departments"
                         " WHERE department_id = $1", "Help desk", support)

        emulator.person_edits("tickets", ticket, {"status": "Closed"})
        await pipe.eventually("SELECT count(*) FROM handshake.board", 0)
        moves = await pipe.fetch("SELECT from_column, to_column FROM handshake.moves"
                                 " WHERE ticket_id = $1 ORDER BY seq", ticket)
        assert [tuple(m) for m in moves] == [
            (None, "new"), ("new", "contacts_leads"), ("contacts_leads", None)]
        await pipe.drain()
        assert await pipe.fetchval("SELECT count(*) FROM sync.links WHERE module"
                                   " NOT IN ('contacts', 'accounts', 'products')") == 0
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
        assert list(emulator.records["tickets"]) == [ticket]  # the sync wrote no ticket
        assert emulator.records["tickets"][ticket]["statusType"] == "Closed"


async def test_ticket_callbacks_are_captured_in_the_embedded_desks_shape(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator) -> None:
    """A ``Ticket_Add`` callback is an event with the value keys the embedded desk's
    capture gives a ticket (what the board reads), its status type Zoho's
    ``statusType``; an update names the fields it changed; a ``Ticket_Delete`` is a
    delete."""
    intake = DeskWebhookIntake(SecretStr("t"), sync_key_field="cf_syncd_key")
    support = emulator.person_creates("departments", {"name": "Support"})
    contact = emulator.person_creates("contacts", {"lastName": "Ana"})
    ticket = emulator.person_creates("tickets", {
        "subject": "Help", "departmentId": support, "contactId": contact,
        "email": "ana@x.example", "cf": {"cf_plan": "gold"}})

    async def callback(event_type: str, payload: dict[str, Any]) -> int:
        return await intake.accept(pool, json.dumps([{
            "eventType": event_type, "orgId": ORG_ID, "payload": payload}]).encode())

    assert await callback("Ticket_Add", emulator.records["tickets"][ticket]) == 1
    await pool.execute("INSERT INTO desk.tickets (department_id, subject) VALUES (1, 'x')")
    rows = await pool.fetch("SELECT record_id, op, changed, \"values\" FROM desk.outbox"
                            " WHERE module = 'tickets' ORDER BY seq")
    hosted, embedded = (json.loads(r["values"]) for r in rows)
    # The rating is not a field of Zoho's ticket: it comes from the customer happiness
    # list (test_zoho_desk_ratings.py), so a ticket's record names none.
    assert set(hosted) == set(embedded) - {"id", "rating"}
    assert (rows[0]["record_id"], rows[0]["op"]) == (ticket, "create")
    assert {k: hosted[k] for k in ("department_id", "contact_id", "status", "status_type",
                                   "requester_email", "custom", "deleted")} == {
        "department_id": int(support), "contact_id": int(contact), "status": "Open",
        "status_type": "Open", "requester_email": "ana@x.example",
        "custom": {"cf_plan": "gold"}, "deleted": False}

    emulator.statuses["Waiting on customer"] = "On Hold"
    emulator.person_edits("tickets", ticket, {"status": "Waiting on customer"})
    assert await callback("Ticket_Update", emulator.records["tickets"][ticket]) == 1
    assert await callback("Ticket_Delete", {"id": ticket}) == 1
    rows = await pool.fetch("SELECT op, changed, \"values\" FROM desk.outbox"
                            " WHERE record_id = $1 ORDER BY seq", ticket)
    assert [(r["op"], r["changed"]) for r in rows] == [
        ("create", None), ("update", ["status", "status_type"]), ("delete", None)]
    assert json.loads(rows[1]["values"])["status_type"] == "On Hold"


async def test_ticket_times_in_epoch_milliseconds_are_read(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator) -> None:
    """Ticket.json's examples give ``createdTime``, ``modifiedTime`` and ``dueDate`` as
    milliseconds since the epoch: such a callback is captured with ISO times, not
    refused."""
    intake = DeskWebhookIntake(SecretStr("t"), sync_key_field="cf_syncd_key")
    support = emulator.person_creates("departments", {"name": "Support"})
    ticket = emulator.person_creates("tickets", {"subject": "Epoch", "departmentId": support})
    payload = {**emulator.records["tickets"][ticket], "createdTime": 1466504175000,
               "modifiedTime": 1466504176000, "dueDate": 1466525776000}
    assert await intake.accept(pool, json.dumps([{
        "eventType": "Ticket_Add", "orgId": ORG_ID, "payload": payload}]).encode()) == 1
    row = await pool.fetchrow("SELECT modified_at, \"values\" FROM desk.outbox")
    assert row is not None
    values = json.loads(row["values"])
    assert (values["created_time"], values["modified_time"], values["due_date"]) == (
        "2016-06-21T10:16:15+00:00", "2016-06-21T10:16:16+00:00",
        "2016-06-21T16:16:16+00:00")
    assert row["modified_at"] == dt.datetime(2016, 6, 21, 10, 16, 16, tzinfo=dt.UTC)


class Board:
    """The board's HTTP API on the pipeline's database, its ticket actions the
    hosted desk's (as the daemon composes them)."""

    def __init__(self, pipe: Pipeline, store: RemoteStore) -> None:
        assert pipe.pool is not None and store.tickets is not None
        self.server = TestServer(build_app({}, board=BoardContext(
            pipe.pool, edition="professional", integration_active=lambda: True,
            authorize=open_access, tickets=store.tickets(pipe.pool))))
        self.session = ClientSession(timeout=ClientTimeout(total=30))

    async def __aenter__(self) -> Board:
        await self.server.start_server()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.session.close()
        await self.server.close()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.server.make_url('')}".rstrip("/") + BOARD_PREFIX + path
        async with self.session.post(url, json=body) as response:
            return response.status, await response.json()


async def test_close_and_reply_from_the_board_reach_zoho_desk(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    """The board's close is Zoho's ``PATCH`` of the status, captured at once (the poll
    is 60 s away) so the ticket leaves the board, and raising no webhook (the source
    id); its reply is a ``sendReply`` thread from the department's From address;
    another department's or an unknown ticket is a 404, Zoho's refusal (or no From
    address to reply from) a 409, a desk out of reach a 503."""
    support = emulator.person_creates("departments", {"name": "Support"})
    billing = emulator.person_creates("departments", {"name": "Billing"})
    ticket = emulator.person_creates("tickets", {
        "subject": "Refund", "departmentId": support, "email": "ana@x.example",
        "priority": "High", "cf": {"cf_plan": "gold"}})
    store, client = desk_store(emulator, poll_interval=60)
    emulator.webhooks["1"] = {  # a webhook as the daemon subscribes it, to nowhere
        "id": "1", "url": "http://127.0.0.1:9/webhooks/zoho-desk", "isEnabled": True,
        "ignoreSourceId": client.options.source_id, "subscriptions": {"Ticket_Update": None}}
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
    await pipe.start()
    try:
        await pipe.eventually(COLUMN, "new", ticket)  # the first poll's
        async with Board(pipe, store) as board:
            before = dict(emulator.records["tickets"][ticket])
            status, closed = await board.post(f"/{support}/tickets/{ticket}/close")
            assert (status, closed) == (202, {"ticket": ticket, "status": "Closed",
                                              "previous_status": "Open", "changed": True})
            after = emulator.records["tickets"][ticket]
            assert {k: v for k, v in after.items() if before.get(k) != v} == {
                "status": "Closed", "statusType": "Closed",
                "modifiedTime": after["modifiedTime"]}
            await pipe.eventually("SELECT count(*) FROM handshake.board", 0, timeout=10)
            assert await pipe.fetchval(
                "SELECT origin FROM syncd.event_log WHERE module = 'tickets'"
                " ORDER BY seq DESC LIMIT 1") == "user"
            await emulator.delivered()
            assert emulator.deliveries == []  # the daemon's write raised no webhook
            assert (await board.post(f"/{support}/tickets/{ticket}/close"))[1][
                "changed"] is False

            status, replied = await board.post(f"/{support}/tickets/{ticket}/replies",
                                               {"content": "Refunded.", "author": "rui"})
            assert status == 202
            (thread,) = emulator.threads[ticket]
            assert replied == {"ticket": ticket, "thread": thread["id"]}
            (support_address,) = [a for a in emulator.from_addresses
                                  if a["departmentId"] == support]
            assert {k: thread[k] for k in ("channel", "direction", "content", "contentType",
                                           "to", "fromEmailAddress")} == {
                "channel": "EMAIL", "direction": "out", "content": "Refunded.",
                "contentType": "plainText", "to": "ana@x.example",
                "fromEmailAddress": support_address["address"]}

            for path in (f"/{billing}/tickets/{ticket}/close",
                         f"/{support}/tickets/1892000000999999/close",
                         f"/{billing}/tickets/{ticket}/replies"):
                status, answer = await board.post(path, {"content": "x"})
                assert (status, answer["error"]["code"]) == (404, "not_found")
            emulator.faults.append(Fault(422, body={
                "errorCode": "INVALID_DATA", "message": "not this one"}))
            status, answer = await board.post(f"/{support}/tickets/{ticket}/close")
            assert (status, answer["error"]["code"]) == (409, "desk_refused")
            assert "not this one" in answer["error"]["message"]
            support_address["isActive"] = False
            status, answer = await board.post(f"/{support}/tickets/{ticket}/replies",
                                              {"content": "From whom?"})
            assert (status, answer["error"]["code"]) == (409, "desk_refused")
            assert "no active From address" in answer["error"]["message"]
            emulator.refresh_refused = True
            emulator.revoke_tokens()
            status, answer = await board.post(f"/{support}/tickets/{ticket}/replies",
                                              {"content": "Still there?"})
            assert (status, answer["error"]["code"]) == (503, "desk_unavailable")
            assert len(emulator.threads[ticket]) == 1

            emulator.person_edits("tickets", ticket, {"status": "Open"})
            await emulator.delivered()  # a person's edit does raise one
            assert [d[1] for d in emulator.deliveries] == [["Ticket_Update"]]
    finally:
        await pipe.close()
        await client.close()


async def test_a_tickets_threads_and_comments_are_captured_as_the_embedded_desks(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator) -> None:
    """A ticket's conversation in the embedded desk's ``ticket_threads`` shape: by the
    callbacks (``Ticket_Thread_Add`` with its content, ``Ticket_Comment_Add``), and by
    the poll (each changed ticket's threads and comments), the poll then taking the
    callbacks' copies for old news and bringing a missed one."""
    intake = DeskWebhookIntake(SecretStr("t"), sync_key_field="cf_syncd_key")
    support = emulator.person_creates("departments", {"name": "Support"})
    ticket = emulator.person_creates("tickets", {"subject": "Help", "departmentId": support,
                                                  "email": "ana@x.example"})
    customer = emulator.person_writes(ticket, "It is broken", direction="in")
    comment = emulator.person_comments(ticket, "Call her back", author="Bo")

    async def callback(event_type: str, payload: dict[str, Any]) -> int:
        return await intake.accept(pool, json.dumps([{
            "eventType": event_type, "orgId": ORG_ID, "payload": payload}]).encode())

    thread, = emulator.threads[ticket]
    assert await callback("Ticket_Thread_Add", thread) == 1
    assert await callback("Ticket_Comment_Add", emulator.comments[ticket][0]) == 1
    await pool.execute("INSERT INTO desk.ticket_threads (ticket_id, direction, content)"
                       " VALUES (1, 'in', 'x')")
    rows = await pool.fetch("SELECT record_id, op, \"values\" FROM desk.outbox"
                            " WHERE module = 'ticket_threads' ORDER BY seq")
    (hosted_reply, hosted_comment, embedded) = (json.loads(r["values"]) for r in rows)
    assert set(hosted_reply) == set(embedded) - {"id"}
    assert [r["record_id"] for r in rows[:2]] == [customer, comment]
    assert {k: hosted_reply[k] for k in ("ticket_id", "direction", "kind", "author",
                                         "channel", "content", "deleted")} == {
        "ticket_id": int(ticket), "direction": "in", "kind": "reply", "author": "A Customer",
        "channel": "EMAIL", "content": "It is broken", "deleted": False}
    assert {k: hosted_comment[k] for k in ("ticket_id", "direction", "kind", "author",
                                           "content")} == {
        "ticket_id": int(ticket), "direction": "out", "kind": "comment", "author": "Bo",
        "content": "Call her back"}

    desk = ZohoDesk(emulator.options())
    try:
        poll = ZohoDeskPoll(desk, RemoteCapture(pool, "desk"),
                            first_window=dt.timedelta(hours=1))
        await pool.execute("DELETE FROM desk.outbox")
        assert await poll.poll("tickets") == 1  # the ticket, new to the poll
        assert await poll.poll("ticket_threads") == 0  # both came by their callbacks
        emulator.drop_callbacks = 1
        missed = emulator.person_writes(ticket, "Still broken", direction="in")
        await emulator.delivered()
        assert await poll.poll("ticket_threads") == 1
        row = await pool.fetchrow("SELECT record_id, \"values\" FROM desk.outbox"
                                  " WHERE module = 'ticket_threads'")
        assert row is not None and row["record_id"] == missed
        assert json.loads(row["values"])["content"] == "Still broken"  # a list's summary
    finally:
        await desk.close()
