"""The related list of a CRM lead (TICKET-01, TICKET-07, TICKET-08): the tickets whose
requester e-mail has the lead's e-mail key, on a hand-built set: every row and field,
each filter at two event times, paging, leads sharing a key, a lead without an e-mail,
a deleted lead, a requester changed after the ticket, a key that needs the Unicode fold,
a rebuild from the log that finds nothing to change and restores the leads' keys, and
the API (the module chosen or not, a CRM user's departments) and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from adapters.integration_store import IntegrationService
from daemon.cli import cli
from daemon.http.server import build_app
from daemon.service.ticket_list import Filter, related_tickets
from projections.batch import reset_offset
from projections.integration_app import in_memory
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.integration.test_ticket_stats import Log, at, deliver, table_rows
from tests.support.api import api_context

LIA, LIA_TWIN, ZOE, NO_EMAIL, GONE, ILK, CONVERTED = (
    "701", "703", "702", "704", "705", "706", "707")
UNLINKED = 41  # the tickets' desk contact: a lead's tickets need no link


def ticket(log: Log, rid: int, created: float, requester: str, *, department: int,
           priority: str | None, due: float | None = None) -> None:
    """A ticket, then (a minute later) its department, requester and priority."""
    log.ticket(rid, UNLINKED, created, due=due)
    log.change(rid, created + 1, department_id=department, requester_email=requester,
               priority=priority)


def example() -> Log:
    """Minutes from T0; the newest event is at minute 3000."""
    log = Log()
    log.crm_lead(701, 1, " Lia@Example.COM ")      # key lia@example.com
    log.crm_lead(703, 2, "lia@example.com")        # the same key: the same tickets
    log.crm_lead(702, 3, "zoe@example.com")
    log.crm_lead(704, 4, None)                     # no e-mail: no tickets
    log.crm_lead(705, 5, "lia@example.com")
    log.crm_lead(706, 6, "\u0130lk@example.com")   # İ folds to i (projections/keys.py)
    log.crm_lead(707, 7, "zoe@example.com", converted=True)  # still lists its tickets
    ticket(log, 1, 0, " LIA@example.com", department=7, priority="High", due=100)
    ticket(log, 2, 10, "lia@example.com", department=8, priority="Low", due=20)
    log.close(2, 50)                               # closed: never overdue
    log.change(2, 55, rating="good")
    ticket(log, 3, 20, "lia@example.com", department=7, priority=" urgent ", due=5000)
    log.change(3, 30, status="Escalated", status_type="Escalated")
    ticket(log, 4, 30, "lia@example.com", department=7, priority="High")
    log.change(4, 45, deleted=True)                # deleted: listed nowhere
    ticket(log, 5, 35, "lia@example.org", department=7, priority="High")  # another key
    ticket(log, 6, 40, "zoe@example.com", department=8, priority=None)
    ticket(log, 7, 50, "someone@example.com", department=8, priority=None, due=2000)
    log.change(7, 60, requester_email="Lia@example.com")   # now Lia's (overdue from 2000)
    ticket(log, 8, 60, "lia@example.com", department=7, priority="High")
    log.change(8, 70, requester_email="other@example.com")  # no longer Lia's
    ticket(log, 9, 70, "ilk@example.com", department=7, priority="Urgent")
    log.crm_lead(705, 500, "lia@example.com", deleted=True)
    log.crm_lead(702, 3000, " ZOE@example.com")    # the same key; the newest event
    return log


def row(rid: int, created: float, requester: str, department: str, priority: str | None, *,
        status: str = "Open", due: float | None = None, overdue: bool = False,
        rating: str | None = None) -> dict[str, Any]:
    return {"ticket_id": str(rid), "subject": f"ticket {rid}", "status": status,
            "status_type": status, "priority": priority, "department_id": department,
            "requester": requester, "created_at": at(created),
            "due_date": None if due is None else at(due), "overdue": overdue, "rating": rating}


# Lia's four live tickets at minute 3000, newest first, every field by hand.
LIA_ROWS = [
    row(7, 50, "Lia@example.com", "8", None, due=2000, overdue=True),
    row(3, 20, "lia@example.com", "7", " urgent ", status="Escalated", due=5000),
    row(2, 10, "lia@example.com", "8", "Low", status="Closed", due=20, rating="good"),
    row(1, 0, " LIA@example.com", "7", "High", due=100, overdue=True),
]
FILTERED: dict[Filter, list[str]] = {
    "overdue": ["7", "1"], "closed": ["2"], "escalated": ["3"], "high_priority": ["3", "1"]}


async def page(pool: asyncpg.Pool, lead: str, only: Filter | None = None, *,
               limit: int = 50, offset: int = 0) -> dict[str, Any]:
    return await related_tickets(pool, "leads", lead, only=only, limit=limit, offset=offset)


def ids(answer: dict[str, Any]) -> list[str]:
    return [t["ticket_id"] for t in answer["tickets"]]


async def load(pool: asyncpg.Pool, *, since: float | None = None,
               upto: float | None = None, start: int = 0) -> int:
    """Apply the example's events in (since, upto] in batches of five; the next offset."""
    events = [e for e in example().in_log_order()
              if (since is None or e.captured_at > at(since))
              and (upto is None or e.captured_at <= at(upto))]
    async with pool.acquire() as conn:
        if start == 0:
            await reset_offset(conn, "g", ("t", 0), 0)
        return await deliver(conn, events, start=start, size=5)


