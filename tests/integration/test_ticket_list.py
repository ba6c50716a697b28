"""The ticket related list of a CRM contact or account (TICKET-01, TICKET-07) on a
hand-built set of eleven tickets: every row, every filter at two event times, paging,
a replay that rebuilds the projection's new columns, the module setting (a module
without an e-mail field refused, a module not configured answered 404 with the
reason), and the API's roles and the CLI."""

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
from daemon.service.ticket_list import FILTERS, Filter, related_tickets
from daemon.service.ticket_stats import Module
from projections.batch import reset_offset
from projections.integration_app import in_memory
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.integration.test_ticket_stats import Log, at, deliver, table_rows
from tests.support.api import api_context

ANA, BO, STRANGER = 31, 32, 35  # desk contacts; Ana and Bo are linked, the stranger not
CRM = {ANA: "601", BO: "602"}
ACCOUNT = "951"  # Ana's and Bo's
WHO = {ANA: ("7", "ana@example.com"), BO: ("8", "bo@example.com"),
       STRANGER: ("8", "who@example.com")}


def ticket(log: Log, rid: int, contact: int, created: float, *, priority: str | None,
           due: float | None = None) -> None:
    """A ticket, then (a minute later) its department, requester and priority."""
    log.ticket(rid, contact, created, due=due)
    department, email = WHO[contact]
    log.change(rid, created + 1, department_id=int(department), requester_email=email,
               priority=priority)


def example() -> Log:
    """Minutes from T0; the newest event is at minute 3000."""
    log = Log()
    log.crm_contact(601, 1, 951)
    log.crm_contact(602, 2, 951)
    ticket(log, 1, ANA, 0, priority="High", due=100)       # open: overdue from 100
    ticket(log, 2, ANA, 10, priority="Low", due=20)
    log.close(2, 50)                                       # closed: never overdue
    ticket(log, 3, ANA, 20, priority=" urgent ", due=5000)
    log.change(3, 30, status="Escalated", status_type="Escalated")
    ticket(log, 4, ANA, 30, priority="High", due=40)
    log.change(4, 45, deleted=True)                        # deleted: listed nowhere
    ticket(log, 5, ANA, 40, priority="Medium")             # a custom status typed Escalated
    log.change(5, 60, status="Waiting on manager", status_type="Escalated")
    ticket(log, 6, ANA, 40, priority="HIGH", due=3000)     # due at the clock: not overdue
    ticket(log, 7, BO, 50, priority=None, due=2000)        # overdue from 2000
    ticket(log, 8, BO, 60, priority="Medium", due=70)
    log.close(8, 65)
    log.change(8, 66, rating="good")
    log.change(8, 200, status="Open", status_type="Open")  # reopened: overdue again
    ticket(log, 9, BO, 70, priority="High")
    log.close(9, 80)
    log.change(9, 90, rating="bad")
    ticket(log, 10, STRANGER, 80, priority="High", due=90)  # never linked: nowhere
    ticket(log, 11, STRANGER, 90, priority=None)
    log.change(11, 100, contact_id=BO)                     # passed to Bo
    log.crm_contact(603, 3000, None)                       # the newest event
    return log


def row(rid: int, created: float, status: str, type_: str, priority: str | None,
        contact: int, *, due: float | None = None, overdue: bool = False,
        rating: str | None = None) -> dict[str, Any]:
    department, email = WHO[contact]
    return {"ticket_id": str(rid), "subject": f"ticket {rid}", "status": status,
            "status_type": type_, "priority": priority, "department_id": department,
            "requester": email, "created_at": at(created),
            "due_date": None if due is None else at(due), "overdue": overdue, "rating": rating}


# The account's nine live tickets at minute 3000, newest first (a tie on the creation
# time, 5 and 6, by id).
ROWS = {r["ticket_id"]: r for r in [
    row(11, 90, "Open", "Open", None, STRANGER),
    row(9, 70, "Closed", "Closed", "High", BO, rating="bad"),
    row(8, 60, "Open", "Open", "Medium", BO, due=70, overdue=True, rating="good"),
    row(7, 50, "Open", "Open", None, BO, due=2000, overdue=True),
    row(5, 40, "Waiting on manager", "Escalated", "Medium", ANA),
    row(6, 40, "Open", "Open", "HIGH", ANA, due=3000),
    row(3, 20, "Escalated", "Escalated", " urgent ", ANA, due=5000),
    row(2, 10, "Closed", "Closed", "Low", ANA, due=20),
    row(1, 0, "Open", "Open", "High", ANA, due=100, overdue=True),
]}
NEWEST_FIRST = list(ROWS)
ANA_IDS = ["5", "6", "3", "2", "1"]
BO_IDS = ["11", "9", "8", "7"]
FILTERED: dict[Filter, list[str]] = {
    "overdue": ["8", "7", "1"], "closed": ["9", "2"], "escalated": ["5", "3"],
    "high_priority": ["9", "6", "3", "1"]}


