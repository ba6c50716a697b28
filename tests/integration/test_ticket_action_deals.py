"""A ticket linked to a deal whose own event is in the same batch (TICKET-05).

The deal and the action travel on different partitions (keyed by deal and by ticket),
so a user who creates a deal and links a ticket to it at once often has both in one
batch, the action logged before or after the deal. The batch's projections run here as
the projector runs them (``apply_projections`` over the registry's list, the ticket
actions in the desk's mode): the action failed as "deal not found" (with a Retry) while
the ticket actions ran before the board, which keeps the deals, and read only it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import asyncpg
import pytest

from projections import registry
from projections.batch import LoggedEvent, ProjectionReport, apply_projections
from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.stores import commands
from projections.ticket_actions import Mode, TicketActionsProjection

NOW = dt.datetime(2026, 12, 7, 10, tzinfo=dt.UTC)


def _deal(deal_id: str, stage: str, *,
          op: Literal["create", "delete"] = "create") -> ChangeEvent:
    return ChangeEvent(event_id=uuid.uuid4(), source="crm", module="deals", record_id=deal_id,
                       op=op, origin="user", modified_at=NOW, created_at=NOW, captured_at=NOW,
                       values={"id": deal_id, "deal_name": "Renewal", "stage": stage})


def _link(ticket: str, deal_id: str) -> ChangeEvent:
    action = uuid.uuid4()
    return ChangeEvent(event_id=action, source="crm", module="ticket_actions",
                       record_id=ticket, op="create", origin="user", modified_at=NOW,
                       created_at=NOW, captured_at=NOW,
                       values={"action_id": str(action), "kind": "link_deal", "user_id": "adm",
                               "user_name": "Ada", "payload": {"deal_id": deal_id}})


async def _ticket(conn: Any) -> str:
    await conn.execute("INSERT INTO desk.departments (id, name) VALUES (3, 'Support')"
                       " ON CONFLICT DO NOTHING")
    return str(await conn.fetchval(
        "INSERT INTO desk.tickets (department_id, subject, priority, requester_email)"
        " VALUES (3, 'Cannot log in', 'Low', 'ana@example.com') RETURNING id"))


async def _batch(conn: Any, events: list[ChangeEvent], mode: Mode) -> list[str | None]:
    """The events as one batch through every projection (the reasons it reports)."""
    projections = registry.live_projections(lambda: SyncConfig())
    for projection in projections:
        if isinstance(projection, TicketActionsProjection):
            projection.mode = mode  # as daemon.bootstrap makes it
    logged = [LoggedEvent(seq, event) for seq, event in enumerate(events, 1)]
    reports = await apply_projections(conn, logged, projections)
    return [problem.reason for report in reports if isinstance(report, ProjectionReport)
            for problem in report.problems]


async def _outcomes(conn: Any, links: list[ChangeEvent]) -> list[Any]:
    rows = dict(await conn.fetch(
        "SELECT action_id::text, coalesce(reason, outcome) FROM ticket_actions.actions"))
    return [rows.get(str(event.event_id)) for event in links]


@pytest.mark.parametrize("deal_first", [True, False], ids=["deal-logged-first",
                                                            "action-logged-first"])
async def test_a_deal_created_in_the_same_batch_is_linked(pool: asyncpg.Pool,
                                                          deal_first: bool) -> None:
    """Embedded desk: the link applies (an open deal raises the priority), whether the
    deal's event was logged before or after the action; a deal the batch deleted before
    the action is not found."""
    with pytest.raises(_Rollback):
        async with pool.acquire() as conn, conn.transaction():
            ticket = await _ticket(conn)
            linked, gone = _link(ticket, "701"), _link(ticket, "702")
            pair = [_deal("701", "Open"), linked]
            events = [*(pair if deal_first else pair[::-1]),
                      _deal("702", "open"), _deal("702", "open", op="delete"), gone]
            problems = await _batch(conn, events, "embedded")
            assert await _outcomes(conn, [linked, gone]) == ["applied", "deal not found"]
            assert problems == ["deal not found"]
            assert await conn.fetchval("SELECT priority FROM desk.tickets WHERE id = $1",
                                       int(ticket)) == "High"
            assert [tuple(r) for r in await conn.fetch(
                "SELECT ticket_id, deal_id FROM ticket_actions.deal_links")] == [
                    (ticket, "701")]
            raise _Rollback


async def test_a_hosted_desk_queues_the_link_to_a_deal_of_its_batch(
        pool: asyncpg.Pool) -> None:
    """Hosted desk: queued for the writer (priority to raise: the deal is open), not failed."""
    with pytest.raises(_Rollback):
        async with pool.acquire() as conn, conn.transaction():
            assert await _batch(conn, [_link("5", "703"), _deal("703", "open")], "hosted") == []
            (command,) = await commands.due_heads(conn, "desk", limit=10)
            assert command.payload["raise_priority"] is True
            raise _Rollback


class _Rollback(Exception):
    """Ends a test's transaction, leaving the database as the test found it."""
