"""CRM users' ticket actions on a hosted desk (TICKET-02, TICKET-03, TICKET-05), against
the emulator of Zoho Desk's documented v1 API (ops/emulators/zoho_desk.py): each action
queued by the projector in the batch that logs it, carried out by the desk's writer and
checked field by field in the desk; a ticket gone fails the action with its reason; a
delivery repeated after a crash makes nothing twice; a rebuild gives the same rows."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_actions import ZohoDeskActions
from daemon.service.ticket_actions import submit
from ops.emulators.zoho_desk import ZohoDeskEmulator, running_emulator
from projections.batch import LoggedEvent
from projections.events import ChangeEvent
from projections.people import CrmUser
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from projections.stores import commands
from projections.ticket_actions import TicketActionsProjection
from tests.support.hosted import desk_pipeline
from tests.support.pipeline import Pipeline

ADMIN = CrmUser(id="adm", name="Ada Admin", email="ada@crm.example", role="admin",
                desk_active=True)
PDF = {"name": "screen.pdf", "size": 2048, "content_type": "application/pdf",
       "url": "https://files.example.com/screen.pdf"}


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoDeskEmulator]:
    async with running_emulator() as emu:
        yield emu


async def act(pipe: Pipeline, kind: str, ticket: str | None, **payload: Any
              ) -> dict[str, Any]:
    """Ask for an action as the admin; wait until the desk's writer settled it; its row."""
    assert pipe.pool is not None
    accepted = await submit(pipe.pool, ADMIN, "all", kind, ticket_id=ticket,  # type: ignore[arg-type]
                            payload=payload)
    action = uuid.UUID(accepted["action_id"])
    query = "SELECT outcome FROM ticket_actions.actions WHERE action_id = $1"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await pipe.fetchval(query, action) in (None, "pending"):
        assert loop.time() < deadline, f"{kind} still pending"
        await asyncio.sleep(0.05)
    row = await pipe.fetchrow("SELECT * FROM ticket_actions.actions WHERE action_id = $1",
                              action)
    assert row is not None
    return dict(row)