async def page(pool: asyncpg.Pool, module: Module, record: str, only: Filter | None = None,
               *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    return await related_tickets(pool, module, record, only=only, limit=limit, offset=offset)


def ids(answer: dict[str, Any]) -> list[str]:
    return [t["ticket_id"] for t in answer["tickets"]]


async def load(pool: asyncpg.Pool, *, upto: float | None = None) -> int:
    """Link Ana and Bo, apply the example (up to a minute); the next log offset."""
    events = example().in_log_order()
    if upto is not None:
        events = [e for e in events if e.captured_at <= at(upto)]
    async with pool.acquire() as conn:
        for desk_contact, crm_id in CRM.items():
            await conn.execute(
                "INSERT INTO sync.links (module, desk_id, crm_id, linked_at, updated_at)"
                " VALUES ('contacts', $1, $2, now(), now()) ON CONFLICT DO NOTHING",
                str(desk_contact), crm_id)
        await reset_offset(conn, "g", ("t", 0), 0)
        return await deliver(conn, events, start=0, size=6)


async def test_every_row_every_filter_and_paging_of_the_hand_built_set(
        pool: asyncpg.Pool) -> None:
    """At minute 200 (the newest event up to 1000) then at minute 3000: the rows, each
    filter, the pages; a rebuild from the log finds nothing to change and restores the
    new columns."""
    offset = await load(pool, upto=1000)
    early = await page(pool, "accounts", ACCOUNT, "overdue")
    assert early["as_of"] == at(200) and ids(early) == ["8", "1"]  # T7 due at 2000
    async with pool.acquire() as conn:
        events = example().in_log_order()
        await deliver(conn, events[len([e for e in events if e.captured_at <= at(1000)]):],
                      start=offset, size=6)

    account = await page(pool, "accounts", ACCOUNT)
    assert account["as_of"] == at(3000) and account["total"] == 9
    assert account["tickets"] == list(ROWS.values())
    assert ids(account) == NEWEST_FIRST
    ana, bo = await page(pool, "contacts", "601"), await page(pool, "contacts", "602")
    assert ids(ana) == ANA_IDS and ana["tickets"] == [ROWS[i] for i in ANA_IDS]
    assert ids(bo) == BO_IDS and bo["tickets"] == [ROWS[i] for i in BO_IDS]
    assert (await page(pool, "contacts", "603"))["tickets"] == []  # nobody links it

    assert set(FILTERED) == set(FILTERS)  # every filter is checked
    for only, expected in FILTERED.items():
        answer = await page(pool, "accounts", ACCOUNT, only)
        assert ids(answer) == expected and answer["total"] == len(expected), only
        assert answer["filter"] == only
        assert ids(await page(pool, "contacts", "601", only)) == [
            i for i in expected if i in ANA_IDS], only

    pages = [await page(pool, "accounts", ACCOUNT, limit=4, offset=start)
             for start in (0, 4, 8, 12)]
    assert [ids(p) for p in pages] == [NEWEST_FIRST[:4], NEWEST_FIRST[4:8], ["1"], []]
    assert {p["total"] for p in pages} == {9}
    second = await page(pool, "accounts", ACCOUNT, "high_priority", limit=2, offset=2)
    assert ids(second) == ["3", "1"] and second["total"] == 4

    async with pool.acquire() as conn:
        rows = await table_rows(conn)
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=True)
        assert report.changes == 0
        await conn.execute("UPDATE ticket_stats.tickets SET priority = NULL, status = NULL,"
                           " department_id = NULL, requester = NULL WHERE ticket_id <> '4'")
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 10  # every ticket but the deleted one, the stranger's too
        assert await table_rows(conn) == rows


