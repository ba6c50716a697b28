"""An emulator of the Zoho Desk REST v1 API (contacts, accounts, products, search
and webhooks) and its OAuth token endpoint, for the Zoho Desk adapter's tests
(``adapters/zoho/desk.py``, ``desk_capture.py``).

It follows Zoho's OpenAPI files (``zoho/zohodesk-oas``, ``v1.0/Contact.json``,
``Account.json``, ``Product.json``, ``Search.json``, ``Webhook.json``) and the
webhook guide, for what the adapter uses:

- Every ``/api/v1`` call needs a live ``Zoho-oauthtoken`` (else 401
  ``INVALID_OAUTH``) and the ``orgId`` header or query parameter of the
  organisation (missing: 422 ``UNPROCESSABLE_ENTITY``; another org's: 401
  ``OAUTH_ORG_MISMATCH``). Errors are ``{"errorCode", "message"}``.
- ``GET /api/v1/{module}`` (``from``, zero-based, ``limit`` 1..100, ``sortBy`` with
  ``-`` for descending): list items without ``modifiedTime`` and ``cf`` for
  contacts, as the OAS's list view object; 204 when empty.
- ``GET|PATCH /api/v1/{module}/{id}``, ``POST /api/v1/{module}``: the whole record;
  a missing mandatory field (``lastName``, ``accountName``, ``productName`` and
  ``departmentIds``) or an ``accountId`` of no account is 422 ``INVALID_DATA`` with
  ``errors: [{"fieldName": "/lastName", "errorType": "missing"}]``; an unknown id is
  404 ``URL_NOT_FOUND``.
- ``GET /api/v1/{module}/search``: ``email`` (comma-separated: any of them, the
  primary e-mail, case aside), ``accountName``, ``productName``, ``_all`` (any
  column holding the text), ``customField1``..``10`` (``cf_name:value``),
  ``modifiedTimeRange`` (``from,to``), ``sortBy`` (``modifiedTime``,
  ``createdTime``, ``relevance``), ``from`` 0..999, ``limit`` 1..100; an unknown
  parameter is 422, and so is a custom field the module lacks (``without_sync_key``).
  ``{"data", "count"}`` or 204.
- ``GET|POST /api/v1/webhooks``, ``PATCH|DELETE /api/v1/webhooks/{id}``: creating
  one (or changing its URL) checks the URL with a GET that must answer 200. A
  contact's or account's create, update or delete (by the API or by ``person_*``)
  is POSTed to each webhook subscribed to its event as ``[{"eventType", "orgId",
  "eventTime", "payload", "prevState"?}]``, unless the write carried the header
  ``sourceId`` equal to the webhook's ``ignoreSourceId``; a callback answered 410
  deletes the webhook; ``drop_callbacks`` loses the next ones.
- ``scopes``: ``Desk.contacts.ALL`` for contacts and accounts, ``Desk.products.ALL``,
  ``Desk.search.READ`` for searches, ``Desk.settings.ALL`` for webhooks; a call
  without its scope is 401 ``SCOPE_MISMATCH``.

A person's delete (``person_deletes``) moves the record to ``trash`` and is
announced as ``{"payload": {"id": …}}``.

Not emulated: tickets, threads, comments, departments' API, the recycle bin's API
and deletes through the API, ``fields=`` and ``filters`` on lists; API credits only as
a count per window (``ops.emulators.zoho``), not Zoho's cost per call.
Times are UTC with milliseconds, strictly increasing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from adapters.zoho.desk import ZohoDeskOptions
from adapters.zoho.oauth import Credentials
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ZohoEmulator

ORG_ID = "60001234567"
MODULES = ("contacts", "accounts", "products")
MANDATORY = {"contacts": ("lastName",), "accounts": ("accountName",),
             "products": ("productName", "departmentIds")}
EVENT_PREFIX = {"contacts": "Contact", "accounts": "Account"}
LIST_HIDES = {"contacts": ("modifiedTime", "cf")}
SEARCH_PARAMS = {"email", "accountName", "productName", "_all", "modifiedTimeRange",
                 "sortBy", "from", "limit", "orgId",
                 *(f"customField{n}" for n in range(1, 11))}


class ZohoDeskEmulator(ZohoEmulator):
    api_prefix = "/api/v1/"
    SCOPES = frozenset({"Desk.contacts.ALL", "Desk.products.ALL", "Desk.search.READ",
                        "Desk.basic.READ", "Desk.settings.ALL"})

    def __init__(self, *, token_ttl: float = 3600.0) -> None:
        super().__init__(token_ttl=token_ttl)
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES}
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.trash: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES}
        self.deliveries: list[tuple[str, list[str], int]] = []  # webhook, events, status
        self.drop_callbacks = 0
        self.without_sync_key: set[str] = set()  # modules lacking the cf_syncd_key field
        self.writes = 0
        self._ids = itertools.count(1_892_000_000_042_001)
        self._last = dt.datetime.now(dt.UTC)
        self._sending: set[asyncio.Task[None]] = set()

    # -- test-facing -----------------------------------------------------------

    def options(self, *, secret: str = CLIENT_SECRET, **more: Any) -> ZohoDeskOptions:
        return ZohoDeskOptions(Credentials(
            client_id=CLIENT_ID, client_secret=SecretStr(secret),
            refresh_token=SecretStr(REFRESH_TOKEN), accounts_url=self.url),
            org_id=ORG_ID, api_url=self.url, **more)

    def only(self, module: str) -> dict[str, Any]:
        (record,) = self.records[module].values()
        return record

    def person_creates(self, module: str, fields: dict[str, Any]) -> str:
        """A person creates a record in the desk (its events go to the webhooks)."""
        record = self._create(module, fields)
        self._announce(module, "Add", record, source=None)
        return str(record["id"])

    def person_edits(self, module: str, record_id: str, fields: dict[str, Any]) -> None:
        record = self._update(module, self.records[module][record_id], fields)
        self._announce(module, "Update", record, source=None)

    def person_deletes(self, module: str, record_id: str) -> None:
        """A person deletes a record: to the recycle bin (announced with its id)."""
        record = self.records[module].pop(record_id)
        self.trash[module][record_id] = record
        self._announce(module, "Delete", {"id": record_id, "modifiedTime": self._now()},
                       source=None)

    async def delivered(self) -> None:
        """Wait for the callbacks under way."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    # -- the service -------------------------------------------------------------

    def unauthorized(self) -> web.Response:
        return _error(401, "INVALID_OAUTH", "The OAuth Token you provided is invalid.")

    def too_many_requests(self, retry_after: float) -> web.Response:
        return web.json_response(
            {"errorCode": "TOO_MANY_REQUESTS", "message": "API credits exhausted"},
            status=429, headers={"Retry-After": str(int(retry_after))})

    def scope_needed(self, request: web.Request) -> str:
        parts = request.path.split("/")  # "", "api", "v1", module, …
        if parts[3] == "webhooks":
            return "Desk.settings.ALL"
        if parts[-1] == "search":
            return "Desk.search.READ"
        return "Desk.products.ALL" if parts[3] == "products" else "Desk.contacts.ALL"

    def scope_refused(self) -> web.Response:
        return _error(401, "SCOPE_MISMATCH", "The scope of the OAuth token does not"
                      " permit this operation.")

    def table(self, module: str) -> dict[str, dict[str, Any]]:
        return self.records[module]

    async def person_create(self, module: str, fields: dict[str, Any]) -> str:
        return self.person_creates(module, fields)

    async def person_edit(self, module: str, record_id: str, fields: dict[str, Any]) -> None:
        self.person_edits(module, record_id, fields)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/webhooks", self._list_webhooks)
        app.router.add_post("/api/v1/webhooks", self._create_webhook)
        app.router.add_patch("/api/v1/webhooks/{id}", self._update_webhook)
        app.router.add_delete("/api/v1/webhooks/{id}", self._delete_webhook)
        app.router.add_get("/api/v1/{module}/search", self._search)
        app.router.add_get("/api/v1/{module}/{id}", self._get_one)
        app.router.add_patch("/api/v1/{module}/{id}", self._patch)
        app.router.add_get("/api/v1/{module}", self._list)
        app.router.add_post("/api/v1/{module}", self._post)

    async def stop(self) -> None:
        await self.delivered()
        await super().stop()

    def _now(self) -> str:
        self._last = max(dt.datetime.now(dt.UTC).replace(
            microsecond=dt.datetime.now().microsecond // 1000 * 1000),
            self._last + dt.timedelta(milliseconds=1))
        return self._last.strftime("%Y-%m-%dT%H:%M:%S.") + \
            f"{self._last.microsecond // 1000:03d}Z"

    def _table(self, request: web.Request) -> dict[str, dict[str, Any]]:
        org = request.headers.get("orgId") or request.query.get("orgId")
        if not org:
            raise _raise(422, "UNPROCESSABLE_ENTITY", "orgId is missing")
        if org != ORG_ID:
            raise _raise(401, "OAUTH_ORG_MISMATCH", "the OAuth token is not of this org")
        module = request.match_info.get("module", "")
        if module not in self.records:
            raise _raise(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        return self.records[module]

    async def _list(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        records = list(self._table(request).values())
        start, limit = _paging(request, reach=None)
        records = _sorted(records, request.query.get("sortBy"))[start:start + limit]
        hidden = LIST_HIDES.get(module, ())
        items = [{k: v for k, v in r.items() if k not in hidden} for r in records]
        return web.json_response({"data": items}) if items else web.Response(status=204)

    async def _get_one(self, request: web.Request) -> web.Response:
        record = self._table(request).get(request.match_info["id"])
        if record is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        return web.json_response(record)

    async def _post(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        self._table(request)
        body = await request.json()
        problem = self._invalid(module, body, None)
        if problem is not None:
            return problem
        record = self._create(module, body)
        self._announce(module, "Add", record, source=request.headers.get("sourceId"))
        return web.json_response(record)

    async def _patch(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        current = self._table(request).get(request.match_info["id"])
        if current is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        body = await request.json()
        problem = self._invalid(module, body, current)
        if problem is not None:
            return problem
        record = self._update(module, current, body)
        self._announce(module, "Update", record, source=request.headers.get("sourceId"))
        return web.json_response(record)

    def _invalid(self, module: str, body: dict[str, Any],
                 current: dict[str, Any] | None) -> web.Response | None:
        merged = {**(current or {}), **body}
        errors = [{"fieldName": f"/{name}", "errorType": "missing", "errorMessage": ""}
                  for name in MANDATORY[module] if merged.get(name) in (None, "", [])]
        account = body.get("accountId")
        if account and str(account) not in self.records["accounts"]:
            errors.append({"fieldName": "/accountId", "errorType": "invalid",
                           "errorMessage": ""})
        if not errors:
            return None
        return web.json_response({
            "errorCode": "INVALID_DATA", "errors": errors,
            "message": "The data does not comply to the validation restrictions defined."},
            status=422)

    def _create(self, module: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        record_id = str(next(self._ids))
        record = {"id": record_id, **fields, "cf": dict(fields.get("cf") or {}),
                  "createdTime": now, "modifiedTime": now}
        self.records[module][record_id] = record
        self.writes += 1
        return record

    def _update(self, module: str, current: dict[str, Any],
                fields: dict[str, Any]) -> dict[str, Any]:
        for name, value in fields.items():
            if name == "cf":
                current["cf"] = {**current.get("cf", {}), **(value or {})}
            else:
                current[name] = value
        current["modifiedTime"] = self._now()
        self.writes += 1
        return current

    async def _search(self, request: web.Request) -> web.Response:
        records = list(self._table(request).values())
        query = request.query
        unknown = set(query) - SEARCH_PARAMS
        if unknown:
            return _error(422, "UNPROCESSABLE_ENTITY",
                          f"Extra query parameter '{sorted(unknown)[0]}' is present in the input.")
        start, limit = _paging(request, reach=999)
        if "email" in query:
            wanted = {e.strip().lower() for e in query["email"].split(",")}
            records = [r for r in records if str(r.get("email") or "").strip().lower() in wanted]
        for name in ("accountName", "productName"):
            if name in query:
                records = [r for r in records if _like(r.get(name), query[name])]
        if "_all" in query:
            text = query["_all"].lower()
            records = [r for r in records if any(
                isinstance(v, str) and text in v.lower()
                for v in [*r.values(), *(r.get("cf") or {}).values()])]
        for n in range(1, 11):
            if f"customField{n}" in query:
                name, _, value = query[f"customField{n}"].partition(":")
                if name == "cf_syncd_key" and request.match_info["module"] in \
                        self.without_sync_key:
                    return _error(422, "INVALID_DATA", f"'{name}' is not a field of the module")
                records = [r for r in records if (r.get("cf") or {}).get(name) == value]
        if "modifiedTimeRange" in query:
            low, _, high = query["modifiedTimeRange"].partition(",")
            records = [r for r in records
                       if _time(low) <= _time(r["modifiedTime"]) <= _time(high)]
        found = _sorted(records, query.get("sortBy"))
        page = found[start:start + limit]
        if not page:
            return web.Response(status=204)
        return web.json_response({"data": page, "count": len(found)})

    # -- webhooks ----------------------------------------------------------------

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        self._table_org(request)
        hooks = list(self.webhooks.values())
        return web.json_response({"data": hooks}) if hooks else web.Response(status=204)

    async def _create_webhook(self, request: web.Request) -> web.Response:
        self._table_org(request)
        body = await request.json()
        if not body.get("url") or not isinstance(body.get("subscriptions"), dict):
            return _error(422, "INVALID_DATA", "url and subscriptions are required")
        if not await self._validates(body["url"]):
            return _error(422, "INVALID_DATA", "the URL did not answer 200 to its check")
        hook_id = str(next(self._ids))
        now = self._now()
        self.webhooks[hook_id] = {"id": hook_id, "isEnabled": True, "ignoreSourceId": "",
                                  **body, "type": "CUSTOMER_WEBHOOK", "createdTime": now,
                                  "modifiedTime": now}
        return web.json_response(self.webhooks[hook_id])

    async def _update_webhook(self, request: web.Request) -> web.Response:
        self._table_org(request)
        hook = self.webhooks.get(request.match_info["id"])
        if hook is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        body = await request.json()
        if body.get("url") not in (None, hook["url"]) and not await self._validates(body["url"]):
            return _error(422, "INVALID_DATA", "the URL did not answer 200 to its check")
        hook.update(body, modifiedTime=self._now())
        return web.json_response(hook)

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        self._table_org(request)
        if self.webhooks.pop(request.match_info["id"], None) is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        return web.Response(status=204)

    def _table_org(self, request: web.Request) -> None:
        org = request.headers.get("orgId") or request.query.get("orgId")
        if org != ORG_ID:
            raise _raise(422 if not org else 401, "UNPROCESSABLE_ENTITY" if not org
                         else "OAUTH_ORG_MISMATCH", "orgId is missing or another org's")

    async def _validates(self, url: str) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _announce(self, module: str, action: str, record: dict[str, Any], *,
                  source: str | None) -> None:
        prefix = EVENT_PREFIX.get(module)
        if prefix is None:
            return  # Zoho Desk has no product events
        event_type = f"{prefix}_{action}"
        for hook in list(self.webhooks.values()):
            if not hook.get("isEnabled", True) or event_type not in hook["subscriptions"]:
                continue
            if source and source == hook.get("ignoreSourceId"):
                continue
            event = {"eventType": event_type, "orgId": ORG_ID,
                     "eventTime": str(int(_time(record["modifiedTime"]).timestamp() * 1000)),
                     "payload": {"id": record["id"]} if action == "Delete" else dict(record)}
            task = asyncio.ensure_future(self._send(hook, [event]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, hook: dict[str, Any], events: list[dict[str, Any]]) -> None:
        types = [e["eventType"] for e in events]
        if self.drop_callbacks:
            self.drop_callbacks -= 1
            self.deliveries.append((hook["id"], types, 0))
            return
        try:
            async with aiohttp.ClientSession() as session, session.post(
                    hook["url"], json=events, timeout=aiohttp.ClientTimeout(total=5)) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.deliveries.append((hook["id"], types, status))
        if status == 410:
            self.webhooks.pop(hook["id"], None)


@asynccontextmanager
async def running_emulator(**options: Any) -> AsyncIterator[ZohoDeskEmulator]:
    emulator = ZohoDeskEmulator(**options)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def _paging(request: web.Request, *, reach: int | None) -> tuple[int, int]:
    try:
        start, limit = int(request.query.get("from", "0")), int(request.query.get("limit", "50"))
    except ValueError:
        raise _raise(422, "UNPROCESSABLE_ENTITY", "from and limit are numbers") from None
    if not 1 <= limit <= 100 or start < 0 or (reach is not None and start > reach):
        raise _raise(422, "UNPROCESSABLE_ENTITY",
                     "The value passed for the 'from' or 'limit' query parameter is invalid.")
    return start, limit


def _sorted(records: list[dict[str, Any]], sort_by: str | None) -> list[dict[str, Any]]:
    if not sort_by or sort_by == "relevance":
        return sorted(records, key=lambda r: int(r["id"]))
    field, descending = sort_by.lstrip("-"), sort_by.startswith("-")
    return sorted(records, key=lambda r: (str(r.get(field) or ""), int(r["id"])),
                  reverse=descending)


def _like(value: Any, pattern: str) -> bool:
    text, wanted = str(value or "").strip().lower(), pattern.strip().lower()
    return text.startswith(wanted[:-1]) if wanted.endswith("*") else text == wanted


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": code, "message": message}, status=status)


class _Raised(web.HTTPException):
    """An error answer raised from a helper (``status_code`` set per instance)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"errorCode": code, "message": message}),
                         content_type="application/json")


_raise = _Raised
