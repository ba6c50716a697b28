"""CRM users' ticket actions (TICKET-02, TICKET-03, TICKET-05, TICKET-10) end to end on
the embedded default: each action asked through the API, carried by the CRM's outbox
and Kafka, applied to the desk store by the projector once, checked field by field; the
status automation on new replies; a ticket deleted before its action is applied; the
roles refused with nothing changed; a rebuild giving the same tables without touching
the desk."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from adapters.integration_store import IntegrationService
from daemon.cli import cli
from daemon.http.server import build_app
from daemon.service import ServiceError
from daemon.service.ticket_actions import submit
from projections.integration_app import in_memory
from projections.people import CrmUser
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.support.api import api_context
from tests.support.pipeline import Pipeline

TOKEN = "crm-app-token-for-ticket-actions"
SUPPORT, BILLING = 3, 4  # desk departments


class Api:
    """The CRM-side application: its token, and the CRM user it acts for."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, user: str | None, body: Any = None
                   ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if user is not None:
            headers["X-Syncd-Crm-User"] = user
        async with self.session.request(method, self.base + path, json=body,
                                        headers=headers) as response:
            return response.status, await response.json()

    async def act(self, method: str, path: str, user: str, body: Any = None) -> str:
        status, answer = await self.call(method, path, user, body)
        assert status == 202, answer
        assert answer["status"] == "pending"
        return str(answer["action_id"])


async def _people() -> IntegrationService:
    service = IntegrationService(in_memory())
    await service.set_up("portal", "org", by="boss")
    for uid, role, active in [("adm", "admin", True), ("agt", "agent", True),
                              ("lite", "light_agent", True), ("nodesk", "admin", False),
                              ("far", "admin", True)]:
        await service.change_people("record_crm_user", user_id=uid, name=f"User {uid}",
                                    email=f"{uid}@crm.example", mutual=False, by="boss")
        await service.change_people("invite_user", user_id=uid, role=role, by="boss")
        if active:
            await service.change_people("set_desk_account", user_id=uid, active=True,
                                        by="boss")
        await service.change_people("set_user_departments", user_id=uid,
                                    departments=[str(BILLING if uid == "far" else SUPPORT)],
                                    by="boss")
    return service