async def put(session: aiohttp.ClientSession, url: str, token: str, modules: Any
              ) -> tuple[int, Any]:
    async with session.put(url, json={"modules": modules},
                           headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def test_the_api_the_module_setting_and_the_cli(pool: asyncpg.Pool,
                                                      tmp_path: Path) -> None:
    """A viewer reads the list, nobody without a token; contacts, accounts and deals are
    listed by default, a module not configured is a 404 with the reason, a module
    without an e-mail field cannot be chosen; `syncd tickets list` shows the rows."""
    await load(pool)
    service = IntegrationService(in_memory())
    viewer, admin = "viewer-token-for-the-list", "admin-token-for-the-list"
    ctx = api_context(pool, integration=service,
                      tokens={viewer: ("reader", "viewer"), admin: ("boss", "admin")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.port}/api/v1"
        reader = {"Authorization": f"Bearer {viewer}"}

        async def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
            async with session.get(base + path, headers=headers) as response:
                return response.status, await response.json()

        assert (await get("/crm/contacts/601/tickets"))[0] == 401
        status, answer = await get("/crm/contacts/601/tickets?filter=escalated", reader)
        assert status == 200 and ids(answer) == ["5", "3"]
        assert answer["tickets"][0]["created_at"] == "2026-11-02T09:40:00Z"
        status, answer = await get("/crm/accounts/951/tickets?limit=2&offset=1", reader)
        assert status == 200 and ids(answer) == ["9", "8"] and answer["total"] == 9
        assert (await get("/crm/accounts/951/tickets?filter=late", reader))[0] == 400
        status, answer = await get("/crm/deals/1/tickets", reader)
        assert status == 200 and answer["total"] == 0  # no ticket linked to it
        status, answer = await get("/crm/leads/1/tickets", reader)
        assert status == 404 and answer["error"]["code"] == "not_configured"
        status, answer = await get("/crm/products/1/tickets", reader)
        assert status == 404 and answer["error"]["code"] == "not_configured"

        await service.set_up("portal", "org", by="boss")
        settings = f"{base}/integration/related-lists"
        assert (await put(session, settings, viewer, ["contacts"]))[0] == 403
        status, answer = await put(session, settings, admin, ["contacts", "products"])
        assert status == 409 and answer["error"]["code"] == "no_email_field"
        assert "products has no e-mail field" in answer["error"]["message"]
        status, answer = await put(session, settings, admin, ["contacts", "deals"])
        assert status == 200 and answer["related_list_modules"] == ["contacts", "deals"]
        status, answer = await get("/crm/accounts/951/tickets", reader)
        assert status == 404 and answer["error"]["code"] == "not_configured"
        assert "['contacts', 'deals']" in answer["error"]["message"]
        assert (await get("/crm/contacts/601/tickets", reader))[0] == 200

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": admin,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)

        result = await syncd("integration", "related-lists", "contacts", "accounts", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["related_list_modules"] == ["contacts", "accounts"]
        result = await syncd("integration", "related-lists", "tasks")
        assert result.exit_code == 1 and "no_email_field: tasks has no e-mail" in result.output
        result = await syncd("tickets", "list", "--account", ACCOUNT, "--filter", "overdue",
                             "--json")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        assert ids(answer) == FILTERED["overdue"] and answer["as_of"] == "2026-11-04T11:00:00Z"
        result = await syncd("tickets", "list", "--contact", "602", "--limit", "2")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0] == ("CRM contact 602: 4 ticket(s), 1-2 shown"
                            " (overdue at 2026-11-04T11:00:00Z)")
        assert lines[4].split()[:5] == ["11", "ticket", "11", "Open", "Open"]
        assert lines[5].split() == ["9", "ticket", "9", "Closed", "Closed", "High", "8",
                                    "bo@example.com", "2026-11-02T10:10:00Z", "bad"]
        assert len(lines) == 6
        result = await syncd("tickets", "list", "--contact", "1", "--account", "2")
        assert result.exit_code == 2 and "one of --contact ID or --account ID" in result.output


async def test_a_crm_user_sees_only_their_departments_tickets_when_so_configured(
        pool: asyncpg.Pool) -> None:
    """TICKET-08: with the visibility 'departments', a request naming a CRM user lists
    only the tickets of the user's departments (the total too); with 'all', every
    ticket; a request naming an unknown user is refused; one naming nobody (an
    operator's) lists every ticket."""
    await load(pool)
    service = IntegrationService(in_memory())
    await service.set_up("portal", "org", by="boss")
    for uid, departments in [("u7", ["7"]), ("u8", ["8"]), ("none", [])]:
        await service.change_people("record_crm_user", user_id=uid, name=uid,
                                    email=f"{uid}@x.io", mutual=True, by="boss")
        await service.change_people("set_user_departments", user_id=uid,
                                    departments=departments, by="boss")
    viewer = "viewer-token-for-visibility"
    ctx = api_context(pool, integration=service, tokens={viewer: ("crm-app", "viewer")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/api/v1/crm/accounts/951/tickets"

        async def listed(user: str | None, query: str = "") -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {viewer}"}
            if user is not None:
                headers["X-Syncd-Crm-User"] = user
            async with session.get(url + query, headers=headers) as response:
                return response.status, await response.json()

        everything = NEWEST_FIRST
        status, answer = await listed("u7")
        assert status == 200 and ids(answer) == everything and answer["departments"] is None
        await service.change_people("choose_ticket_visibility", visibility="departments",
                                    by="boss")
        status, answer = await listed("u7")
        assert ids(answer) == ANA_IDS and answer["total"] == 5
        assert answer["departments"] == ["7"]
        status, answer = await listed("u8@x.io", "?filter=closed")
        assert ids(answer) == ["9"] and answer["total"] == 1
        status, answer = await listed("none")
        assert ids(answer) == [] and answer["total"] == 0
        assert ids((await listed(None))[1]) == everything
        status, answer = await listed("u9")
        assert status == 403 and answer["error"]["code"] == "unknown_crm_user"
