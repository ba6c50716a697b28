"""The operator console (issue 20): server-rendered pages at ``/`` on the daemon's
HTTP listener, behind the API's tokens and roles.

A person logs in with an API token and gets a signed session cookie
(``session.py``); every page calls the use cases of ``daemon.service`` the admin API
calls (``views.py``); the HTML is built with escaping helpers (``html.py``), the
history chart is inline SVG (``charts.py``), and one small script (``static/``) makes
the board live. Every console answer carries a strict Content-Security-Policy
(``headers.py``). The admin API, ``/metrics`` and the probes are untouched.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from daemon.http.api import ApiContext
from daemon.http.board import BoardContext
from daemon.http.console.headers import secured
from daemon.http.console.views import Console

STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


def _static_routes() -> list[web.RouteDef]:
    folder = resources.files(__package__).joinpath("static")
    routes = []
    for name, content_type in STATIC.items():
        body = folder.joinpath(name).read_bytes()

        async def serve(_request: web.Request, body: bytes = body,
                        content_type: str = content_type) -> web.Response:
            response = web.Response(body=body, content_type=content_type, charset="utf-8")
            secured(response).headers["Cache-Control"] = "no-cache"
            return response

        routes.append(web.get(f"/console/static/{name}", serve))
    return routes


def console_routes(api: ApiContext, board: BoardContext | None) -> list[web.RouteDef]:
    """The console's routes, on the API's tokens (``api.tokens``) and use cases."""
    c = Console(api, board)
    w = c.wrap
    return [
        web.get("/", w(c.index)),
        web.get("/login", w(c.login_page)),
        web.post("/login", w(c.login)),
        web.post("/logout", w(c.logout)),
        web.post("/status/pause", w(c.pause)),
        web.post("/status/resume", w(c.resume)),
        web.get("/board", w(c.board_page)),
        web.get("/board/fragment", w(c.board_fragment)),
        web.get("/board/{department}/stream", w(c.board_stream)),
        web.post("/board/{department}/tickets/{ticket}/close", w(c.close_ticket)),
        web.post("/board/{department}/tickets/{ticket}/reply", w(c.reply_ticket)),
        web.get("/failures", w(c.failures_page)),
        web.post("/failures/retry", w(c.retry)),
        web.get("/history", w(c.history_page)),
        web.get("/tickets", w(c.tickets_page)),
        web.get("/integration", w(c.integration_page)),
        web.post("/integration/{setting}", w(c.configure)),
        web.get("/replay", w(c.replay_page)),
        web.post("/replay/preview", w(c.replay_preview)),
        *_static_routes(),
    ]