@pytest.fixture
async def api(pipeline: Pipeline) -> AsyncIterator[tuple[Api, IntegrationService]]:
    assert pipeline.pool is not None
    service = await _people()
    ctx = api_context(pipeline.pool, integration=service, tokens={TOKEN: ("crm-app", "operator")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{server.port}/api/v1"), service


async def _as_person(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    """A person's edit of a store (captured like any)."""
    return await pool.fetchval(sql, *args)


async def _seed(pipe: Pipeline) -> dict[str, int]:
    """Two departments, Ana (a desk contact the sync links to a CRM contact) with an open
    ticket, and an open and a won deal."""
    pool = pipe.pool
    assert pool is not None
    for dept, name in [(SUPPORT, "Support"), (BILLING, "Billing")]:
        await _as_person(pool, "INSERT INTO desk.departments (id, name) VALUES ($1, $2)",
                         dept, name)
    ana = await _as_person(pool, "INSERT INTO desk.contacts (first_name, last_name, email)"
                           " VALUES ('Ana', 'Silva', 'ana@example.com') RETURNING id")
    ticket = await _as_person(
        pool, "INSERT INTO desk.tickets (department_id, subject, priority, channel,"
        " requester_email, contact_id) VALUES ($1, 'Cannot log in', 'Low', 'Email',"
        " 'ana@example.com', $2) RETURNING id", SUPPORT, ana)
    far_ticket = await _as_person(
        pool, "INSERT INTO desk.tickets (department_id, subject, requester_email,"
        " contact_id) VALUES ($1, 'Invoice', 'ana@example.com', $2) RETURNING id",
        BILLING, ana)
    open_deal = await _as_person(pool, "INSERT INTO crm.deals (deal_name, stage)"
                                 " VALUES ('Renewal', 'open') RETURNING id")
    won_deal = await _as_person(pool, "INSERT INTO crm.deals (deal_name, stage)"
                                " VALUES ('Pilot', 'won') RETURNING id")
    await pipe.drain()
    crm_ana = await pool.fetchval(
        "SELECT crm_id FROM sync.links WHERE module = 'contacts' AND desk_id = $1",
        str(ana))
    assert crm_ana is not None
    return {"ana": ana, "crm_ana": int(crm_ana), "ticket": ticket, "far_ticket": far_ticket,
            "open_deal": open_deal, "won_deal": won_deal}


async def _outcome(api: Api, action: str) -> dict[str, Any]:
    status, answer = await api.call("get", f"/ticket-actions/{action}", None)
    assert status == 200, answer
    return dict(answer)


async def _ticket(pool: asyncpg.Pool, ticket_id: int | str) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT department_id, subject, status, status_type, priority, channel, owner,"
        " requester_email, contact_id, due_date, custom, deleted FROM desk.tickets"
        " WHERE id = $1", int(ticket_id))
    assert row is not None
    out = dict(row)
    out["custom"] = json.loads(out["custom"])
    return out


async def _threads(pool: asyncpg.Pool, ticket_id: int | str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT id, direction, kind, author, channel, content, recipients, deleted"
        " FROM desk.ticket_threads WHERE ticket_id = $1 ORDER BY id", int(ticket_id))
    return [dict(r) for r in rows]


async def _attachments(pool: asyncpg.Pool, ticket_id: int | str) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT thread_id, name, size, content_type, url, object_key"
        " FROM desk.ticket_attachments WHERE ticket_id = $1 ORDER BY id", int(ticket_id))
    return [tuple(r) for r in rows]


PDF = {"name": "screen.pdf", "size": 2048, "content_type": "application/pdf",
       "url": "https://files.example.com/screen.pdf"}
PNG = {"name": "error.png", "size": 512, "content_type": "image/png",
       "object_key": "uploads/7/error.png"}


async def test_each_action_is_applied_to_the_desk_once(
        pipeline: Pipeline, api: tuple[Api, IntegrationService]) -> None:
    """Create (a new contact, attachments, a description), create on a CRM contact (its
    linked desk contact), comment, reply (the requester and the cc; the ticket goes On
    Hold), the customer's answer (Open again), forward, update, link to an open deal
    (High) and a won one (no raise), unlink, close, delete: every desk field checked,
    each action's outcome, and nothing applied twice."""
    client, _service = api
    pool = pipeline.pool
    assert pool is not None
    seed = await _seed(pipeline)

    # -- create, with a new contact typed in the form ------------------------------
    created = await client.act("post", "/crm/accounts/951/tickets", "adm", {
        "subject": "Printer on fire", "department_id": SUPPORT, "priority": "Medium",
        "due_date": "2026-12-10T12:00:00Z", "description": "It smokes.",
        "new_contact": {"first_name": "Bo", "last_name": "Berg", "email": "bo@example.com",
                        "phone": "+46 8 123 456"},
        "attachments": [PDF, PNG]})
    await pipeline.drain()
    outcome = await _outcome(client, created)
    assert outcome["status"] == "applied" and outcome["reason"] is None
    assert outcome["kind"] == "create" and outcome["user_id"] == "adm"
    assert outcome["user_name"] == "User adm"
    new_ticket, new_contact = outcome["result"]["ticket_id"], outcome["result"]["contact_id"]
    assert outcome["ticket_id"] == new_ticket and outcome["result"]["contact_created"] is True
    contact = await pool.fetchrow(
        "SELECT first_name, last_name, email, phone, deleted FROM desk.contacts"
        " WHERE id = $1", int(new_contact))
    assert contact is not None and dict(contact) == {"first_name": "Bo", "last_name": "Berg",
                             "email": "bo@example.com", "phone": "+46 8 123 456",
                             "deleted": False}
    # The new desk contact is synced to the CRM and linked, like any new desk contact.
    assert await pool.fetchval(
        "SELECT c.email FROM sync.links l JOIN crm.contacts c ON c.id = l.crm_id::bigint"
        " WHERE l.module = 'contacts' AND l.desk_id = $1", new_contact) == "bo@example.com"
    assert await _ticket(pool, new_ticket) == {
        "department_id": SUPPORT, "subject": "Printer on fire", "status": "Open",
        "status_type": "Open", "priority": "Medium", "channel": "CRM", "owner": None,
        "requester_email": "bo@example.com", "contact_id": int(new_contact),
        "due_date": dt.datetime(2026, 12, 10, 12, tzinfo=dt.UTC), "custom": {},
        "deleted": False}
    threads = await _threads(pool, new_ticket)
    assert [(t["direction"], t["kind"], t["author"], t["channel"], t["content"],
             t["recipients"]) for t in threads] == [
        ("in", "reply", "bo@example.com", "CRM", "It smokes.", None)]
    assert outcome["result"]["thread_id"] == str(threads[0]["id"])
    assert await _attachments(pool, new_ticket) == [
        (None, "screen.pdf", 2048, "application/pdf", PDF["url"], None),
        (None, "error.png", 512, "image/png", None, "uploads/7/error.png")]
    assert len(outcome["result"]["attachment_ids"]) == 2

    # -- create on a CRM contact: the ticket is the linked desk contact's ------------
    on_ana = await client.act("post", f"/crm/contacts/{seed['crm_ana']}/tickets", "adm",
                              {"subject": "Second question", "department_id": str(SUPPORT)})
    await pipeline.drain()
    outcome = await _outcome(client, on_ana)
    ana_ticket = outcome["result"]["ticket_id"]
    assert outcome["result"]["contact_id"] == str(seed["ana"])
    assert outcome["result"]["contact_created"] is False
    fields = await _ticket(pool, ana_ticket)
    assert (fields["contact_id"], fields["requester_email"], fields["priority"],
            fields["due_date"]) == (seed["ana"], "ana@example.com", None, None)
    assert await _threads(pool, ana_ticket) == []

    # -- comment, reply, the customer's answer, forward ------------------------------
    t = seed["ticket"]
    comment = await client.act("post", f"/tickets/{t}/comments", "lite",
                               {"content": "Checked the logs.", "attachments": [PNG]})
    await pipeline.drain()
    assert (await _ticket(pool, t))["status"] == "Open"  # a comment answers nobody
    reply = await client.act("post", f"/tickets/{t}/replies", "agt",
                             {"content": "Try again now?", "to": ["boss@example.com"]})
    await pipeline.drain()
    assert (await _ticket(pool, t))["status"] == "On Hold"  # waits for the customer
    await _as_person(pool, "INSERT INTO desk.ticket_threads (ticket_id, direction, content)"
                     " VALUES ($1, 'in', 'Still broken.')", t)
    await pipeline.drain()
    assert (await _ticket(pool, t))["status"] == "Open"  # the customer waits again
    forward = await client.act("post", f"/tickets/{t}/forwards", "agt",
                               {"content": "FYI", "to": ["vendor@example.net"]})
    await pipeline.drain()
    assert (await _ticket(pool, t))["status"] == "Open"  # a forward answers nobody
    threads = await _threads(pool, t)
    assert [(x["direction"], x["kind"], x["author"], x["channel"], x["content"],
             x["recipients"]) for x in threads] == [
        ("out", "comment", "User lite", "Email", "Checked the logs.", None),
        ("out", "reply", "User agt", "Email", "Try again now?",
         ["ana@example.com", "boss@example.com"]),
        ("in", "reply", None, None, "Still broken.", None),
        ("out", "forward", "User agt", "Email", "FYI", ["vendor@example.net"])]
    for action, thread in [(comment, threads[0]), (reply, threads[1]), (forward, threads[3])]:
        outcome = await _outcome(client, action)
        assert outcome["status"] == "applied"
        assert outcome["result"]["thread_id"] == str(thread["id"])
        assert outcome["ticket_id"] == str(t)
    assert await _attachments(pool, t) == [
        (threads[0]["id"], "error.png", 512, "image/png", None, "uploads/7/error.png")]

    # -- update, link to deals, unlink, close, delete ------------------------------------
    await client.act("patch", f"/tickets/{t}", "adm", {"fields": {
        "priority": "Low", "owner": "carla@desk.example", "due_date": "2026-12-24T09:30:00+01:00",
        "subject": "Cannot log in (SSO)", "custom.cf_region": "EMEA"}})
    await pipeline.drain()
    fields = await _ticket(pool, t)
    assert fields == {
        "department_id": SUPPORT, "subject": "Cannot log in (SSO)", "status": "Open",
        "status_type": "Open", "priority": "Low", "channel": "Email",
        "owner": "carla@desk.example", "requester_email": "ana@example.com",
        "contact_id": seed["ana"], "due_date": dt.datetime(2026, 12, 24, 8, 30, tzinfo=dt.UTC),
        "custom": {"cf_region": "EMEA"}, "deleted": False}
    won = await client.act("put", f"/tickets/{t}/deals/{seed['won_deal']}", "adm")
    await pipeline.drain()
    assert (await _ticket(pool, t))["priority"] == "Low"  # a won deal raises nothing
    assert (await _outcome(client, won))["result"]["priority_raised"] is False
    linked = await client.act("put", f"/tickets/{t}/deals/{seed['open_deal']}", "adm")
    await pipeline.drain()
    assert (await _ticket(pool, t))["priority"] == "High"
    assert (await _outcome(client, linked))["result"]["priority_raised"] is True
    links = await pool.fetch("SELECT ticket_id, deal_id, linked_by, linked_at"
                             " FROM ticket_actions.deal_links ORDER BY deal_id::bigint")
    requested = {row["action_id"]: row["requested_at"] for row in await pool.fetch(
        "SELECT action_id::text, requested_at FROM ticket_actions.actions")}
    assert [tuple(r) for r in links] == [
        (str(t), str(seed["open_deal"]), "adm", requested[linked]),
        (str(t), str(seed["won_deal"]), "adm", requested[won])]
    await client.act("delete", f"/tickets/{t}/deals/{seed['open_deal']}", "adm")
    await pipeline.drain()
    assert await pool.fetchval("SELECT count(*) FROM ticket_actions.deal_links") == 1
    assert (await _ticket(pool, t))["priority"] == "High"  # unlinking lowers nothing
    closed = await client.act("post", f"/tickets/{t}/close", "adm")
    await pipeline.drain()
    assert (await _ticket(pool, t))["status"] == "Closed"
    assert (await _outcome(client, closed))["result"]["changed"] is True
    await client.act("delete", f"/tickets/{ana_ticket}", "adm")
    await pipeline.drain()
    assert (await _ticket(pool, ana_ticket))["deleted"] is True
    status, answer = await client.call("post", f"/tickets/{ana_ticket}/comments", "adm",
                                       {"content": "too late"})
    assert status == 404 and answer["error"]["code"] == "not_found"

    # -- exactly once: one outcome, one action row per action; no thread twice ---------
    assert await pool.fetchval("SELECT count(*) FROM ticket_actions.actions") == 11
    assert await pool.fetchval(
        "SELECT count(*) FROM sync.outcomes WHERE module = 'ticket_actions'") == 11
    assert await pool.fetchval(
        "SELECT count(*) FROM sync.outcomes WHERE module = 'ticket_actions'"
        " AND outcome = 'added'") == 2
    assert await pool.fetchval(
        "SELECT count(*) FROM ticket_actions.actions WHERE outcome <> 'applied'") == 0
    assert len(await _threads(pool, t)) == 4

    # -- a rebuild gives the same tables and never writes the desk ---------------------
    desk_before = (await pool.fetchval("SELECT count(*) FROM desk.outbox"),
                   await pool.fetchval("SELECT count(*) FROM desk.ticket_threads"))
    # Both ways: the action events alone (replay's), and every event of the log fed on.
    async with pool.acquire() as conn:
        for per_event in (False, True):
            report = await rebuild_from_events(conn, spec("ticket_actions"), EventLogSource(),
                                               dry_run=False, per_event=per_event)
            assert report.changes == 0, report.as_dict()
            await conn.execute("DELETE FROM ticket_actions.deal_links")
            await conn.execute("UPDATE ticket_actions.actions SET outcome = 'failed'")
            report = await rebuild_from_events(conn, spec("ticket_actions"), EventLogSource(),
                                               dry_run=False, per_event=per_event)
            assert report.changes == 12, report.as_dict()
            assert report.unit == ("events" if per_event else "crm ticket_actions events")
    assert await pool.fetchval("SELECT count(*) FROM ticket_actions.deal_links") == 1
    assert await pool.fetchval(
        "SELECT count(*) FROM ticket_actions.actions WHERE outcome = 'applied'") == 11
    assert (await pool.fetchval("SELECT count(*) FROM desk.outbox"),
            await pool.fetchval("SELECT count(*) FROM desk.ticket_threads")) == desk_before


async def test_an_action_on_a_ticket_deleted_meanwhile_fails_with_a_reason(
        pipeline: Pipeline, api: tuple[Api, IntegrationService]) -> None:
    """The desk deleted the ticket after the request was accepted (its delete not yet
    applied): the action fails, lands in the failure log with its reason, and its
    outcome says so; a retry after the ticket is restored applies it."""
    client, _service = api
    pool = pipeline.pool
    assert pool is not None
    seed = await _seed(pipeline)
    t = seed["ticket"]
    async with pool.acquire() as conn, conn.transaction():
        # Not captured: the statistics still hold the ticket live, as they would until
        # the desk's delete event is applied.
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.execute("UPDATE desk.tickets SET deleted = true WHERE id = $1", t)
    action = await client.act("post", f"/tickets/{t}/replies", "adm", {"content": "Hello?"})
    await pipeline.drain()
    outcome = await _outcome(client, action)
    assert outcome["status"] == "failed" and outcome["reason"] == "ticket not found"
    assert f"ticket {t} is not in the desk" in outcome["detail"]
    failure = await pool.fetchrow(
        "SELECT source, module, record_id, reason, status FROM sync.failures")
    assert failure is not None and dict(failure) == {"source": "crm", "module": "ticket_actions",
                             "record_id": action, "reason": "ticket not found",
                             "status": "open"}
    assert await _threads(pool, t) == []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.execute("UPDATE desk.tickets SET deleted = false WHERE id = $1", t)
    status, _answer = await client.call("post", "/failures/retry", None, {"all": True})
    assert status == 200
    await pipeline.drain()
    outcome = await _outcome(client, action)
    assert outcome["status"] == "applied"
    assert [(x["kind"], x["content"]) for x in await _threads(pool, t)] == [
        ("reply", "Hello?")]
    assert await pool.fetchval("SELECT status FROM sync.failures") == "resolved"


async def _actions_asked(pool: asyncpg.Pool) -> int:
    """Actions accepted so far: in the CRM's outbox, or logged (an outbox row goes in the
    batch that logs its event, so none is counted twice)."""
    return int(await pool.fetchval(
        "SELECT (SELECT count(*) FROM crm.outbox WHERE module = 'ticket_actions')"
        " + (SELECT count(*) FROM syncd.event_log WHERE module = 'ticket_actions')"))


async def test_each_role_is_refused_where_it_must_be_with_nothing_changed(
        pipeline: Pipeline, api: tuple[Api, IntegrationService]) -> None:
    """OPS-06, TICKET-04, TICKET-08: a light agent only comments, an agent comments,
    replies and forwards, an admin does everything; a user without a desk account only
    comments; an owner change needs assign; a ticket of a department the user does not
    see is not found. Each refusal is a 403 naming the permission, recorded in the audit
    trail, and nothing reaches the outbox."""
    client, service = api
    pool = pipeline.pool
    assert pool is not None
    seed = await _seed(pipeline)
    t = seed["ticket"]
    message = {"content": "hi", "to": ["x@example.com"]}
    calls: dict[str, tuple[str, str, Any]] = {
        "create": ("post", "/crm/accounts/9/tickets",
                   {"subject": "s", "department_id": SUPPORT, "contact_id": seed["ana"]}),
        "comment": ("post", f"/tickets/{t}/comments", {"content": "hi"}),
        "reply": ("post", f"/tickets/{t}/replies", message),
        "forward": ("post", f"/tickets/{t}/forwards", message),
        "update": ("patch", f"/tickets/{t}", {"fields": {"priority": "Low"}}),
        "assign": ("patch", f"/tickets/{t}", {"fields": {"owner": "someone"}}),
        "close": ("post", f"/tickets/{t}/close", None),
        "delete": ("delete", f"/tickets/{t}", None),
        "link_deal": ("put", f"/tickets/{t}/deals/{seed['open_deal']}", None),
        "unlink_deal": ("delete", f"/tickets/{t}/deals/{seed['open_deal']}", None),
    }
    allowed = {"lite": {"comment"}, "nodesk": {"comment"},
               "agt": {"comment", "reply", "forward"}}
    for user, may in allowed.items():
        for name, (method, path, body) in calls.items():
            asked = await _actions_asked(pool)
            status, answer = await client.call(method, path, user, body)
            if name in may:
                assert status == 202, (user, name, answer)
                continue
            needed = "link_deal" if name == "unlink_deal" else name
            assert status == 403, (user, name, answer)
            assert answer["error"]["code"] == f"needs_{needed}", (user, name, answer)
            assert answer["error"]["permission"] == needed
            assert await _actions_asked(pool) == asked
    refusals = [e for e in await service.audit() if e.what == "action_refused"]
    assert len(refusals) == 2 * 9 + 7
    assert refusals[-1].details["user_id"] == "agt"
    assert refusals[-1].details["missing"] == "link_deal"
    assert refusals[-1].details["target"] == f"ticket {t}"
    status, answer = await client.call("post", f"/tickets/{t}/replies", "nodesk", message)
    assert "no active desk account" in answer["error"]["message"]
    await pipeline.drain()
    # What was allowed was applied: 3 comments and an agent's reply and forward.
    assert [(x["author"], x["kind"]) for x in await _threads(pool, t)] == [
        ("User lite", "comment"), ("User nodesk", "comment"), ("User agt", "comment"),
        ("User agt", "reply"), ("User agt", "forward")]

    # TICKET-08: with the visibility 'departments', another department's ticket is not found.
    await service.change_people("choose_ticket_visibility", visibility="departments",
                                by="boss")
    status, answer = await client.call("post", f"/tickets/{t}/close", "far")
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, _ = await client.call("post", f"/tickets/{seed['far_ticket']}/close", "far")
    assert status == 202
    status, answer = await client.call("post", "/crm/accounts/9/tickets", "far",
                                       calls["create"][2])
    assert status == 404  # not a department the user belongs to
    # Without a user, or with one the integration does not know: refused.
    assert (await client.call("post", f"/tickets/{t}/close", None))[0] == 401
    assert (await client.call("post", f"/tickets/{t}/close", "ghost"))[0] == 403


async def test_bad_input_is_a_clear_400(pipeline: Pipeline,
                                        api: tuple[Api, IntegrationService]) -> None:
    """Attachments too large or of a type not allowed, unknown or mistyped fields, a
    forward without addresses: 400 naming the field, nothing in the outbox."""
    client, _service = api
    pool = pipeline.pool
    assert pool is not None
    seed = await _seed(pipeline)
    t = seed["ticket"]
    cases: list[tuple[str, str, Any, str]] = [
        ("post", f"/tickets/{t}/comments",
         {"content": "x", "attachments": [{**PDF, "size": 20 * 1024 * 1024 + 1}]},
         "attachments[0].size"),
        ("post", f"/tickets/{t}/comments",
         {"content": "x", "attachments": [{**PDF, "content_type": "application/x-msdownload"}]},
         "attachments[0].content_type"),
        ("post", f"/tickets/{t}/comments",
         {"content": "x", "attachments": [{**PDF, "object_key": "k"}]}, "exactly one of url"),
        ("post", f"/tickets/{t}/forwards", {"content": "x"}, "to: a forward needs"),
        ("post", f"/tickets/{t}/comments", {"content": "x", "to": ["a@b.c"]}, "users only"),
        ("patch", f"/tickets/{t}", {"fields": {"colour": "red"}}, "colour: not a ticket field"),
        ("patch", f"/tickets/{t}", {"fields": {"department_id": "four"}},
         "text value given for an integer field"),
        ("patch", f"/tickets/{t}", {"fields": {"due_date": "tomorrow"}}, "not an RFC 3339"),
        ("patch", f"/tickets/{t}", {"fields": {"subject": ""}}, "mandatory field missing"),
        ("post", "/crm/accounts/9/tickets", {"subject": "s", "department_id": SUPPORT},
         "exactly one of contact_id and new_contact"),
        ("post", "/crm/accounts/9/tickets",
         {"subject": "s", "department_id": SUPPORT,
          "new_contact": {"last_name": "X", "email": "not-an-address"}},
         "new_contact.email"),
    ]
    for method, path, body, expected in cases:
        status, answer = await client.call(method, path, "adm", body)
        assert status == 400 and answer["error"]["code"] == "invalid_action", (path, answer)
        assert expected in answer["error"]["message"], (expected, answer)
    assert await _actions_asked(pool) == 0
    status, answer = await client.call("get", "/ticket-actions/not-a-uuid", None)
    assert status == 404


async def test_the_cli_acts_as_a_crm_user(pipeline: Pipeline, tmp_path: Path) -> None:
    """`syncd tickets create|comment|reply|update|link|close|action|unlink|delete --as USER`
    through the
    daemon's API: applied (--wait), a refusal naming the permission, and the deal's
    related list (`syncd tickets list --deal`)."""
    pool = pipeline.pool
    assert pool is not None
    seed = await _seed(pipeline)
    service = await _people()
    ctx = api_context(pool, integration=service, tokens={TOKEN: ("crm-app", "operator")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server:
        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": TOKEN,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)

        result = await syncd(
            "tickets", "create", "--as", "adm@crm.example", "--from", "accounts/951",
            "--subject", "From the CLI", "--department", str(SUPPORT),
            "--contact-id", str(seed["ana"]), "--priority", "Low", "--wait", "--json",
            "--attach", json.dumps(PDF))
        assert result.exit_code == 0, result.output
        created = json.loads(result.output)
        assert created["status"] == "applied" and created["kind"] == "create"
        ticket = created["result"]["ticket_id"]
        fields = await _ticket(pool, ticket)
        assert (fields["subject"], fields["priority"], fields["contact_id"]) == (
            "From the CLI", "Low", seed["ana"])
        await pipeline.drain()  # the statistics know the new ticket: it can be acted on
        result = await syncd("tickets", "comment", ticket, "A note", "--as", "lite", "--wait")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("action ") and ": applied {" in result.output
        result = await syncd("tickets", "reply", ticket, "Hello", "--as", "lite")
        assert result.exit_code == 1
        assert "needs_reply: CRM user lite" in result.output
        result = await syncd("tickets", "update", ticket, "owner=kim", "due_date=null",
                             "custom.cf_tier=2", "--as", "adm", "--wait")
        assert result.exit_code == 0, result.output
        fields = await _ticket(pool, ticket)
        assert (fields["owner"], fields["due_date"], fields["custom"]) == ("kim", None,
                                                                          {"cf_tier": 2})
        result = await syncd("tickets", "link", ticket, str(seed["open_deal"]), "--as", "adm",
                             "--wait", "--json")
        assert result.exit_code == 0, result.output
        linked = json.loads(result.output)
        assert linked["result"] == {"priority_raised": True, "ticket_id": ticket}
        await pipeline.drain()
        result = await syncd("tickets", "list", "--deal", str(seed["open_deal"]), "--json")
        assert result.exit_code == 0, result.output
        page = json.loads(result.output)
        assert page["module"] == "deals" and page["total"] == 1
        assert [(t["ticket_id"], t["priority"]) for t in page["tickets"]] == [(ticket, "High")]
        result = await syncd("tickets", "list", "--deal", str(seed["won_deal"]))
        assert result.exit_code == 0 and result.output.startswith(
            f"CRM deal {seed['won_deal']}: 0 ticket(s)")
        result = await syncd("tickets", "close", ticket, "--as", "adm")
        assert result.exit_code == 0 and ": pending" in result.output
        action_id = result.output.split()[1]
        await pipeline.drain()
        result = await syncd("tickets", "action", action_id, "--json")
        assert json.loads(result.output)["status"] == "applied"
        assert (await _ticket(pool, ticket))["status"] == "Closed"
        result = await syncd("tickets", "unlink", ticket, str(seed["open_deal"]), "--as",
                             "adm", "--wait")
        assert result.exit_code == 0, result.output
        assert await pool.fetchval("SELECT count(*) FROM ticket_actions.deal_links"
                                   " WHERE ticket_id = $1", ticket) == 0
        result = await syncd("tickets", "delete", ticket, "--as", "adm", "--wait")
        assert result.exit_code == 0, result.output
        assert (await _ticket(pool, ticket))["deleted"] is True


async def test_an_action_too_large_for_one_event_is_refused(pool: asyncpg.Pool) -> None:
    """An action whose event the projector would reject for its size (the envelope's
    limit) is refused when asked, with nothing in the outbox."""
    admin = CrmUser(id="adm", name="Ada", email="ada@crm.example", role="admin",
                    desk_active=True)
    long_url = {**PDF, "url": "https://files.example.com/" + "a" * 1970}
    with pytest.raises(ServiceError, match="too large for one event") as refused:
        await submit(pool, admin, "all", "create", ticket_id=None,
                     payload={"subject": "S", "department_id": str(SUPPORT),
                              "contact_id": "1", "description": "\U0001f600" * 64_000,
                              "attachments": [long_url] * 10})
    assert refused.value.code == "invalid_action"
    assert await _actions_asked(pool) == 0
