"""Who may read the handshake board and act from it: the admin API's token roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer, make_mocked_request

from daemon.http import BOARD_PREFIX
from daemon.http.auth import ROLE, WHO, by_role, who
from daemon.http.board import BoardContext
from daemon.http.errors import ApiError
from daemon.http.routes import BOARD_ROUTES
from daemon.http.server import build_app


def test_roles_gate_reading_and_acting() -> None:
    """No token is 401; a viewer reads but may not close or reply (403); an operator may."""
    needs = {(r.method, r.path.removeprefix(BOARD_PREFIX)): r.role for r in BOARD_ROUTES}
    read, act = needs[("get", "/{department}")], needs[("post", "/{department}/tickets/"
                                                               "{ticket}/close")]
    assert (read, act) == ("viewer", "operator")
    read, act = "viewer", "operator"  # as the token roles they are
    assert needs[("get", "/{department}/stream")] == read
    assert needs[("post", "/{department}/tickets/{ticket}/replies")] == act
    anonymous = make_mocked_request("GET", "/api/v1/handshake/1")
    with pytest.raises(ApiError) as refused:
        by_role(anonymous, read)
    assert refused.value.status == 401
    viewer = make_mocked_request("GET", "/api/v1/handshake/1")
    viewer[ROLE], viewer[WHO] = "viewer", "ana"
    by_role(viewer, read)
    assert who(viewer) == "ana"
    with pytest.raises(ApiError) as refused:
        by_role(viewer, act)
    assert refused.value.status == 403
    operator = make_mocked_request("POST", "/api/v1/handshake/1/tickets/2/close")
    operator[ROLE], operator[WHO] = "operator", "rui"
    by_role(operator, act)
    assert who(operator) == "rui"


async def test_the_parent_apps_middleware_reaches_the_board() -> None:
    """Served from the route table, the board sees the role the daemon's middleware set."""
    @web.middleware
    async def tokens(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if request.headers.get("Authorization") == "Bearer viewer-token":
            request[ROLE], request[WHO] = "viewer", "ana"
        return await handler(request)

    no_pool: Any = None  # refusals happen before the database is touched
    app = build_app({}, board=BoardContext(no_pool, edition="professional",
                                           integration_active=lambda: True),
                    middlewares=[tokens])
    server = TestServer(app)
    await server.start_server()
    try:
        async with ClientSession() as session:
            url = str(server.make_url(f"{BOARD_PREFIX}/1/tickets/2/close"))
            async with session.post(url) as response:
                assert response.status == 401
            async with session.post(url, headers={"Authorization": "Bearer viewer-token"}
                                    ) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "forbidden"
    finally:
        await server.close()
