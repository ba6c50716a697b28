"""The integration's people (OPS-06, TICKET-04, TICKET-08, TICKET-09, PERM-01 … PERM-03):
the role rules, the aggregate's commands (each an audited event; a refused one records
nothing), the acting CRM user of a request, the admin API's roles, and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from adapters.integration_store import IntegrationService
from daemon.cli import cli
from daemon.http.acting import acting_user, require
from daemon.http.errors import ApiError
from daemon.http.server import build_app
from projections.integration import InvalidCommand
from projections.integration_app import in_memory
from projections.people import (
    PERMISSIONS,
    SIGNALS,
    CrmUser,
    DeskProfile,
    may_see,
    restrict,
)
from tests.support.api import api_context


def test_each_role_may_exactly_what_ops_06_says() -> None:
    def may(role: Any, active: bool = True) -> set[str]:
        return {p for p in PERMISSIONS
                if CrmUser("1", "A", "a@x.io", role=role, desk_active=active).missing(p)
                is None}

    assert may("light_agent") == {"comment"}
    assert may("agent") == {"comment", "reply", "forward"}
    assert may("admin") == set(PERMISSIONS)
    # TICKET-04: no active desk account (whatever the role), or never invited: comment only
    assert may("admin", active=False) == may("agent", active=False) == {"comment"}
    assert may(None) == {"comment"}


def test_ticket_visibility_by_department() -> None:
    ana = CrmUser("1", "Ana", "ana@x.io", departments=frozenset({"7"}))
    assert may_see(ana, "all", "8") and may_see(ana, "all", None)
    assert may_see(ana, "departments", "7")
    assert not may_see(ana, "departments", "8")
    assert not may_see(ana, "departments", None)


def test_restricted_items_keep_only_their_documented_fields() -> None:
    deal = {"id": "5", "deal_name": "Big", "stage": "open", "amount": 9000, "contact_id": "3"}
    assert restrict("deals", "full", deal) == deal
    assert restrict("deals", "restricted", deal) == {"id": "5", "deal_name": "Big",
                                                     "stage": "open"}
    assert restrict("deals", "none", deal) is None
    assert DeskProfile("p", access={"notes": "none"}).access_to("notes") == "none"
    assert DeskProfile("p").access_to("calls") == "full"


def _app() -> IntegrationService:
    service = IntegrationService(in_memory())
    return service


async def test_people_commands_are_audited_and_refusals_record_nothing() -> None:
    service = _app()
    with pytest.raises(InvalidCommand) as refused:
        await service.change_people("record_crm_user", user_id="u1", name="Ana",
                                    email="ana@x.io", mutual=False, by="boss")
    assert refused.value.code == "not_set_up"
    await service.set_up("portal", "org", by="boss")
    await service.change_people("record_crm_user", user_id="u1", name="Ana",
                                email="ana@x.io", mutual=False, by="boss")
    await service.change_people("record_crm_user", user_id="u2", name="Bo",
                                email="bo@x.io", mutual=True, by="boss")
    before = len(await service.audit())
    for command, arguments, code in [
        ("invite_user", {"user_id": "u1", "role": "boss"}, "invalid_value"),
        ("invite_user", {"user_id": "nobody", "role": "agent"}, "unknown_user"),
        ("set_desk_account", {"user_id": "u1", "active": True}, "not_invited"),
        ("set_user_departments", {"user_id": "u1", "departments": ["x1"]}, "invalid_value"),
        ("choose_user_signals", {"user_id": "u1", "signals": ["gossip"]}, "invalid_value"),
        ("choose_ticket_visibility", {"visibility": "some"}, "invalid_value"),
        ("set_profile", {"name": "p", "visible": True, "shows": "deals", "access": {},
                         "configures": False}, "invalid_value"),
        ("set_profile", {"name": "p", "visible": True, "shows": "contacts",
                         "access": {"notes": "partial"}, "configures": False},
         "invalid_value"),
        ("remove_profile", {"name": "p"}, "unknown_profile"),
    ]:
        with pytest.raises(InvalidCommand) as refused:
            await service.change_people(command, by="boss", **arguments)  # type: ignore[arg-type]
        assert refused.value.code == code, command
    assert len(await service.audit()) == before

    await service.change_people("invite_user", user_id="u1", role="agent", by="boss")
    people = await service.people()
    assert people.users["u1"].permissions == {"comment"}  # invited, not accepted yet
    assert people.users["u2"].desk_active and people.users["u2"].mutual
    await service.change_people("set_desk_account", user_id="u1", active=True, by="boss")
    await service.change_people("set_user_departments", user_id="u1",
                                departments=["12", 3, "12"], by="boss")
    await service.change_people("choose_user_signals", user_id="u1",
                                signals=["new_rating", "new_ticket"], by="ana")
    await service.change_people("choose_ticket_visibility", visibility="departments",
                                by="boss")
    await service.change_people("set_profile", name="Light", visible=True, shows="accounts",
                                access={"deals": "none", "notes": "restricted"},
                                configures=False, by="boss")
    # The same values again record nothing.
    count = len(await service.audit())
    await service.change_people("invite_user", user_id="u1", role="agent", by="boss")
    await service.change_people("choose_ticket_visibility", visibility="departments",
                                by="boss")
    assert len(await service.audit()) == count

    people = await service.people()
    ana = people.users["u1"]
    assert (ana.role, ana.desk_active) == ("agent", True)
    assert ana.permissions == {"comment", "reply", "forward"}
    assert ana.departments == {"3", "12"} and ana.signals == {"new_ticket", "new_rating"}
    assert people.users["u2"].signals == set(SIGNALS)
    assert people.visibility == "departments"
    light = people.profiles["Light"]
    assert (light.shows, light.access_to("deals"), light.access_to("notes"),
            light.access_to("info")) == ("accounts", "none", "restricted", "full")
    whats = [(e.who, e.what) for e in (await service.audit())[1:]]
    assert whats == [
        ("boss", "crm_user_recorded"), ("boss", "crm_user_recorded"),
        ("boss", "user_invited"), ("boss", "desk_account_set"),
        ("boss", "user_departments_set"), ("ana", "user_signals_chosen"),
        ("boss", "ticket_visibility_chosen"), ("boss", "profile_set")]


async def _known(service: IntegrationService) -> None:
    await service.set_up("portal", "org", by="boss")
    for uid, name, role, active in [("u1", "Lia", "light_agent", True),
                                    ("u2", "Al", "agent", True),
                                    ("u3", "Ad", "admin", False)]:
        await service.change_people("record_crm_user", user_id=uid, name=name,
                                    email=f"{name.lower()}@x.io", mutual=False, by="boss")
        await service.change_people("invite_user", user_id=uid, role=role, by="boss")
        if active:
            await service.change_people("set_desk_account", user_id=uid, active=True,
                                        by="boss")


def _request(headers: dict[str, str]) -> web.Request:
    from aiohttp.test_utils import make_mocked_request
    return make_mocked_request("POST", "/api/v1/x", headers=headers)


async def test_the_acting_user_and_a_refusal_recorded_in_the_audit_trail() -> None:
    service = _app()
    await _known(service)
    with pytest.raises(ApiError) as err:
        await acting_user(service, _request({}))
    assert (err.value.status, err.value.code) == (401, "crm_user_required")
    with pytest.raises(ApiError) as err:
        await acting_user(service, _request({"X-Syncd-Crm-User": "u9"}))
    assert (err.value.status, err.value.code) == (403, "unknown_crm_user")
    assert (await acting_user(service, _request({"X-Syncd-Crm-User": "AL@x.io"}))).id == "u2"

    al = (await service.people()).users["u2"]
    request = _request({"X-Syncd-Crm-User": "u2"})
    await require(service, request, al, "reply", action="reply", target="ticket 4")
    before = len(await service.audit())
    with pytest.raises(ApiError) as err:
        await require(service, request, al, "close", action="close", target="ticket 4")
    assert (err.value.status, err.value.code) == (403, "needs_close")
    assert "has the role agent, which may not close" in err.value.message
    ad = (await service.people()).users["u3"]
    with pytest.raises(ApiError) as err:
        await require(service, request, ad, "reply", action="reply", target="ticket 4")
    assert err.value.code == "needs_reply" and "may only comment" in err.value.message
    entries = (await service.audit())[before:]
    assert [(e.what, e.details) for e in entries] == [
        ("action_refused", {"user_id": "u2", "action": "close", "target": "ticket 4",
                            "missing": "close"}),
        ("action_refused", {"user_id": "u3", "action": "reply", "target": "ticket 4",
                            "missing": "reply"})]
    assert (await service.people()).users["u2"] == al  # nothing else changed


async def test_the_api_and_cli_change_people_as_an_admin_only(tmp_path: Path) -> None:
    service = _app()
    await service.set_up("portal", "org", by="boss")
    admin, operator = "admin-token-for-people", "operator-token-for-people"
    nothing: Any = None
    ctx = api_context(nothing, integration=service,
                      tokens={admin: ("boss", "admin"), operator: ("crm-app", "operator")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.port}/api/v1/people"

        async def call(method: str, path: str, token: str, body: Any = None,
                       **headers: str) -> tuple[int, Any]:
            async with session.request(method, base + path, json=body, headers={
                    "Authorization": f"Bearer {token}", **headers}) as response:
                return response.status, await response.json()

        user = {"name": "Ana", "email": "ana@x.io"}
        assert (await call("PUT", "/users/u1", operator, user))[0] == 403
        status, answer = await call("PUT", "/users/u1", admin, user)
        assert status == 200 and answer["permissions"] == ["comment"]
        status, answer = await call("PUT", "/users/u1/role", admin, {"role": "overlord"})
        assert status == 409 and answer["error"]["code"] == "invalid_value"
        assert (await call("PUT", "/users/u1/role", admin, {"role": "agent"}))[0] == 200
        status, answer = await call("PUT", "/users/u1/desk-account", admin, {"active": True})
        assert answer["permissions"] == ["comment", "forward", "reply"]
        # A CRM user chooses their own signals, not another's; an admin chooses anyone's.
        await call("PUT", "/users/u2", admin, {"name": "Bo", "email": "bo@x.io"})
        status, answer = await call("PUT", "/users/u2/signals", operator,
                                    {"signals": []}, **{"X-Syncd-Crm-User": "u1"})
        assert status == 403 and answer["error"]["code"] == "not_your_signals"
        status, answer = await call("PUT", "/users/u1/signals", operator,
                                    {"signals": ["new_reply"]}, **{"X-Syncd-Crm-User": "u1"})
        assert status == 200 and answer["signals"] == ["new_reply"]
        status, answer = await call("GET", "/me", operator, **{"X-Syncd-Crm-User": "bo@x.io"})
        assert status == 200 and answer["id"] == "u2"

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": admin,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)

        result = await syncd("users", "departments", "u1", "4", "9")
        assert result.exit_code == 0, result.output
        assert "departments   4, 9" in result.output
        result = await syncd("users", "visibility", "departments", "--json")
        assert json.loads(result.output)["ticket_visibility"] == "departments"
        result = await syncd("profiles", "set", "Light", "--shows", "accounts",
                             "--access", "deals=none", "--access", "notes=restricted")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1].split() == [
            "Light", "yes", "accounts", "full", "none", "restricted", "full", "full", "full"]
        result = await syncd("profiles", "set", "X", "--access", "deals=half")
        assert result.exit_code == 2 and "ITEM=LEVEL" in result.output
        result = await syncd("users", "list", "--json")
        listed = json.loads(result.output)
        assert [u["id"] for u in listed["users"]] == ["u1", "u2"]
        assert listed["profiles"][0]["access"]["deals"] == "none"
        result = await syncd("users", "me", "--as", "ana@x.io")
        assert result.exit_code == 0 and "may           comment, forward, reply" in result.output
        result = await syncd("users", "invite", "u9", "--role", "agent")
        assert result.exit_code == 1 and "unknown_user" in result.output


def test_the_openapi_document_names_the_crm_user_header_where_it_matters() -> None:
    from daemon.http.openapi import document
    from daemon.http.routes import API_ROUTES

    paths = document(API_ROUTES)["paths"]
    me = paths["/api/v1/people/me"]["get"]["parameters"]
    assert me == [{"name": "X-Syncd-Crm-User", "in": "header", "required": True,
                   "schema": {"type": "string"}, "description": me[0]["description"]}]
    listed = paths["/api/v1/crm/{module}/{record}/tickets"]["get"]["parameters"]
    assert [(p["name"], p["required"]) for p in listed] == [("X-Syncd-Crm-User", False)]
    assert "parameters" not in paths["/api/v1/people"]["get"]