async def test_every_row_every_filter_paging_and_a_rebuild(pool: asyncpg.Pool) -> None:
    """At minute 500 (the newest event up to 1000) then at 3000: Lia's rows and each
    filter, the other leads, paging; a rebuild from the log after the live path changes
    nothing and restores the leads' keys."""
    offset = await load(pool, upto=1000)
    early = await page(pool, LIA, "overdue")
    assert early["as_of"] == at(500) and ids(early) == ["1"]  # T7 is due at 2000
    assert ids(await page(pool, GONE)) == []                   # deleted at 500
    await load(pool, since=1000, start=offset)

    lia = await page(pool, LIA)
    assert lia == {"module": "leads", "id": LIA, "as_of": at(3000), "filter": None,
                   "departments": None, "total": 4, "limit": 50, "offset": 0,
                   "tickets": LIA_ROWS}
    assert (await page(pool, LIA_TWIN))["tickets"] == LIA_ROWS
    for zoe in (ZOE, CONVERTED):
        assert (await page(pool, zoe))["tickets"] == [
            row(6, 40, "zoe@example.com", "8", None)]
    assert (await page(pool, ILK))["tickets"] == [
        row(9, 70, "ilk@example.com", "7", "Urgent")]
    for nobody in (NO_EMAIL, GONE, "799"):
        answer = await page(pool, nobody)
        assert answer["tickets"] == [] and answer["total"] == 0, nobody

    for only, expected in FILTERED.items():
        answer = await page(pool, LIA, only)
        assert ids(answer) == expected and answer["total"] == len(expected), only
        assert answer["tickets"] == [r for r in LIA_ROWS if r["ticket_id"] in expected]
    pages = [await page(pool, LIA, limit=3, offset=start) for start in (0, 3, 6)]
    assert [ids(p) for p in pages] == [["7", "3", "2"], ["1"], []]
    assert {p["total"] for p in pages} == {4}
    second = await page(pool, LIA, "overdue", limit=1, offset=1)
    assert ids(second) == ["1"] and second["total"] == 2

    async with pool.acquire() as conn:
        rows = await table_rows(conn)
        assert rows["ticket_stats.crm_leads"] == [
            (LIA, "lia@example.com"), (ZOE, "zoe@example.com"), (LIA_TWIN, "lia@example.com"),
            (ILK, "ilk@example.com"), (CONVERTED, "zoe@example.com")]
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=True)
        assert report.changes == 0
        per_event = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                              dry_run=True, per_event=True)
        assert per_event.changes == 0
        await conn.execute("DELETE FROM ticket_stats.crm_leads WHERE lead_id <> $1", ZOE)
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 4
        assert await table_rows(conn) == rows
    assert (await page(pool, LIA))["tickets"] == LIA_ROWS


