"""What the Zoho emulators share: the accounts server's token endpoint, the check of
the access token on every API call, scripted faults, the log of calls, and the
HTTP server on loopback (``zoho_crm``, ``zoho_desk``).

- ``POST /oauth/v2/token`` (``grant_type=refresh_token``): an access token for
  ``token_ttl`` seconds and the ``api_domain``; unknown credentials get Zoho's
  ``{"error": "invalid_client"}`` (with 200, as Zoho answers).
- Every API call needs ``Authorization: Zoho-oauthtoken …`` of a live token, else
  the service's 401.
- ``faults``: scripted fates of the next API calls: 429 with ``Retry-After``, 5xx,
  latency, and a call carried out but answered after the client gave up.
- ``/ui/{module}`` (``ui_modules``: contacts, accounts, products; the desk's
  tickets and departments too): a person's use of the service's web pages,
  without a token: ``GET`` lists the records, ``POST`` creates one and ``PATCH
  /ui/{module}/{id}`` edits one (the service's field names), each announced as the
  service announces a person's change (the CRM's notifications, the desk's webhooks).
- ``credits``: ``(calls, seconds)``, the API credits of a window: past them, the
  service's 429 with ``Retry-After`` until the window ends (Zoho's own windows are a
  day; a test's, seconds).
- ``scopes``: what the refresh token was granted (all the adapter needs, at first): a
  call whose scope (``scope_needed``) is not among them is refused as the service
  refuses it (``scope_refused``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN = "1000.TESTCLIENT", "test-secret", "1000.refresh"


@dataclass
class Fault:
    """The next API call's fate: answered ``status`` (with ``headers`` and ``body``)
    after ``delay`` seconds; with no ``status``, carried out at once and answered
    after the delay (latency; past the client's timeout, a call that lands
    unanswered)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"code": "INTERNAL_ERROR"})
    delay: float = 0.0


class ZohoEmulator:
    api_prefix = "/"
    """The paths that need an access token."""
    ui_modules: tuple[str, ...] = ("contacts", "accounts", "products")
    """The modules a person edits through ``/ui/{module}``."""
    SCOPES: frozenset[str] = frozenset()

    def __init__(self, *, token_ttl: float = 3600.0) -> None:
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.token_ttl = token_ttl
        self.tokens_granted = 0
        self.refresh_refused = False  # the refresh token revoked (by an admin, say)
        self.faults: deque[Fault] = deque()
        self.calls: list[tuple[str, str, int]] = []  # method, path, status
        self.credits: tuple[int, float] | None = None
        self.scopes = set(self.SCOPES)
        self._window: tuple[float, int] = (0.0, 0)  # its start, the calls spent in it
        self.refused_for_credits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def table(self, module: str) -> dict[str, dict[str, Any]]:
        """The records of one of the sync's modules (``contacts``, ...), by id."""
        raise NotImplementedError

    async def person_create(self, module: str, fields: dict[str, Any]) -> str:
        raise NotImplementedError

    async def person_edit(self, module: str, record_id: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _ui_list(self, request: web.Request) -> web.Response:
        return web.json_response({"data": list(self._ui_table(request).values())})

    async def _ui_create(self, request: web.Request) -> web.Response:
        self._ui_table(request)
        record_id = await self.person_create(request.match_info["module"], await request.json())
        return web.json_response(self._ui_table(request)[record_id], status=201)

    async def _ui_edit(self, request: web.Request) -> web.Response:
        table = self._ui_table(request)
        record_id = request.match_info["id"]
        if record_id not in table:
            raise web.HTTPNotFound(text="no such record")
        await self.person_edit(request.match_info["module"], record_id, await request.json())
        return web.json_response(table[record_id])

    def _ui_table(self, request: web.Request) -> dict[str, dict[str, Any]]:
        module = request.match_info["module"]
        if module not in self.ui_modules:
            raise web.HTTPNotFound(text=", ".join(self.ui_modules))
        return self.table(module)

    def unauthorized(self) -> web.Response:
        raise NotImplementedError

    def too_many_requests(self, retry_after: float) -> web.Response:
        raise NotImplementedError

    def scope_needed(self, request: web.Request) -> str:
        raise NotImplementedError

    def scope_refused(self) -> web.Response:
        raise NotImplementedError

    def _spend(self) -> web.Response | None:
        """One credit of the window, or the 429 when they are spent."""
        if self.credits is None:
            return None
        allowed, seconds = self.credits
        started, spent = self._window
        now = time.monotonic()
        if now - started >= seconds:
            started, spent = now, 0
        if spent >= allowed:
            self.refused_for_credits += 1
            return self.too_many_requests(max(1.0, seconds - (now - started)))
        self._window = (started, spent + 1)
        return None

    async def start(self, port: int = 0) -> str:
        app = web.Application(middlewares=[self._faults_and_auth])
        app.router.add_post("/oauth/v2/token", self._token)
        app.router.add_get("/ui/{module}", self._ui_list)
        app.router.add_post("/ui/{module}", self._ui_create)
        app.router.add_patch("/ui/{module}/{id}", self._ui_edit)
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _faults_and_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(self.api_prefix):
            return await self._served(request, handler)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.status is not None:
            await asyncio.sleep(fault.delay)
            self.calls.append((request.method, request.path, fault.status))
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        answer = await self._authorised(request, handler)
        if fault is not None:  # carried out at once, answered after the delay
            await asyncio.sleep(fault.delay)
        return answer

    async def _authorised(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        expiry = self.tokens.get(header.removeprefix("Zoho-oauthtoken "))
        if not header.startswith("Zoho-oauthtoken ") or expiry is None or \
                expiry < time.monotonic():
            self.calls.append((request.method, request.path, 401))
            return self.unauthorized()
        if self.scope_needed(request) not in self.scopes:
            self.calls.append((request.method, request.path, 401))
            return self.scope_refused()
        refused = self._spend()
        if refused is not None:
            self.calls.append((request.method, request.path, refused.status))
            return refused
        return await self._served(request, handler)

    async def _served(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        self.calls.append((request.method, request.path, response.status))
        return response

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        asked = (form.get("grant_type"), form.get("client_id"), form.get("client_secret"),
                 form.get("refresh_token"))
        if self.refresh_refused or asked != ("refresh_token", CLIENT_ID, CLIENT_SECRET,
                                             REFRESH_TOKEN):
            return web.json_response({"error": "invalid_client"})
        token = f"1000.{uuid.uuid4().hex}"
        self.tokens[token] = time.monotonic() + self.token_ttl
        self.tokens_granted += 1
        return web.json_response({"access_token": token, "api_domain": self.url,
                                  "token_type": "Bearer", "expires_in": self.token_ttl})
