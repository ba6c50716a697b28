"""The handshake board (HS-01, HS-02) with Zoho CRM as the CRM: its leads, contacts
and deals, captured by the CRM's poll, sort the embedded desk's tickets as the
embedded CRM's do (tests/integration/test_handshake.py walks the same columns)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from adapters.command_writer import Backoff
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_store import zoho_crm_store
from ops.emulators.zoho_crm import ZohoCrmEmulator, running_emulator
from tests.support.pipeline import Pipeline


@pytest.fixture
async def hosted(database_url: str, kafka_bootstrap: str, topic_prefix: str
                 ) -> AsyncIterator[tuple[Pipeline, ZohoCrmEmulator]]:
    async with running_emulator() as crm:
        store, client = zoho_crm_store(crm.options(), backoff=Backoff(base=0.05, cap=0.2),
                                       poll_interval=0.1)
        pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
        await pipe.start()
        try:
            yield pipe, crm
        finally:
            await pipe.close()
            await client.close()


async def column_becomes(pipe: Pipeline, ticket: int, wanted: str | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (now := await pipe.fetchval("SELECT board_column FROM handshake.board"
                                      " WHERE ticket_id = $1", str(ticket))) != wanted:
        assert loop.time() < deadline, f"the ticket stayed in {now}, not {wanted}"
        await asyncio.sleep(0.05)


async def test_a_ticket_walks_the_columns_as_the_hosted_crm_changes(
        hosted: tuple[Pipeline, ZohoCrmEmulator]) -> None:
    """A lead, its conversion, a contact, an open deal, a stage of the org's own whose
    forecast type is Closed Won, and the deal deleted: each moves the ticket."""
    pipe, crm = hosted
    department = await pipe.fetchval("INSERT INTO desk.departments (name) VALUES ('Support')"
                                      " RETURNING id")
    ticket = await pipe.fetchval(
        "INSERT INTO desk.tickets (department_id, subject, status, requester_email, channel)"
        " VALUES ($1, 'Help', 'Open', '  Ana.Silva@Example.COM ', 'Email') RETURNING id",
        department)
    await column_becomes(pipe, ticket, "new")
    lead = crm.person_creates("leads", {"Last_Name": "Silva", "Email": "ana.silva@example.com"})
    await column_becomes(pipe, ticket, "contacts_leads")
    crm.edit("leads", lead, {"$converted": True})
    await column_becomes(pipe, ticket, "new")  # a converted lead is no longer a lead
    contact = crm.person_creates("contacts", {"Last_Name": "Silva",
                                              "Email": "ANA.SILVA@example.com"})
    await column_becomes(pipe, ticket, "contacts_leads")
    deal = crm.person_creates("deals", {"Deal_Name": "Renewal", "Stage": "Negotiation/Review",
                                        "Contact_Name": {"id": contact, "name": "Silva"}})
    await column_becomes(pipe, ticket, "opportunities")
    crm.stages["Signed"] = "Closed Won"  # the org's own stage, won by its forecast type
    crm.edit("deals", deal, {"Stage": "Signed"})
    await column_becomes(pipe, ticket, "customers")
    await asyncio.sleep(0.3)  # the deletes' cursor has started (the poll's first round)
    crm.person_deletes("deals", deal)
    await column_becomes(pipe, ticket, "contacts_leads")
    stages = await pipe.fetch("SELECT payload->'values'->>'stage' AS stage"
                              " FROM syncd.event_log WHERE module = 'deals' ORDER BY seq")
    assert [r["stage"] for r in stages][:2] == ["open", "won"]
    assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0


async def test_a_deal_stage_is_open_won_or_lost_by_its_forecast_type() -> None:
    """The Stage picklist's forecast type decides (a stage of the org's own
    included); Zoho's standard names when the picklist does not name the stage."""
    async with running_emulator() as crm:
        crm.stages["Paid"] = "Closed Won"
        crm.stages["Gone cold"] = "Closed Lost"
        del crm.stages["Closed-Lost to Competition"]  # not in this org's picklist
        made = {stage: crm.person_creates("deals", {"Deal_Name": stage, "Stage": stage})
                for stage in ("Qualification", "Paid", "Gone cold",
                              "Closed-Lost to Competition", "Closed Won")}
        client = ZohoCrm(crm.options())
        try:
            polled = dict(await client.modified_since(
                "deals", dt.datetime.now(dt.UTC) - dt.timedelta(days=1)))
        finally:
            await client.close()
    assert {stage: polled[i]["stage"] for stage, i in made.items()} == {
        "Qualification": "open", "Paid": "won", "Gone cold": "lost",
        "Closed-Lost to Competition": "lost", "Closed Won": "won"}
