"""What desk agents see of the CRM (PERM-01 … PERM-03) on the embedded default: a CRM
account, a contact, a deal, a note, a call, an event and a task created in the CRM
store, synced and linked by the pipeline, and a note and an event attached to the deal;
the view of a full profile, a restricted one (every field checked), an invisible one
(404), contacts against accounts; the deal's activities on its contact and account, and
following the deal; the API and the CLI; and a replay that rebuilds the projection
exactly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from adapters.integration_store import IntegrationService
from daemon.cli import cli
from daemon.http.server import build_app
from daemon.service.crm_view import NothingToShow, crm_view
from projections.integration_app import in_memory
from projections.people import ITEMS, RESTRICTED_FIELDS, DeskProfile
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.support.api import api_context
from tests.support.pipeline import Pipeline

FULL = DeskProfile("Agent")
RESTRICTED = DeskProfile("Light Agent", access=dict.fromkeys(ITEMS, "restricted"))
MIXED = DeskProfile("Sales", shows="accounts",
                    access={"info": "restricted", "deals": "full", "notes": "none",
                            "calls": "none", "events": "full", "tasks": "restricted"})
HIDDEN = DeskProfile("Contractor", visible=False)
PROFILES = {p.name: p for p in (FULL, RESTRICTED, MIXED, HIDDEN)}


async def crm_example(pipe: Pipeline) -> dict[str, Any]:
    """The CRM's records, made by a person in the CRM store; the sync links the account
    and the contact to the desk. Returns the ids, CRM and desk."""
    ids: dict[str, Any] = {}
    ids["account"] = await pipe.fetchval(
        "INSERT INTO crm.accounts (account_name, website, phone, industry)"
        " VALUES ('Acme Lda', 'acme.example', '+351 21 000', 'Retail') RETURNING id")
    ids["contact"] = await pipe.fetchval(
        "INSERT INTO crm.contacts (first_name, last_name, email, phone, mobile, account_id)"
        " VALUES ('Ana', 'Souza', 'ana@acme.example', '+351 21 111', '+351 91 222', $1)"
        " RETURNING id", ids["account"])
    ids["deal"] = await pipe.fetchval(
        "INSERT INTO crm.deals (deal_name, stage, amount, contact_id, account_id)"
        " VALUES ('Renewal 2027', 'open', 12500, $1, $2) RETURNING id",
        ids["contact"], ids["account"])
    ids["note"] = await pipe.fetchval(
        "INSERT INTO crm.notes (parent_module, parent_id, content)"
        " VALUES ('contacts', $1, 'Wants a discount before renewing') RETURNING id",
        ids["contact"])
    ids["call"] = await pipe.fetchval(
        "INSERT INTO crm.calls (parent_module, parent_id, subject, duration_seconds)"
        " VALUES ('contacts', $1, 'Renewal call', 540) RETURNING id", ids["contact"])
    ids["event"] = await pipe.fetchval(
        "INSERT INTO crm.events (parent_module, parent_id, subject, starts_at)"
        " VALUES ('accounts', $1, 'Quarterly review', '2027-01-15T10:00:00Z') RETURNING id",
        ids["account"])
    ids["task"] = await pipe.fetchval(
        "INSERT INTO crm.tasks (parent_module, parent_id, subject, due_date)"
        " VALUES ('contacts', $1, 'Send the quote', '2027-01-10') RETURNING id",
        ids["contact"])
    # Attached to the deal: shown on the contact and the account the deal names.
    ids["deal_note"] = await pipe.fetchval(
        "INSERT INTO crm.notes (parent_module, parent_id, content)"
        " VALUES ('deals', $1, 'Budget approved in March') RETURNING id", ids["deal"])
    ids["deal_event"] = await pipe.fetchval(
        "INSERT INTO crm.events (parent_module, parent_id, subject, starts_at)"
        " VALUES ('deals', $1, 'Contract signing', '2027-02-01T09:00:00Z') RETURNING id",
        ids["deal"])
    # In the recycle bin: never shown.
    gone = await pipe.fetchval(
        "INSERT INTO crm.notes (parent_module, parent_id, content)"
        " VALUES ('contacts', $1, 'binned') RETURNING id", ids["contact"])
    await pipe.settle()
    await pipe.execute("UPDATE crm.notes SET deleted = true WHERE id = $1", gone)
    await pipe.settle()
    for module in ("contacts", "accounts"):
        ids[f"desk_{module}"] = await pipe.fetchval(
            "SELECT desk_id FROM sync.links WHERE module = $1 AND crm_id = $2", module,
            str(ids[module[:-1]]))
        assert ids[f"desk_{module}"] is not None, module
    return ids


async def store_row(pipe: Pipeline, table: str, rid: int) -> dict[str, Any]:
    """A CRM row as its events give it (JSON types), with its id as text."""
    values = json.loads(await pipe.fetchval(f"SELECT to_jsonb(t)::text FROM {table} t"
                                            " WHERE id = $1", rid))
    del values["deleted"]
    return {**values, "id": str(rid)}


async def test_each_profile_sees_what_its_permissions_say(pipeline: Pipeline) -> None:
    """Full, restricted (every field), mixed with accounts, hidden (404); the desk account
    seen as its account or its contacts; a replay rebuilds crm_view row for row."""
    ids = await crm_example(pipeline)
    pool = pipeline.pool
    assert pool is not None
    contact = await store_row(pipeline, "crm.contacts", ids["contact"])
    rows = {item: await store_row(pipeline, f"crm.{item}", ids[item[:-1]])
            for item in ("deals", "notes", "calls", "events", "tasks")}
    deal_note = await store_row(pipeline, "crm.notes", ids["deal_note"])
    deal_event = await store_row(pipeline, "crm.events", ids["deal_event"])
    assert (deal_note["parent_module"], deal_note["parent_id"]) == ("deals", ids["deal"])
    contact_info = {**contact, "name": "Ana Souza", "account_name": "Acme Lda"}
    desk_contact, desk_account = ids["desk_contacts"], ids["desk_accounts"]

    # Full, showing contacts: the CRM contact, every field of every item; the deal's
    # note and event among the contact's, newest first, each naming the deal.
    view = await crm_view(pool, FULL, "contacts", desk_contact)
    assert view == {
        "desk": {"module": "contacts", "id": desk_contact}, "profile": "Agent",
        "shows": "contacts", "access": dict.fromkeys(ITEMS, "full"),
        "records": [{"info": contact_info, "deals": [rows["deals"]],
                     "notes": [deal_note, rows["notes"]], "calls": [rows["calls"]],
                     "events": [deal_event], "tasks": [rows["tasks"]]}]}

    # Restricted: exactly the restricted fields, and none of the rest anywhere.
    view = await crm_view(pool, RESTRICTED, "contacts", desk_contact)
    (shown,) = view["records"]
    assert shown == {
        "info": {"id": str(ids["contact"]), "name": "Ana Souza", "account_name": "Acme Lda"},
        "deals": [{"id": str(ids["deal"]), "deal_name": "Renewal 2027", "stage": "open"}],
        "notes": [{"id": str(ids["deal_note"]), "created_time": deal_note["created_time"]},
                  {"id": str(ids["note"]), "created_time": rows["notes"]["created_time"]}],
        "calls": [{"id": str(ids["call"]), "subject": "Renewal call",
                   "created_time": rows["calls"]["created_time"]}],
        "events": [{"id": str(ids["deal_event"]), "subject": "Contract signing",
                    "starts_at": deal_event["starts_at"]}],
        "tasks": [{"id": str(ids["task"]), "subject": "Send the quote",
                   "due_date": "2027-01-10", "status": "open"}]}
    for item in ITEMS:
        for entry in [shown["info"]] if item == "info" else shown[item]:
            assert list(entry) == list(RESTRICTED_FIELDS[item])
    text = json.dumps(view)
    for secret in ("ana@acme.example", "+351 21 111", "+351 91 222", "12500",
                   "Wants a discount", "540", "binned", "Budget approved", "parent_"):
        assert secret not in text

    # Accounts, mixed access: the contact's account; the event hangs off the account,
    # the deal's event off the deal, which names the account; notes are not shown.
    view = await crm_view(pool, MIXED, "contacts", desk_contact)
    assert view["records"] == [{
        "info": {"id": str(ids["account"]), "name": "Acme Lda", "account_name": "Acme Lda"},
        "deals": [rows["deals"]], "events": [deal_event, rows["events"]], "tasks": []}]
    assert await crm_view(pool, MIXED, "accounts", desk_account) == {**view, "desk": {
        "module": "accounts", "id": desk_account}}

    # A desk account under a profile that shows contacts: the account's contacts.
    view = await crm_view(pool, FULL, "accounts", desk_account)
    assert [r["info"] for r in view["records"]] == [contact_info]
    # The account's event is not the contact's; the deal's is (the deal names her).
    assert view["records"][0]["events"] == [deal_event]

    # The deal given to no contact: its note and event follow it, off the contact.
    await pipeline.execute("UPDATE crm.deals SET contact_id = NULL WHERE id = $1", ids["deal"])
    await pipeline.settle()
    shown = (await crm_view(pool, FULL, "contacts", desk_contact))["records"][0]
    assert (shown["deals"], shown["notes"], shown["events"]) == ([], [rows["notes"]], [])
    view = await crm_view(pool, MIXED, "accounts", desk_account)
    assert view["records"][0]["events"] == [deal_event, rows["events"]]

    # Hidden, or linked to nothing: a reason, never an empty answer.
    with pytest.raises(NothingToShow, match="hidden from desk profile 'Contractor'"):
        await crm_view(pool, HIDDEN, "contacts", desk_contact)
    with pytest.raises(NothingToShow, match="desk contact 999999 is linked to no CRM"):
        await crm_view(pool, FULL, "contacts", "999999")

    # A deleted CRM record leaves the view; a replay rebuilds the projection exactly.
    await pipeline.execute("UPDATE crm.calls SET deleted = true WHERE id = $1", ids["call"])
    await pipeline.settle()
    assert (await crm_view(pool, FULL, "contacts", desk_contact))["records"][0]["calls"] == []
    async with pool.acquire() as conn:
        before = [tuple(r) for r in await conn.fetch(
            'SELECT module, record_id, "values"::text, contact_id, account_id'
            " FROM crm_view.records ORDER BY 1, 2")]
        # account, contact, deal, note, event, task, the deal's note and event (no bin,
        # no call)
        assert len(before) == 8
        for per_event in (False, True):  # from each record's last event, or from all
            report = await rebuild_from_events(conn, spec("crm_view"), EventLogSource(),
                                               dry_run=True, per_event=per_event)
            assert report.changes == 0 and report.events > 0
        await conn.execute("DELETE FROM crm_view.records WHERE module = 'deals'")
        await conn.execute('UPDATE crm_view.records SET "values" = \'{}\''
                           " WHERE module = 'contacts'")
        report = await rebuild_from_events(conn, spec("crm_view"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 2
        after = [tuple(r) for r in await conn.fetch(
            'SELECT module, record_id, "values"::text, contact_id, account_id'
            " FROM crm_view.records ORDER BY 1, 2")]
        assert after == before
    view = await crm_view(pool, MIXED, "accounts", desk_account)
    assert view["records"][0]["events"] == [deal_event, rows["events"]]


async def test_the_api_and_the_cli(pipeline: Pipeline, tmp_path: Path) -> None:
    """GET /api/v1/crm-view/... with a viewer's token, ?profile=; 404 with the reason for
    an unknown profile, a hidden integration or an unlinked record; a token bound to a
    profile sees as that profile only; `syncd crm-view`."""
    ids = await crm_example(pipeline)
    token = "viewer-token-for-the-crm-view"

    service = IntegrationService(in_memory())  # the profiles, as an admin defined them
    await service.set_up("portal", "org", by="boss")
    for profile in PROFILES.values():
        await service.change_people(
            "set_profile", name=profile.name, visible=profile.visible, shows=profile.shows,
            access=dict(profile.access), configures=profile.configures, by="boss")
    assert (await service.people()).profiles == PROFILES
    assert pipeline.pool is not None
    agent = "light-agent-token-for-the-view"  # an agent's token, bound to its profile
    ctx = api_context(pipeline.pool, integration=service,
                      tokens={token: ("reader", "viewer"), agent: ("lia", "viewer")},
                      token_profiles={agent: "Light Agent"})
    reader = {"Authorization": f"Bearer {token}"}
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.port}/api/v1/crm-view"

        async def get(path: str, headers: dict[str, str] | None = reader
                      ) -> tuple[int, Any]:
            async with session.get(base + path, headers=headers) as response:
                return response.status, await response.json()

        contact_path = f"/contacts/{ids['desk_contacts']}"
        assert (await get(contact_path + "?profile=Agent", None))[0] == 401
        status, answer = await get(contact_path + "?profile=Light%20Agent")
        assert status == 200
        assert answer["records"][0]["deals"] == [
            {"id": str(ids["deal"]), "deal_name": "Renewal 2027", "stage": "open"}]
        for query, code, reason in (
                ("?profile=Nobody", "no_profile", "no desk profile is named 'Nobody'"),
                ("", "no_profile", "name the desk profile"),
                ("?profile=Contractor", "not_visible", "hidden from desk profile")):
            status, answer = await get(contact_path + query)
            assert (status, answer["error"]["code"]) == (404, code)
            assert reason in answer["error"]["message"]
        # A bound token sees as its own profile only: a fuller one is refused.
        lia = {"Authorization": f"Bearer {agent}"}
        status, answer = await get(contact_path, lia)
        assert status == 200 and answer["profile"] == "Light Agent"
        assert answer["records"][0]["info"] == {
            "id": str(ids["contact"]), "name": "Ana Souza", "account_name": "Acme Lda"}
        assert (await get(contact_path + "?profile=Light%20Agent", lia))[0] == 200
        status, answer = await get(contact_path + "?profile=Agent", lia)
        assert status == 403 and "bound to desk profile 'Light Agent'" in answer[
            "error"]["message"]
        status, answer = await get("/accounts/424242?profile=Sales")
        assert (status, answer["error"]["code"]) == (404, "not_linked")
        assert (await get(f"/deals/{ids['desk_contacts']}?profile=Agent"))[0] == 404

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": token,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)

        result = await syncd("crm-view", "--contact", ids["desk_contacts"], "--profile",
                             "Sales", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["records"][0]["info"]["name"] == "Acme Lda"
        result = await syncd("crm-view", "--account", ids["desk_accounts"], "--profile",
                             "Light Agent")
        assert result.exit_code == 0, result.output
        assert "ana@acme.example" not in result.output
        assert '    name: "Ana Souza"' in result.output
        result = await syncd("crm-view", "--contact", ids["desk_contacts"], "--profile",
                             "Contractor")
        assert result.exit_code == 1 and "not_visible: the CRM integration is hidden" \
            in result.output
        result = await syncd("crm-view", "--profile", "Agent")
        assert result.exit_code == 2 and "one of --contact ID or --account ID" in result.output
