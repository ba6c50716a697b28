"""PERM-04: only users with the integration permission configure the integration; only
admins set it up, delete it, import or switch. Each refusal is a 403 with the reason and
changes nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.integration_store import IntegrationService
from daemon.http import API_PREFIX
from daemon.http.routes import API_ROUTES
from daemon.http.server import build_app
from daemon.runtime.settings import Role
from projections.integration_app import in_memory
from tests.support.api import api_context

INTEGRATION = f"{API_PREFIX}/integration"
CONFIGURING = {  # path -> a valid body: the changes an operator with the permission makes
    ("put", f"{INTEGRATION}/sync-type"): {"sync_type": "crm_to_desk"},
    ("put", f"{INTEGRATION}/mapping/{{module}}"): {"entries": None},
    ("put", f"{INTEGRATION}/matching"): {"match_secondary_email": True},
    ("put", f"{INTEGRATION}/products-department"): {"department_id": 4},
    ("put", f"{INTEGRATION}/related-lists"): {"modules": ["contacts"]},
}
ADMIN_ONLY = {("post", INTEGRATION), ("delete", INTEGRATION),
              ("post", f"{INTEGRATION}/legacy-import"), ("post", f"{INTEGRATION}/switch-to-sync")}
TOKENS: dict[str, tuple[str, Role]] = {"admin-token-0000000": ("boss", "admin"),
          "configurer-token-00": ("cora", "operator"),
          "restricted-token-00": ("rita", "operator"),
          "unbound-token-00000": ("ugo", "operator"),
          "ghost-token-0000000": ("gus", "operator"),
          "viewer-token-000000": ("vic", "viewer")}
BOUND = {"configurer-token-00": "Supervisor", "restricted-token-00": "Agent",
         "ghost-token-0000000": "Gone", "viewer-token-000000": "Supervisor"}


async def set_up(service: IntegrationService) -> None:
    """Set up, with two profiles: one with the integration permission, one without."""
    await service.set_up("portal", "org", by="boss")
    await profile(service, "Supervisor", configures=True)
    await profile(service, "Agent", configures=False)


async def profile(service: IntegrationService, name: str, *, configures: bool) -> None:
    await service.change_people("set_profile", name=name, visible=True, shows="contacts",
                                access={}, configures=configures, by="boss")


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient[Any, Any], IntegrationService]]:
    service = IntegrationService(in_memory())
    nothing: Any = None  # no request here reaches the database
    ctx = api_context(nothing, integration=service, tokens=TOKENS, token_profiles=BOUND)
    async with TestClient(TestServer(build_app({}, api=ctx))) as client:
        yield client, service


def _path(path: str) -> str:
    return path.replace("{module}", "contacts")


async def _call(client: TestClient[Any, Any], method: str, path: str, token: str | None,
                body: Any = None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with client.request(method.upper(), _path(path), json=body,
                              headers=headers) as response:
        return response.status, await response.json()


def test_the_table_names_exactly_the_configuring_routes() -> None:
    """The routes that configure are ``configure``; set-up, delete, import and switch stay
    ``admin``."""
    roles = {(r.method, r.path): r.role for r in API_ROUTES}
    assert {key for key, role in roles.items() if role == "configure"} == set(CONFIGURING)
    assert all(roles[key] == "admin" for key in ADMIN_ONLY)


async def _state(service: IntegrationService) -> tuple[Any, int]:
    return await service.current(), len(await service.audit())


async def test_admin_and_a_configuring_profile_configure(
        api: tuple[TestClient[Any, Any], IntegrationService]) -> None:
    """An admin, and an operator bound to a profile that configures, change every setting."""
    client, service = api
    await set_up(service)
    again = {**CONFIGURING, ("put", f"{INTEGRATION}/sync-type"): {"sync_type": "two_way"},
             ("put", f"{INTEGRATION}/matching"): {"match_secondary_email": False},
             ("put", f"{INTEGRATION}/products-department"): {"department_id": 5},
             ("put", f"{INTEGRATION}/related-lists"): {"modules": ["accounts"]}}
    for token, bodies in (("admin-token-0000000", CONFIGURING), ("configurer-token-00", again)):
        before = len(await service.audit())
        for (method, path), body in bodies.items():
            status, answer = await _call(client, method, path, token, body)
            assert status == 200, (token, path, answer)
        changes = (await service.audit())[before:]
        assert changes and {c.who for c in changes} == {TOKENS[token][0]}


@pytest.mark.parametrize(("token", "reason"), [
    ("restricted-token-00", "desk profile 'Agent' does not have it"),
    ("unbound-token-00000", "this token is bound to none"),
    ("ghost-token-0000000", "this token's profile 'Gone' does not exist"),
    ("viewer-token-000000", "this needs the operator role"),
])
async def test_without_the_permission_nothing_changes(
        api: tuple[TestClient[Any, Any], IntegrationService], token: str,
        reason: str) -> None:
    """An operator without the permission (or a viewer, even bound to a profile that has
    it) is refused every configuring route: 403 with the reason, nothing changed."""
    client, service = api
    await set_up(service)
    before = await _state(service)
    for (method, path), body in CONFIGURING.items():
        status, answer = await _call(client, method, path, token, body)
        assert status == 403, (path, answer)
        assert answer["error"]["code"] == "forbidden"
        assert reason in answer["error"]["message"]
    assert await _state(service) == before


async def test_set_up_delete_import_and_switch_stay_admin_only(
        api: tuple[TestClient[Any, Any], IntegrationService]) -> None:
    """PERM-04: "only administrators set it up": the integration permission does not
    reach set-up, delete, the legacy import or the switch to sync."""
    client, service = api
    status, _answer = await _call(client, "post", INTEGRATION, "configurer-token-00",
                                  {"desk_portal": "p", "crm_org": "o"})
    assert status == 403 and await service.current() is None
    await service.set_up("portal", "org", by="boss")
    before = await _state(service)
    for method, path in sorted(ADMIN_ONLY - {("post", INTEGRATION)}):
        status, answer = await _call(client, method, path, "configurer-token-00")
        assert status == 403 and "needs the admin role" in answer["error"]["message"], path
    assert await _state(service) == before


async def test_a_permission_taken_away_holds_at_once(
        api: tuple[TestClient[Any, Any], IntegrationService]) -> None:
    """The bound profile is read at every request: once its permission is taken away, the
    next change is refused; with no token at all it is 401."""
    client, service = api
    await set_up(service)
    path, body = f"{INTEGRATION}/matching", {"match_secondary_email": True}
    assert (await _call(client, "put", path, "configurer-token-00", body))[0] == 200
    await profile(service, "Supervisor", configures=False)  # an admin takes it away
    status, answer = await _call(client, "put", path, "configurer-token-00", body)
    assert status == 403 and "'Supervisor' does not have it" in answer["error"]["message"]
    assert (await _call(client, "put", path, None, body))[0] == 401


# -- the console's configuring actions: the same rule, through its forms -------------------

Form = list[tuple[str, str]]
CONSOLE_FORMS: dict[str, tuple[Form, tuple[str, Any]]] = {
    # the console's configuring forms -> a valid post, and what it changes
    "sync-type": ([("sync_type", "crm_to_desk")], ("direction", "crm_to_desk")),
    "matching": ([("match_secondary_email", "on")], ("match_secondary_email", True)),
    "products-department": ([("department_id", "7")], ("products_department_id", 7)),
    "related-lists": ([("modules", "deals"), ("modules", "leads")],
                      ("related_list_modules", ["leads", "deals"])),
}


async def _console_login(client: TestClient[Any, Any], token: str) -> str:
    """Log in through the console's form (its login CSRF); the session's CSRF token."""
    async with client.get("/login") as response:
        nonce = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert nonce is not None
    async with client.post("/login", data={"csrf": nonce[1], "token": token},
                           allow_redirects=False) as response:
        assert response.status == 303, await response.text()
    status, html = await _console_get(client)
    assert status == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert csrf is not None and csrf[1]
    return csrf[1]


async def _console_get(client: TestClient[Any, Any], query: str = "") -> tuple[int, str]:
    async with client.get("/integration" + query, allow_redirects=False) as response:
        return response.status, await response.text()


async def _console_post(client: TestClient[Any, Any], setting: str, data: Form
                        ) -> tuple[int, str, str]:
    async with client.post(f"/integration/{setting}", data=data,
                           allow_redirects=False) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


@pytest.mark.parametrize("token", ["admin-token-0000000", "configurer-token-00"])
async def test_the_console_configures_with_the_permission(
        api: tuple[TestClient[Any, Any], IntegrationService], token: str) -> None:
    """An admin, and an operator bound to a profile that configures, see the configuring
    forms and change each setting through them, recorded as theirs."""
    client, service = api
    await set_up(service)
    csrf = await _console_login(client, token)
    _, html = await _console_get(client)
    for setting in CONSOLE_FORMS:
        assert f'action="/integration/{setting}"' in html
    for setting, (data, (field, value)) in CONSOLE_FORMS.items():
        before = len(await service.audit())
        status, location, text = await _console_post(client, setting, [*data, ("csrf", csrf)])
        assert (status, location) == (303, "/integration?done=configured"), text
        assert getattr(await service.current(), field) == value
        assert [c.who for c in (await service.audit())[before:]] == [TOKENS[token][0]]
    _, html = await _console_get(client, "?done=configured")
    assert "The integration&#x27;s configuration was changed." in html
    assert "<dd>crm_to_desk</dd>" not in html and "<dd>one-way, CRM → desk</dd>" in html
    # Without the session's CSRF token: refused, nothing changed.
    unchanged = await _state(service)
    status, _, text = await _console_post(client, "matching", [])
    assert status == 403 and "CSRF token is missing or wrong" in text
    status, _, text = await _console_post(client, "switch-to-sync", [("csrf", csrf)])
    assert status == 404 and "The console changes no setting" in text
    assert await _state(service) == unchanged


@pytest.mark.parametrize(("token", "reason"), [
    ("restricted-token-00", "desk profile &#x27;Agent&#x27; does not have it"),
    ("unbound-token-00000", "this token is bound to none"),
    ("ghost-token-0000000", "this token&#x27;s profile &#x27;Gone&#x27; does not exist"),
])
async def test_the_console_refuses_without_the_permission(
        api: tuple[TestClient[Any, Any], IntegrationService], token: str,
        reason: str) -> None:
    """An operator without the permission sees the configuration, no configuring form and
    the reason; each configuring post (with a valid CSRF token) is 403 with the same
    reason as the API's, and nothing changes."""
    client, service = api
    await set_up(service)
    csrf = await _console_login(client, token)
    status, html = await _console_get(client)
    assert status == 200 and "<dd>portal</dd>" in html
    assert 'action="/integration/' not in html and reason in html
    before = await _state(service)
    for setting, (data, _change) in CONSOLE_FORMS.items():
        status, _, text = await _console_post(client, setting, [*data, ("csrf", csrf)])
        assert status == 403 and reason in text, (setting, text)
    assert await _state(service) == before


