"""A hosted Zoho Desk's customer ratings (issue 17: TICKET-06's ratings, TICKET-09's
``new_rating``), against the emulator of the documented v1 API
(ops/emulators/zoho_desk.py): a rating the customer gives is read from the customer
happiness list (``GET /api/v1/customerHappiness``, a cursor of its own: a rating
leaves its ticket's ``modifiedTime`` as it was) and captured as its ticket's
``rating``, in the embedded desk's values, so the statistics count it and the
signals decide it as they do the embedded desk's."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from adapters.remote_capture import RemoteCapture
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_capture import ZohoDeskPoll
from adapters.zoho.desk_fields import RATINGS
from daemon.service.ticket_stats import statistics
from ops.emulators.zoho_desk import ZohoDeskEmulator, running_emulator
from tests.support.hosted import desk_pipeline

HAPPINESS_LIST = "/api/v1/customerHappiness"
RATING = "SELECT rating FROM ticket_stats.tickets WHERE ticket_id = $1"
SIGNALS = ("SELECT kind, ticket_id, origin, department_id, subject FROM sales_signals.signals"
           " WHERE kind = 'new_rating' ORDER BY seq")
TICKET_EVENTS = ("SELECT payload->>'op' AS op, payload->>'changed' AS changed, origin,"
                 " payload->>'values' AS \"values\" FROM syncd.event_log WHERE source ="
                 " 'desk' AND module = 'tickets' AND record_id = $1 ORDER BY seq")


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoDeskEmulator]:
    async with running_emulator() as emu:
        yield emu


async def test_a_rating_given_on_the_hosted_desk_is_counted_and_signalled_once(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    """The customer rates a ticket Good on the hosted desk: the poll brings it as the
    ticket's ``rating`` change (``good``, the ticket's other values kept), the CRM
    contact's statistics count it, and ``new_rating`` is decided once, from a contact,
    however many rounds read the ratings again. A later change of the ticket (whose
    record names no rating) keeps it; the customer's second rating (Okay) replaces it
    and is a second signal."""
    async with desk_pipeline(emulator, database_url, kafka_bootstrap, topic_prefix) as pipe:
        support = emulator.person_creates("departments", {"name": "Support"})
        contact = emulator.person_creates("contacts", {"lastName": "Ana",
                                                       "email": "ana@x.example"})
        ticket = emulator.person_creates("tickets", {
            "subject": "Printer on fire", "departmentId": support, "contactId": contact,
            "email": "ana@x.example"})
        await pipe.eventually("SELECT count(*) FROM sync.links WHERE module = 'contacts'"
                         " AND desk_id = $1", 1, contact)
        crm_id = await pipe.fetchval("SELECT crm_id FROM sync.links WHERE module ="
                                     " 'contacts' AND desk_id = $1", contact)
        await pipe.eventually("SELECT count(*) FROM ticket_stats.tickets"
                         " WHERE ticket_id = $1 AND rating IS NULL", 1, ticket)
        # The ratings' first round is over (its cursor set): what comes now is news.
        await pipe.eventually("SELECT count(*) FROM syncd.remote_cursors"
                         " WHERE store = 'desk' AND module = $1", 1, RATINGS)
        assert pipe.pool is not None
        before = await statistics(pipe.pool, "contacts", crm_id)
        assert before["ratings"] == {"good": 0, "okay": 0, "bad": 0, "unrated": 1}
        assert await pipe.fetch(SIGNALS) == []

        modified = emulator.records["tickets"][ticket]["modifiedTime"]
        emulator.customer_rates(ticket, "GOOD", feedback="Quick and kind")
        await pipe.eventually(RATING, "good", ticket)
        assert emulator.records["tickets"][ticket]["modifiedTime"] == modified
        *_, rated = await pipe.fetch(TICKET_EVENTS, ticket)
        values = json.loads(rated["values"])
        assert (rated["op"], json.loads(rated["changed"]), rated["origin"]) == (
            "update", ["rating"], "user")
        assert {k: values[k] for k in ("rating", "subject", "status_type", "contact_id")} == {
            "rating": "good", "subject": "Printer on fire", "status_type": "Open",
            "contact_id": int(contact)}
        stats = await statistics(pipe.pool, "contacts", crm_id)
        assert stats["ratings"] == {"good": 1, "okay": 0, "bad": 0, "unrated": 0}
        assert [(t["ticket_id"], t["rating"]) for t in stats["tickets"]] == [(ticket, "good")]
        await pipe.wait_for_count(
            "SELECT count(*) FROM sales_signals.signals WHERE kind = 'new_rating'", 1)
        signalled = [tuple(r) for r in await pipe.fetch(SIGNALS)]
        assert signalled == [("new_rating", ticket, "contact", support, "Printer on fire")]

        # More rounds read the rating again (the cursor's overlap): old news.
        events = len(await pipe.fetch(TICKET_EVENTS, ticket))
        await asyncio.sleep(1.0)  # about five more rounds
        await pipe.drain()
        assert len(await pipe.fetch(TICKET_EVENTS, ticket)) == events
        assert [tuple(r) for r in await pipe.fetch(SIGNALS)] == signalled

        # The ticket closed in the desk: its copy names no rating, which stays.
        emulator.person_edits("tickets", ticket, {"status": "Closed"})
        await pipe.eventually("SELECT status_type FROM ticket_stats.tickets"
                         " WHERE ticket_id = $1", "Closed", ticket)
        assert await pipe.fetchval(RATING, ticket) == "good"
        *_, closed = await pipe.fetch(TICKET_EVENTS, ticket)
        assert json.loads(closed["changed"]) == ["status", "status_type"]
        assert json.loads(closed["values"])["rating"] == "good"

        # The customer changes their mind: Okay replaces Good, a second signal.
        emulator.customer_rates(ticket, "OK")
        await pipe.eventually(RATING, "okay", ticket)
        stats = await statistics(pipe.pool, "contacts", crm_id)
        assert stats["ratings"] == {"good": 0, "okay": 1, "bad": 0, "unrated": 0}
        await pipe.wait_for_count(
            "SELECT count(*) FROM sales_signals.signals WHERE kind = 'new_rating'", 2)
        assert [tuple(r) for r in await pipe.fetch(SIGNALS)] == signalled * 2
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0


async def test_the_ratings_cost_one_list_call_a_round_whatever_the_tickets(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator) -> None:
    """Each round reads the ratings given since its cursor in one call of the customer
    happiness list, for every ticket, and reads no ticket for them. The first round's
    ratings (given before the daemon read any) are the first sync's (``import``); a
    rating of a ticket the capture never saw is not captured; a rating read again is
    old news; Bad is ``bad``."""
    support = emulator.person_creates("departments", {"name": "Support"})
    tickets = [emulator.person_creates("tickets", {"subject": f"T{n}",
                                                   "departmentId": support})
               for n in range(4)]
    desk = ZohoDesk(emulator.options())
    try:
        poll = ZohoDeskPoll(desk, RemoteCapture(pool, "desk"),
                            first_window=dt.timedelta(hours=1))
        assert await poll.poll("tickets") == 4
        unseen = emulator.person_creates("tickets", {"subject": "Later",
                                                     "departmentId": support})
        emulator.customer_rates(tickets[0], "GOOD")
        emulator.customer_rates(unseen, "BAD")

        def listed() -> int:
            return sum(1 for _, path, _ in emulator.calls if path == HAPPINESS_LIST)

        calls = len(emulator.calls)
        assert await poll.poll(RATINGS) == 1
        assert (listed(), len(emulator.calls) - calls) == (1, 1)
        emulator.customer_rates(tickets[1], "BAD")
        emulator.customer_rates(tickets[2], "OK")
        emulator.customer_rates(tickets[3], "GOOD")
        assert await poll.poll(RATINGS) == 3
        assert await poll.poll(RATINGS) == 0  # read again within the overlap
        assert (listed(), len(emulator.calls) - calls) == (3, 3)
        rows = await pool.fetch("SELECT record_id, origin, changed, \"values\"->>'rating'"
                                " AS rating FROM desk.outbox WHERE module = 'tickets'"
                                " AND op = 'update' ORDER BY seq")
        assert [(r["record_id"], r["origin"], r["changed"], r["rating"]) for r in rows] == [
            (tickets[0], "import", ["rating"], "good"),
            (tickets[1], "user", ["rating"], "bad"),
            (tickets[2], "user", ["rating"], "okay"),
            (tickets[3], "user", ["rating"], "good")]
    finally:
        await desk.close()
