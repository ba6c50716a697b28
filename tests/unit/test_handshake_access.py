"""Who may read the handshake board and act from it: the admin API's token roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer, make_mocked_request

from daemon.api import ROLE, WHO
from daemon.handshake_api import API_PREFIX, Caller, admin_api_roles, handshake_app


def test_roles_gate_reading_and_acting() -> None:
    """No token is 401; a viewer reads but may not close or reply (403); an operator may."""
    check = admin_api_roles()
    anonymous = make_mocked_request("GET", "/api/v1/handshake/1")
    refused = check(anonymous, "read")
    assert isinstance(refused, web.Response) and refused.status == 401
    viewer = make_mocked_request("GET", "/api/v1/handshake/1")
    viewer[ROLE], viewer[WHO] = "viewer", "ana"
    assert check(viewer, "read") == Caller("ana")
    refused = check(viewer, "act")
    assert isinstance(refused, web.Response) and refused.status == 403
    operator = make_mocked_request("POST", "/api/v1/handshake/1/tickets/2/close")
    operator[ROLE], operator[WHO] = "operator", "rui"
    assert check(operator, "act") == Caller("rui")


async def test_the_parent_apps_middleware_reaches_the_board() -> None:
    """Mounted as a sub-application, the board sees the role the daemon's middleware set."""
    @web.middleware
    async def tokens(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if request.headers.get("Authorization") == "Bearer viewer-token":
            request[ROLE], request[WHO] = "viewer", "ana"
        return await handler(request)

    app = web.Application(middlewares=[tokens])
    no_pool: Any = None  # refusals happen before the database is touched
    app.add_subapp(API_PREFIX, handshake_app(no_pool, edition="professional",
                                             integration_active=lambda: True,
                                             authorize=admin_api_roles()))
    server = TestServer(app)
    await server.start_server()
    try:
        async with ClientSession() as session:
            url = str(server.make_url(f"{API_PREFIX}/1/tickets/2/close"))
            async with session.post(url) as response:
                assert response.status == 401
            async with session.post(url, headers={"Authorization": "Bearer viewer-token"}
                                    ) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "forbidden"
    finally:
        await server.close()