async def test_the_api_the_module_setting_visibility_and_the_cli(
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Leads list tickets once chosen (a 404 not_configured before); a CRM user sees
    only their departments' tickets when so configured (TICKET-08); `syncd tickets list
    --lead` shows the rows."""
    await load(pool)
    service = IntegrationService(in_memory())
    await service.set_up("portal", "org", by="boss")
    for uid, departments in [("u7", ["7"]), ("u8", ["8"])]:
        await service.change_people("record_crm_user", user_id=uid, name=uid,
                                    email=f"{uid}@x.io", mutual=True, by="boss")
        await service.change_people("set_user_departments", user_id=uid,
                                    departments=departments, by="boss")
    viewer, admin = "viewer-token-for-leads", "admin-token-for-leads"
    ctx = api_context(pool, integration=service,
                      tokens={viewer: ("reader", "viewer"), admin: ("boss", "admin")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.port}/api/v1"

        async def get(path: str, user: str | None = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {viewer}"}
            if user is not None:
                headers["X-Syncd-Crm-User"] = user
            async with session.get(base + path, headers=headers) as response:
                return response.status, await response.json()

        status, answer = await get(f"/crm/leads/{LIA}/tickets")
        assert status == 404 and answer["error"]["code"] == "not_configured"
        async with session.put(f"{base}/integration/related-lists",
                               json={"modules": ["contacts", "leads"]},
                               headers={"Authorization": f"Bearer {admin}"}) as response:
            assert response.status == 200
            assert (await response.json())["related_list_modules"] == ["contacts", "leads"]

        status, answer = await get(f"/crm/leads/{LIA}/tickets?filter=overdue&limit=1")
        assert status == 200 and answer["total"] == 2
        assert answer["tickets"] == [{**LIA_ROWS[0], "created_at": "2026-11-02T09:50:00Z",
                                      "due_date": "2026-11-03T18:20:00Z"}]
        status, answer = await get(f"/crm/leads/{LIA}/tickets", "u7")
        assert ids(answer) == ["7", "3", "2", "1"]  # visibility 'all': every ticket
        await service.change_people("choose_ticket_visibility", visibility="departments",
                                    by="boss")
        status, answer = await get(f"/crm/leads/{LIA}/tickets", "u7")
        assert status == 200 and ids(answer) == ["3", "1"] and answer["total"] == 2
        assert answer["departments"] == ["7"]
        status, answer = await get(f"/crm/leads/{LIA}/tickets?filter=overdue", "u8@x.io")
        assert ids(answer) == ["7"] and answer["total"] == 1
        assert ids((await get(f"/crm/leads/{LIA}/tickets"))[1]) == ["7", "3", "2", "1"]

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": viewer,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)

        result = await syncd("tickets", "list", "--lead", LIA, "--filter", "high_priority")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0] == (f"CRM lead {LIA}: 2 ticket(s) high_priority, 1-2 shown"
                            " (overdue at 2026-11-04T11:00:00Z)")
        assert lines[4].split() == ["3", "ticket", "3", "Escalated", "Escalated", "urgent",
                                    "7", "lia@example.com", "2026-11-02T09:20:00Z",
                                    "2026-11-05T20:20:00Z"]
        assert lines[5].split() == ["1", "ticket", "1", "Open", "Open", "High", "7",
                                    "LIA@example.com", "2026-11-02T09:00:00Z",
                                    "2026-11-02T10:40:00Z", "yes"]
        assert len(lines) == 6
        result = await syncd("tickets", "list", "--lead", ZOE, "--json")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        assert answer["module"] == "leads" and ids(answer) == ["6"]
        assert answer["tickets"][0]["requester"] == "zoe@example.com"
        result = await syncd("tickets", "list", "--lead", LIA, "--deal", "1")
        assert result.exit_code == 2 and "--deal ID or --lead ID" in result.output