async def test_a_viewer_and_a_permission_taken_away_in_the_console(
        api: tuple[TestClient[Any, Any], IntegrationService]) -> None:
    """A viewer (even bound to a profile that configures) gets no form and is refused; an
    operator whose profile loses the permission is refused at the next post."""
    client, service = api
    await set_up(service)
    csrf = await _console_login(client, "viewer-token-000000")
    _, html = await _console_get(client)
    assert 'action="/integration/' not in html and "this token is a viewer&#x27;s" in html
    status, _, text = await _console_post(client, "matching",
                                          [("match_secondary_email", "on"), ("csrf", csrf)])
    assert status == 403 and "This needs the operator role; you are a viewer." in text
    assert (await service.current()).match_secondary_email is False  # type: ignore[union-attr]

    client.session.cookie_jar.clear()
    csrf = await _console_login(client, "configurer-token-00")
    data = [("match_secondary_email", "on"), ("csrf", csrf)]
    assert (await _console_post(client, "matching", data))[0] == 303
    await profile(service, "Supervisor", configures=False)  # an admin takes it away
    status, _, text = await _console_post(client, "matching", [("csrf", csrf)])
    assert status == 403 and "&#x27;Supervisor&#x27; does not have it" in text
    assert (await service.current()).match_secondary_email is True  # type: ignore[union-attr]
    _, html = await _console_get(client)
    assert 'action="/integration/' not in html