async def test_each_action_reaches_zoho_desk_once_with_every_field(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    async with desk_pipeline(emulator, database_url, kafka_bootstrap, topic_prefix) as pipe:
        support = emulator.person_creates("departments", {"name": "Support"})
        ana = emulator.person_creates("contacts", {"firstName": "Ana", "lastName": "Silva",
                                                   "email": "ana@example.com"})
        ticket = emulator.person_creates("tickets", {
            "subject": "Cannot log in", "departmentId": support, "contactId": ana,
            "email": "ana@example.com", "priority": "Low"})
        await pipe.eventually("SELECT live FROM ticket_stats.tickets WHERE ticket_id = $1",
                    True, ticket)
        assert pipe.pool is not None
        open_deal = await pipe.fetchval("INSERT INTO crm.deals (deal_name, stage)"
                                        " VALUES ('Renewal', 'open') RETURNING id")
        await pipe.eventually("SELECT stage FROM handshake.deals WHERE deal_id = $1", "open",
                    str(open_deal))

        # -- create, on an existing contact and on a typed one -------------------------
        row = await act(pipe, "create", None, subject="Invoice missing",
                        department_id=support, contact_id=ana, priority="High",
                        due_date="2026-12-24T10:00:00+00:00", description="Where is it?",
                        attachments=[PDF])
        assert row["outcome"] == "applied", row
        made = emulator.records["tickets"][row["ticket_id"]]
        assert (made["subject"], made["departmentId"], made["contactId"], made["priority"],
                made["dueDate"]) == ("Invoice missing", support, ana, "High",
                                     "2026-12-24T10:00:00.000Z")
        assert made["description"] == (
            "Where is it?\n\nAttachments:\n- screen.pdf (application/pdf, 2048 bytes):"
            " https://files.example.com/screen.pdf")
        row = await act(pipe, "create", None, subject="Hello", department_id=support,
                        new_contact={"last_name": "Novo", "first_name": "Rui",
                                     "email": "rui@example.com"})
        assert row["outcome"] == "applied", row
        created = emulator.records["tickets"][row["ticket_id"]]
        contact = emulator.records["contacts"][created["contactId"]]
        assert (contact["lastName"], contact["firstName"], contact["email"]) == (
            "Novo", "Rui", "rui@example.com")
        assert len(emulator.records["contacts"]) == 2

        # -- comment, reply, forward ---------------------------------------------------
        row = await act(pipe, "comment", ticket, content="internal note")
        (comment,) = emulator.comments[ticket]
        assert (comment["content"], comment["isPublic"]) == ("internal note", False)
        assert row["outcome"] == "applied" and row["result"] is not None
        row = await act(pipe, "reply", ticket, content="We are on it", to=["boss@example.com"])
        reply = emulator.threads[ticket][-1]
        assert (reply["content"], reply["to"], reply["isForward"], reply["direction"]) == (
            "We are on it", "ana@example.com,boss@example.com", False, "out")
        assert reply["fromEmailAddress"].startswith(f"support.{support}@")
        await act(pipe, "forward", ticket, content="FYI", to=["vendor@example.com"])
        forward = emulator.threads[ticket][-1]
        assert (forward["content"], forward["to"], forward["isForward"]) == (
            "FYI", "vendor@example.com", True)
        # The threads are captured at once, as the desk's: the statistics count the reply.
        await pipe.eventually("SELECT count(*) FROM syncd.event_log WHERE module ="
                    " 'ticket_threads' AND payload->'values'->>'ticket_id' = $1", 3, ticket)

        # -- update, link to an open deal, close, delete ------------------------------
        await act(pipe, "update", ticket, fields={"subject": "Login fails",
                                                  "custom.region": "EU"})
        held = emulator.records["tickets"][ticket]
        assert (held["subject"], held["cf"].get("region")) == ("Login fails", "EU")
        row = await act(pipe, "link_deal", ticket, deal_id=str(open_deal))
        assert row["outcome"] == "applied"
        assert emulator.records["tickets"][ticket]["priority"] == "High"
        assert await pipe.fetchval("SELECT count(*) FROM ticket_actions.deal_links"
                                   " WHERE ticket_id = $1", ticket) == 1
        await act(pipe, "close", ticket)
        assert emulator.records["tickets"][ticket]["statusType"] == "Closed"
        await pipe.eventually("SELECT status_type FROM ticket_stats.tickets WHERE ticket_id = $1",
                    "Closed", ticket)
        await act(pipe, "delete", ticket)
        assert ticket in emulator.trash["tickets"] and ticket not in emulator.records["tickets"]
        await pipe.eventually("SELECT live FROM ticket_stats.tickets WHERE ticket_id = $1",
                    False, ticket)

        # -- an action on a ticket gone: failed with its reason, in the failure log -----
        other = emulator.person_creates("tickets", {
            "subject": "Other", "departmentId": support, "contactId": ana})
        await pipe.eventually("SELECT live FROM ticket_stats.tickets WHERE ticket_id = $1",
                    True, other)
        emulator.records["tickets"].pop(other)  # gone before the writer gets to it
        row = await act(pipe, "comment", other, content="too late")
        assert (row["outcome"], row["reason"]) == ("failed", "ticket not found")
        failure = await pipe.fetchrow("SELECT reason FROM sync.failures"
                                      " WHERE record_id = $1", str(row["action_id"]))
        assert failure is not None and failure["reason"] == "ticket not found"

        await pipe.drain()
        assert await pipe.fetchval("SELECT count(*) FROM sync.commands") == 0
        async with pipe.pool.acquire() as conn:
            report = await rebuild_from_events(conn, spec("ticket_actions"), EventLogSource(),
                                               dry_run=True)
        assert report.changes == 0


async def test_a_delivery_repeated_after_a_crash_makes_nothing_twice(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator) -> None:
    """The writer delivers a command again when it crashed before settling it: the
    ticket, the typed contact, the comment and the reply are made once, and the second
    delivery answers what the first made — on a ticket whose conversation is longer than
    a page of its lists (the comments list is oldest first unless asked otherwise)."""
    support = emulator.person_creates("departments", {"name": "Support"})
    ana = emulator.person_creates("contacts", {"lastName": "Silva", "email": "a@x.example"})
    ticket = emulator.person_creates("tickets", {"subject": "S", "departmentId": support,
                                                 "contactId": ana, "email": "a@x.example"})
    for n in range(120):  # a long conversation: more than one page of each list
        emulator.person_comments(ticket, f"agent note {n}")
        emulator.person_writes(ticket, f"customer message {n}")
    desk = ZohoDesk(emulator.options())
    actions = ZohoDeskActions(desk, pool)
    try:
        cases: list[tuple[str, str | None, dict[str, Any]]] = [
                ("create", None, {"subject": "New", "department_id": support,
                                  "new_contact": {"last_name": "Novo",
                                                  "email": "n@x.example"}}),
                ("comment", ticket, {"content": "note"}),
                ("reply", ticket, {"content": "answer"})]
        for kind, target, payload in cases:
            command = await queued(pool, kind, target, payload)
            first = await actions.carry_out(command)
            again = await actions.carry_out(command)
            assert again.values == first.values, kind
        assert [t["subject"] for t in emulator.records["tickets"].values()] == ["S", "New"]
        assert sorted(c["lastName"] for c in emulator.records["contacts"].values()) == [
            "Novo", "Silva"]
        assert [c["content"] for c in emulator.comments[ticket]][120:] == ["note"]
        assert [t["content"] for t in emulator.threads[ticket]][120:] == ["answer"]
    finally:
        await desk.close()


async def queued(pool: asyncpg.Pool, kind: str, ticket: str | None,
                 payload: dict[str, Any]) -> commands.Command:
    """An action event through the hosted projection: the command it queued."""
    action = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    event = ChangeEvent(event_id=action, source="crm", module="ticket_actions",
                        record_id=ticket or str(action), op="create", origin="user",
                        modified_at=now, created_at=now, captured_at=now,
                        values={"action_id": str(action), "kind": kind, "user_id": "adm",
                                "user_name": "Ada", "payload": payload})
    async with pool.acquire() as conn, conn.transaction():
        await TicketActionsProjection("hosted").apply(conn, [LoggedEvent(1, event)])
        (command,) = await commands.due_heads(conn, "desk", limit=10)
        await commands.done(conn, command)
    return dataclasses.replace(command, enqueued_at=now)


async def test_an_action_waiting_for_the_writer_is_pending_and_rebuilt_pending(
        pool: asyncpg.Pool) -> None:
    """Queued, its row says pending (no outcome yet); a rebuild of the same event while
    the command waits gives the same row; an action on a deal not in the CRM fails
    at once, without a command."""
    now = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
    events = []
    for n, (kind, payload) in enumerate([("comment", {"content": "hi"}),
                                         ("link_deal", {"deal_id": "999"})]):
        action = uuid.uuid4()
        events.append(LoggedEvent(n + 1, ChangeEvent(
            event_id=action, source="crm", module="ticket_actions", record_id="5",
            op="create", origin="user", modified_at=now, created_at=now, captured_at=now,
            values={"action_id": str(action), "kind": kind, "user_id": "adm",
                    "user_name": "Ada", "payload": payload})))
    async with pool.acquire() as conn, conn.transaction():
        report = await TicketActionsProjection("hosted").apply(conn, events)
        (problem,) = report.problems
        assert problem.reason == "deal not found"
        rows = [tuple(r) for r in await conn.fetch(
            "SELECT kind, outcome, reason, ticket_id FROM ticket_actions.actions ORDER BY kind")]
        assert rows == [("comment", "pending", None, "5"),
                        ("link_deal", "failed", "deal not found", "5")]
        (command,) = await commands.due_heads(conn, "desk", limit=10)
        assert (command.module, command.op, command.record_key, command.payload["seq"]) == (
            "ticket_actions", "update", "ticket:5", 1)
        before = await conn.fetch("SELECT * FROM ticket_actions.actions ORDER BY kind")
        await conn.execute("DELETE FROM ticket_actions.actions")
        await TicketActionsProjection("rebuild").apply(conn, events)
        after = await conn.fetch("SELECT * FROM ticket_actions.actions ORDER BY kind")
        assert [dict(r) for r in after] == [dict(r) for r in before]
