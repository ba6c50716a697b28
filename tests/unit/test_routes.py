"""The route table is the one list of routes: the aiohttp app and the OpenAPI
document are both built from it, the board's routes included, and the HTTP layer
holds no SQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.http import openapi
from daemon.http.api import ApiContext
from daemon.http.board import BoardContext
from daemon.http.console import console_routes
from daemon.http.routes import API_ROUTES, BOARD_ROUTES, Route
from daemon.http.server import build_app
from tests.support.api import api_context

ROUTES: list[Route[Any]] = [*API_ROUTES, *BOARD_ROUTES]
HTTP = Path(__file__).resolve().parents[2] / "daemon" / "http"


def _plain(path: str) -> str:
    """``{name:regex}`` as aiohttp's canonical path and OpenAPI write it: ``{name}``."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _context() -> ApiContext:
    nothing: Any = None  # no request here reaches the database
    return api_context(nothing, integration=nothing, tokens={})


def _app() -> Any:
    nothing: Any = None  # no request here reaches the database
    return build_app({}, api=_context(), board=BoardContext(nothing, edition="professional",
                                                     integration_active=lambda: True))


def test_the_app_serves_exactly_the_table() -> None:
    served = {(route.method.lower(), route.resource.canonical)
              for route in _app().router.routes()
              if route.method != "HEAD" and route.resource is not None}
    table = {(r.method, _plain(r.path)) for r in ROUTES}
    # The operator console's HTML pages are no part of the API (daemon.http.console).
    console = {(r.method.lower(), r.path) for r in console_routes(_context(), None)
               if isinstance(r, web.RouteDef)}
    assert served - {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")} - console \
        == table


async def test_the_document_lists_every_route_of_the_table_the_board_too() -> None:
    async with TestClient(TestServer(_app())) as client:
        response = await client.get("/api/v1/openapi.json")
        assert response.status == 200
        document = await response.json()
    assert document == openapi.document([*API_ROUTES, *BOARD_ROUTES])
    listed = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert listed == {(r.method, _plain(r.path)) for r in ROUTES}
    board = document["paths"]["/api/v1/handshake/{department}/tickets/{ticket}/close"]
    assert board["post"]["x-required-role"] == "operator"
    assert document["paths"]["/api/v1/failures/retry"]["post"]["requestBody"]
    assert "security" not in document["paths"]["/api/v1/openapi.json"]["get"]
    assert "X-Syncd-Signature" in str(document["paths"]["/webhooks/{source}"]["post"])


def test_no_sql_in_the_http_layer() -> None:
    for path in sorted(HTTP.glob("*.py")):
        found = re.findall(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", path.read_text())
        assert not found, f"{path.name}: {found}"
