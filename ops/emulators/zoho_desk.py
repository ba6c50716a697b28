"""An emulator of the Zoho Desk REST v1 API (contacts, accounts, products, tickets
with their threads and comments, departments, search and webhooks) and its OAuth
token endpoint, for the Zoho Desk adapter's tests (``adapters/zoho/desk.py``,
``desk_capture.py``, ``desk_tickets.py``) and ``python3 dev.py run --remote``.

It follows Zoho's OpenAPI files (``zoho/zohodesk-oas``, ``v1.0/Contact.json``,
``Account.json``, ``Product.json``, ``Ticket.json``, ``Thread.json``,
``TicketComment.json``, ``Department.json``, ``MailReplyAddress.json``,
``Search.json``, ``Webhook.json``) and the webhook guide, for what the adapter
uses; the customer happiness list, which ``CustomerHappiness.json`` leaves out, as
Zoho Desk's API reference documents it (``GET /api/v1/customerHappiness``:
https://desk.zoho.com/DeskAPIDocument#CustomerHappiness, its request parameters as
listed at https://developers.qodex.ai/zoho-desk/zoho-desk-api/customerhappiness/list-all-customerhappiness):

- Every ``/api/v1`` call needs a live ``Zoho-oauthtoken`` (else 401
  ``INVALID_OAUTH``) and the ``orgId`` header or query parameter of the
  organisation (missing: 422 ``UNPROCESSABLE_ENTITY``; another org's: 401
  ``OAUTH_ORG_MISMATCH``). Errors are ``{"errorCode", "message"}``.
- ``GET /api/v1/{module}`` (``from``, zero-based, ``limit`` 1..100, ``sortBy`` with
  ``-`` for descending): list items without ``modifiedTime`` and ``cf`` for
  contacts, as the OAS's list view object; 204 when empty.
- ``GET|PATCH /api/v1/{module}/{id}``, ``POST /api/v1/{module}``: the whole record;
  a mandatory field (``lastName``, ``accountName``, ``productName`` and
  ``departmentIds``) missing from a create or emptied by an update, or an
  ``accountId`` of no account, is 422 ``INVALID_DATA`` with
  ``errors: [{"fieldName": "/lastName", "errorType": "missing"}]``; an unknown id is
  404 ``URL_NOT_FOUND``.
- Tickets (``/api/v1/tickets``, the same calls): ``subject``, ``departmentId`` and
  ``contactId`` mandatory on a create; ``departmentId``, ``contactId`` (and a
  contact's ``accountId``) must name a record, and ``status`` one of ``statuses``
  (Open, On Hold, Escalated, Closed, and any a test adds), else 422 ``INVALID_DATA``;
  ``statusType`` (Open, On Hold or Closed) follows the status, the service's to set.
  ``GET /api/v1/contacts/{id}/tickets`` lists a contact's tickets.
- ``GET /api/v1/tickets/{id}/threads`` (each thread's ``summary``, not its
  ``content``; newest first unless ``sortBy=sendDateTime``), ``POST …/sendReply``
  (``channel`` and ``content`` mandatory, and for ``EMAIL`` a ``fromEmailAddress``
  that is an active From address; ``contentType`` ``plainText`` by default; an
  outgoing thread, the ticket left as it is),
  ``GET|POST …/comments`` (``content`` mandatory, ``isPublic``; oldest first unless
  ``sortBy=-commentedTime``); an unknown ticket
  is 404 ``URL_NOT_FOUND``. ``POST /api/v1/tickets/moveToTrash`` (``ticketIds``)
  moves tickets to the recycle bin (204), announced as deletes. A thread or comment
  added (by the API, or a person's:
  ``person_writes``, ``person_comments``) carries its ``ticketId``, moves the
  ticket's ``modifiedTime`` and is announced (``Ticket_Thread_Add``,
  ``Ticket_Comment_Add``, the thread or comment as the payload).
- ``GET /api/v1/departments`` (``from``, ``limit``): departments have no
  ``modifiedTime`` and no search; the API does not write them here (a person does,
  through ``/ui/departments``). Each department gets a default From address (its
  support address), listed by ``GET /api/v1/mailReplyAddress?departmentId=…``
  (``allDepartment`` for all; ``isActive``; ``from`` starts at 1 there).
- ``GET /api/v1/{module}/search``: ``email`` (comma-separated: any of them, the
  primary e-mail, case aside), ``accountName``, ``productName``, ``_all`` (any
  column holding the text), ``customField1``..``10`` (``cf_name:value``),
  and for tickets ``phone``, ``subject``, ``departmentId``, ``status`` (comma-separated),
  ``modifiedTimeRange`` (``from,to``), ``sortBy`` (``modifiedTime``,
  ``createdTime``, ``relevance``), ``from`` 0..999, ``limit`` 1..100; an unknown
  parameter is 422, and so is a custom field the module lacks (``without_sync_key``).
  ``{"data", "count"}`` or 204.
- ``GET|POST /api/v1/webhooks``, ``PATCH|DELETE /api/v1/webhooks/{id}``: creating
  one (or changing its URL) checks the URL with a GET that must answer 200. A
  contact's, account's or ticket's create, update or delete (by the API or by ``person_*``)
  is POSTed to each webhook subscribed to its event as ``[{"eventType", "orgId",
  "eventTime", "payload", "prevState"?}]``, unless the write carried the header
  ``sourceId`` equal to the webhook's ``ignoreSourceId``; a callback answered 410
  deletes the webhook; ``drop_callbacks`` loses the next ones.
- ``GET /api/v1/customerHappiness``: the customers' happiness ratings, one a
  feedback (``customer_rates``: ``id``, ``rating`` ``GOOD``, ``OK`` or ``BAD``,
  ``feedback``, ``ratedTime``, ``ticketId``, ``contactId``, ``departmentId``,
  ``agentId``; with ``include=tickets`` the ticket's ``id``, ``ticketNumber`` and
  ``subject`` as ``ticket``). ``department`` is mandatory (a department's id, or
  ``allDepartment``), else 422; ``ticketId``, ``contactId``, ``agentId`` filter;
  ``startTime`` and ``endTime`` (milliseconds since the epoch, GMT) bound the rated
  time; ``rating`` (``good``, ``ok``, ``bad``); ``sortBy`` ``ratedTime`` or
  ``-ratedTime``; ``from`` (zero-based) and ``limit`` (1..100); 204 when empty. A
  rating is the customer's, on the feedback form, kept apart from its ticket: the
  reference documents it as a list of its own, by rated time, not as a field of the
  ticket, and says nothing of a rating moving the ticket's ``modifiedTime``; so here
  it leaves its ticket as it was (``modifiedTime`` too) and raises no webhook event
  (none is documented for it), the case the capture must survive.
- ``scopes``: ``Desk.contacts.ALL`` for contacts and accounts, ``Desk.products.ALL``,
  ``Desk.search.READ`` for searches, ``Desk.settings.ALL`` for webhooks; a call
  without its scope is 401 ``SCOPE_MISMATCH``.

A person's delete (``person_deletes``) moves the record to ``trash`` and is
announced as ``{"payload": {"id": …}}``.

Not emulated: the customer happiness list's ``duration``, ``startDate``/``endDate``,
``accountId`` and ``include`` of contacts or agents; ``Ticket_Comment_Update``, a
reply's effect on its ticket's status (Zoho may change it), writes of departments
through the API, the recycle bin's API and deletes through the API other than
``moveToTrash``, ``fields=``, ``include=`` and ``filters`` on the modules' lists;
API credits only as a count per window (``ops.emulators.zoho``), not Zoho's cost per
call.
Times are UTC with milliseconds, strictly increasing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from adapters.zoho.desk import ZohoDeskOptions
from adapters.zoho.oauth import Credentials
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ZohoEmulator

ORG_ID = "60001234567"
MODULES = ("contacts", "accounts", "products", "tickets", "departments")
WRITABLE = ("contacts", "accounts", "products", "tickets")
"""The modules the API writes (departments are a person's, through ``/ui``)."""
MANDATORY = {"contacts": ("lastName",), "accounts": ("accountName",),
             "products": ("productName", "departmentIds"),
             "tickets": ("subject", "departmentId", "contactId")}
REFERENCES = {"accountId": "accounts", "departmentId": "departments",
              "contactId": "contacts"}
"""Fields naming another record, which must exist."""
EVENT_PREFIX = {"contacts": "Contact", "accounts": "Account", "tickets": "Ticket"}
LIST_HIDES = {"contacts": ("modifiedTime", "cf")}
STATUSES = {"Open": "Open", "On Hold": "On Hold", "Escalated": "Open", "Closed": "Closed"}
"""A ticket's statuses and the status type each is (Zoho's default ones)."""
HAPPINESS = ("GOOD", "OK", "BAD")
"""A customer's happiness rating (the feedback form's Good, Okay and Bad)."""
SEARCH_PARAMS = {"email", "accountName", "productName", "_all", "modifiedTimeRange",
                 "sortBy", "from", "limit", "orgId", "phone", "subject", "departmentId",
                 "status", *(f"customField{n}" for n in range(1, 11))}


class ZohoDeskEmulator(ZohoEmulator):
    api_prefix = "/api/v1/"
    ui_modules = ("contacts", "accounts", "products", "tickets", "departments")
    SCOPES = frozenset({"Desk.contacts.ALL", "Desk.products.ALL", "Desk.tickets.ALL",
                        "Desk.search.READ", "Desk.basic.READ", "Desk.settings.ALL"})

    def __init__(self, *, token_ttl: float = 3600.0) -> None:
        super().__init__(token_ttl=token_ttl)
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES}
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.trash: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES}
        self.statuses = dict(STATUSES)
        self.from_addresses: list[dict[str, Any]] = []  # each department's From addresses
        self.threads: dict[str, list[dict[str, Any]]] = {}  # by ticket id
        self.comments: dict[str, list[dict[str, Any]]] = {}  # by ticket id
        self.happiness: list[dict[str, Any]] = []  # the customers' ratings, as given
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

    def customer_rates(self, ticket_id: str, rating: str, *, feedback: str = "") -> str:
        """The ticket's customer rates it on the feedback form (``GOOD``, ``OK`` or
        ``BAD``): a rating of its own, the ticket left as it was, nothing announced."""
        if rating not in HAPPINESS:
            raise ValueError(f"a rating is one of {HAPPINESS}, not {rating!r}")
        ticket = self.records["tickets"][ticket_id]
        rated = {"id": str(next(self._ids)), "rating": rating, "feedback": feedback,
                 "ratedTime": self._now(), "ticketId": ticket_id,
                 "contactId": ticket.get("contactId"),
                 "departmentId": ticket.get("departmentId"),
                 "agentId": ticket.get("assigneeId")}
        self.happiness.append(rated)
        return str(rated["id"])

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
        if parts[3] in ("tickets", "departments", "mailReplyAddress", "customerHappiness"):
            return "Desk.tickets.ALL"
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
        app.router.add_get("/api/v1/contacts/{id}/tickets", self._contact_tickets)
        app.router.add_get("/api/v1/mailReplyAddress", self._from_addresses)
        app.router.add_get("/api/v1/customerHappiness", self._customer_happiness)
        app.router.add_get("/api/v1/tickets/{id}/threads", self._threads)
        app.router.add_post("/api/v1/tickets/{id}/sendReply", self._send_reply)
        app.router.add_get("/api/v1/tickets/{id}/comments", self._comments)
        app.router.add_post("/api/v1/tickets/{id}/comments", self._comment)
        app.router.add_post("/api/v1/tickets/moveToTrash", self._move_to_trash)
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
        return _page([{k: v for k, v in r.items() if k not in hidden} for r in records])

    async def _get_one(self, request: web.Request) -> web.Response:
        record = self._table(request).get(request.match_info["id"])
        if record is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        return web.json_response(record)

    async def _post(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        self._writable(request)
        body = await request.json()
        problem = self._invalid(module, body, None)
        if problem is not None:
            return problem
        record = self._create(module, body)
        self._announce(module, "Add", record, source=request.headers.get("sourceId"))
        return web.json_response(record)

    async def _patch(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        current = self._writable(request).get(request.match_info["id"])
        if current is None:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        body = await request.json()
        problem = self._invalid(module, body, current)
        if problem is not None:
            return problem
        record = self._update(module, current, body)
        self._announce(module, "Update", record, source=request.headers.get("sourceId"))
        return web.json_response(record)

    def _writable(self, request: web.Request) -> dict[str, dict[str, Any]]:
        table = self._table(request)
        if request.match_info["module"] not in WRITABLE:
            raise _raise(405, "METHOD_NOT_ALLOWED", "The API does not write this module here.")
        return table

    def _invalid(self, module: str, body: dict[str, Any],
                 current: dict[str, Any] | None) -> web.Response | None:
        # A create needs every mandatory field; an update may not empty one it names.
        errors = _missing(body, [n for n in MANDATORY[module] if current is None or n in body])
        errors += [{"fieldName": f"/{name}", "errorType": "invalid", "errorMessage": ""}
                   for name, target in REFERENCES.items()
                   if body.get(name) and str(body[name]) not in self.records[target]]
        if module == "tickets" and "status" in body and body["status"] not in self.statuses:
            errors.append({"fieldName": "/status", "errorType": "invalid", "errorMessage": ""})
        return None if not errors else _invalid_data(errors)

    def _create(self, module: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        record_id = str(next(self._ids))
        record = {"id": record_id, **fields, "cf": dict(fields.get("cf") or {}),
                  "createdTime": now, "modifiedTime": now}
        if module == "tickets":
            record = {"ticketNumber": str(len(self.records["tickets"]) + 101),
                      "status": "Open", "channel": "Email", "priority": None,
                      "dueDate": None, "assigneeId": None, "email": None, "phone": None,
                      **record}
        elif module == "departments":
            record = {"id": record_id, "isEnabled": True, "isDefault": False,
                      "description": None, **fields, "createdTime": now}
            self.from_addresses.append({  # the department's support address
                "id": str(next(self._ids)), "departmentId": record_id, "isActive": True,
                "isDepartmentDefault": True, "displayName": str(fields.get("name")),
                "address": f"support.{record_id}@{ORG_ID}.zohodesk.example"})
        self._derive(module, record)
        self.records[module][record_id] = record
        self.writes += 1
        return record

    def _derive(self, module: str, record: dict[str, Any]) -> None:
        """What the service sets: a ticket's status type."""
        if module == "tickets":
            record["statusType"] = self.statuses.get(record.get("status") or "", "Open")

    def _update(self, module: str, current: dict[str, Any],
                fields: dict[str, Any]) -> dict[str, Any]:
        for name, value in fields.items():
            if name == "cf":
                current["cf"] = {**current.get("cf", {}), **(value or {})}
            else:
                current[name] = value
        self._derive(module, current)
        if module != "departments":  # a department has no modified time
            current["modifiedTime"] = self._now()
        self.writes += 1
        return current

    async def _search(self, request: web.Request) -> web.Response:
        if request.match_info["module"] == "departments":
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
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
        for name in ("accountName", "productName", "subject"):
            if name in query:
                records = [r for r in records if _like(r.get(name), query[name])]
        if "phone" in query:
            records = [r for r in records if str(r.get("phone") or "") == query["phone"]]
        if "departmentId" in query:
            records = [r for r in records if r.get("departmentId") == query["departmentId"]]
        if "status" in query:
            wanted = set(query["status"].split(","))
            records = [r for r in records if r.get("status") in wanted]
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

    # -- a ticket's threads and comments, a contact's tickets -----------------------

    def _ticket(self, request: web.Request) -> str:
        self._table_org(request)
        ticket_id = request.match_info["id"]
        if ticket_id not in self.records["tickets"]:
            raise _raise(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        return ticket_id

    async def _contact_tickets(self, request: web.Request) -> web.Response:
        self._table_org(request)
        if request.match_info["id"] not in self.records["contacts"]:
            return _error(404, "URL_NOT_FOUND", "The URL you requested could not be found.")
        start, limit = _paging(request, reach=None)
        tickets = [t for t in self.records["tickets"].values()
                   if t.get("contactId") == request.match_info["id"]]
        return _page(_sorted(tickets, request.query.get("sortBy"))[start:start + limit])

    async def _threads(self, request: web.Request) -> web.Response:
        """Newest first unless ``sortBy=sendDateTime`` (Thread.json: descending by
        default, a ``-`` prefix for descending)."""
        start, limit = _paging(request, reach=None)
        threads = self.threads.get(self._ticket(request), [])
        if request.query.get("sortBy") != "sendDateTime":
            threads = threads[::-1]
        return _page([{k: v for k, v in t.items() if k != "content"}
                      for t in threads[start:start + limit]])

    async def _send_reply(self, request: web.Request) -> web.Response:
        ticket_id = self._ticket(request)
        body = await request.json()
        mandatory = ("channel", "content", *(("fromEmailAddress",)
                                             if body.get("channel") == "EMAIL" else ()))
        errors = _missing(body, mandatory)
        if body.get("fromEmailAddress") and body["fromEmailAddress"] not in {
                a["address"] for a in self.from_addresses if a["isActive"]}:
            errors.append({"fieldName": "/fromEmailAddress", "errorType": "invalid",
                           "errorMessage": "not a From address of the help desk"})
        if errors:
            return _invalid_data(errors)
        content = str(body["content"])
        thread = {"id": str(next(self._ids)), "ticketId": ticket_id,
                  "channel": body["channel"], "direction": "out",
                  "status": "SUCCESS", "isForward": bool(body.get("isForward")),
                  "contentType": body.get("contentType", "plainText"), "content": content,
                  "summary": content[:100], "to": body.get("to"),
                  "fromEmailAddress": body.get("fromEmailAddress"), "visibility": "public",
                  "author": {"name": "API agent", "type": "AGENT"},
                  "createdTime": self._now(), "hasAttach": False}
        return self._added(self.threads, ticket_id, thread,
                           source=request.headers.get("sourceId"))

    async def _move_to_trash(self, request: web.Request) -> web.Response:
        """``POST /api/v1/tickets/moveToTrash`` ``{"ticketIds": [...]}``: to the recycle
        bin, announced like a person's delete; 204. An id of no live ticket is 422."""
        self._table_org(request)
        ids = [str(i) for i in (await request.json()).get("ticketIds") or []]
        if not ids or any(i not in self.records["tickets"] for i in ids):
            return _invalid_data([{"fieldName": "/ticketIds", "errorType": "invalid",
                                   "errorMessage": ""}])
        for ticket_id in ids:
            self.trash["tickets"][ticket_id] = self.records["tickets"].pop(ticket_id)
            self.writes += 1
            self._announce("tickets", "Delete", {"id": ticket_id, "modifiedTime": self._now()},
                           source=request.headers.get("sourceId"))
        return web.Response(status=204)

    async def _from_addresses(self, request: web.Request) -> web.Response:
        self._table_org(request)
        department = request.query.get("departmentId")
        if not department:
            return _invalid_data(_missing({}, ("departmentId",)))
        start, limit = _paging(request, reach=None, first=1)
        found = [a for a in self.from_addresses
                 if department in ("allDepartment", a["departmentId"])
                 and request.query.get("isActive", str(a["isActive"]).lower())
                 == str(a["isActive"]).lower()]
        return _page(found[start - 1:start - 1 + limit])

    async def _customer_happiness(self, request: web.Request) -> web.Response:
        self._table_org(request)
        query = request.query
        department = query.get("department")
        if not department:
            return _invalid_data(_missing({}, ("department",)))
        start, limit = _paging(request, reach=None)
        found = [r for r in self.happiness
                 if department in ("allDepartment", r["departmentId"])
                 and all(query[k] == r[k] for k in ("ticketId", "contactId", "agentId")
                         if k in query)
                 and query.get("rating", r["rating"]).upper() == r["rating"]]
        try:
            low = int(query.get("startTime", "0"))
            high = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return _error(422, "UNPROCESSABLE_ENTITY", "startTime and endTime are"
                          " milliseconds since the epoch")
        found = [r for r in found if low <= _millis(r["ratedTime"])
                 and (high is None or _millis(r["ratedTime"]) <= high)]
        sort_by = query.get("sortBy", "ratedTime")
        if sort_by.lstrip("-") != "ratedTime":
            return _error(422, "UNPROCESSABLE_ENTITY", "sortBy is ratedTime")
        found.sort(key=lambda r: (_millis(r["ratedTime"]), int(r["id"])),
                   reverse=sort_by.startswith("-"))
        page = [dict(r) for r in found[start:start + limit]]
        if "tickets" in query.get("include", "").split(","):
            for rated in page:
                ticket = self.records["tickets"].get(rated["ticketId"]) or {}
                rated["ticket"] = {"id": rated["ticketId"], "subject": ticket.get("subject"),
                                   "ticketNumber": ticket.get("ticketNumber")}
        return _page(page)

    async def _comments(self, request: web.Request) -> web.Response:
        """Oldest first unless ``sortBy=-commentedTime`` (TicketComment.json: ascending
        by default)."""
        start, limit = _paging(request, reach=None)
        comments = self.comments.get(self._ticket(request), [])
        if request.query.get("sortBy") == "-commentedTime":
            comments = comments[::-1]
        return _page(comments[start:start + limit])

    async def _comment(self, request: web.Request) -> web.Response:
        ticket_id = self._ticket(request)
        body = await request.json()
        if not body.get("content"):
            return _invalid_data(_missing(body, ("content",)))
        return self._added(self.comments, ticket_id, {
            "id": str(next(self._ids)), "ticketId": ticket_id,
            "content": str(body["content"]),
            "isPublic": bool(body.get("isPublic", False)),
            "contentType": body.get("contentType", "plainText"),
            "commenter": {"name": "API agent", "type": "AGENT"},
            "commentedTime": self._now(), "modifiedTime": None},
            source=request.headers.get("sourceId"))

    def person_writes(self, ticket_id: str, content: str, *, direction: str = "in",
                      author: str = "A Customer") -> str:
        """A thread a person adds to a ticket (the customer's message, ``in``; an
        agent's reply from the desk's own pages, ``out``), announced."""
        thread = {"id": str(next(self._ids)), "ticketId": ticket_id, "channel": "EMAIL",
                  "direction": direction, "status": "SUCCESS", "isForward": False,
                  "contentType": "plainText", "content": content, "summary": content[:100],
                  "visibility": "public", "createdTime": self._now(), "hasAttach": False,
                  "author": {"name": author, "type": "END_USER" if direction == "in"
                             else "AGENT"}}
        self._added(self.threads, ticket_id, thread, source=None)
        return str(thread["id"])

    def person_comments(self, ticket_id: str, content: str, *,
                        author: str = "An Agent") -> str:
        """An agent's internal comment on a ticket, made on the desk's pages, announced."""
        comment = {"id": str(next(self._ids)), "ticketId": ticket_id, "content": content,
                   "isPublic": False, "contentType": "plainText",
                   "commenter": {"name": author, "type": "AGENT"},
                   "commentedTime": self._now(), "modifiedTime": None}
        self._added(self.comments, ticket_id, comment, source=None)
        return str(comment["id"])

    def _added(self, kept: dict[str, list[dict[str, Any]]], ticket_id: str,
               item: dict[str, Any], *, source: str | None) -> web.Response:
        """A thread or comment added to a ticket, announced (``Ticket_Thread_Add``,
        ``Ticket_Comment_Add``), and the answer that shows it. The ticket's
        ``modifiedTime`` moves with it, as its conversation's latest time."""
        kept.setdefault(ticket_id, []).append(item)
        self.writes += 1
        ticket = self.records["tickets"][ticket_id]
        ticket["modifiedTime"] = item.get("createdTime") or item["commentedTime"]
        event_type = "Ticket_Thread_Add" if kept is self.threads else "Ticket_Comment_Add"
        self._announce_event(event_type, dict(item), ticket["modifiedTime"], source=source)
        return web.json_response(item)

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
        self._announce_event(f"{prefix}_{action}", {"id": record["id"]} if action == "Delete"
                             else dict(record), record["modifiedTime"], source=source)

    def _announce_event(self, event_type: str, payload: dict[str, Any], when: str, *,
                        source: str | None) -> None:
        for hook in list(self.webhooks.values()):
            if not hook.get("isEnabled", True) or event_type not in hook["subscriptions"]:
                continue
            if source and source == hook.get("ignoreSourceId"):
                continue
            event = {"eventType": event_type, "orgId": ORG_ID,
                     "eventTime": str(int(_time(when).timestamp() * 1000)),
                     "payload": payload}
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


def _paging(request: web.Request, *, reach: int | None, first: int = 0) -> tuple[int, int]:
    """``from`` (``first`` the first record's index) and ``limit`` (1..100)."""
    try:
        start = int(request.query.get("from", str(first)))
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise _raise(422, "UNPROCESSABLE_ENTITY", "from and limit are numbers") from None
    if not 1 <= limit <= 100 or start < first or (reach is not None and start > reach):
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


def _millis(value: str) -> int:
    return int(_time(value).timestamp() * 1000)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": code, "message": message}, status=status)


def _missing(body: dict[str, Any], names: Sequence[str]) -> list[dict[str, str]]:
    """An ``INVALID_DATA`` answer's errors for the fields of ``names`` that ``body``
    leaves empty."""
    return [{"fieldName": f"/{name}", "errorType": "missing", "errorMessage": ""}
            for name in names if body.get(name) in (None, "", [])]


def _invalid_data(errors: list[dict[str, str]]) -> web.Response:
    return web.json_response({
        "errorCode": "INVALID_DATA", "errors": errors,
        "message": "The data does not comply to the validation restrictions defined."},
        status=422)


def _page(items: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"data": items}) if items else web.Response(status=204)


class _Raised(web.HTTPException):
    """An error answer raised from a helper (``status_code`` set per instance)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"errorCode": code, "message": message}),
                         content_type="application/json")


_raise = _Raised
