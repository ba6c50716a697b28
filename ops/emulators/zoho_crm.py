"""An emulator of the Zoho CRM REST v8 records API and its OAuth token endpoint, for
the Zoho CRM adapter's tests (``adapters/zoho/crm.py``).

It follows Zoho's OpenAPI file ``v8.0/record.json`` (``zoho/crm-oas`` at 45dff2c)
and the OAuth guide, for what the adapter uses:

- ``POST /oauth/v2/token`` (``grant_type=refresh_token``): an access token for
  ``token_ttl`` seconds and the ``api_domain``; unknown credentials get Zoho's
  ``{"error": "invalid_client"}`` (with 200, as Zoho answers).
- Every ``/crm/v8`` call needs ``Authorization: Zoho-oauthtoken …`` of a live token,
  else 401 ``INVALID_TOKEN``.
- ``GET /crm/v8/{Module}?ids=a,b`` (at most 100) and lists: only the ``fields``
  asked for (required, at most 50), the ``id`` and the ``$`` keys; ``GET /crm/v8/{Module}/{id}``,
  ``GET /crm/v8/{Module}/search`` with ``email`` (every e-mail field, case aside)
  or ``criteria=(Field:equals:value)`` (backslash escapes): ``{"data", "info"}``,
  or 204 when nothing matches.
- ``POST /crm/v8/{Module}/upsert`` (``duplicate_check_fields``),
  ``PUT /crm/v8/{Module}`` (Update Records, each with its ``id``) and
  ``PUT /crm/v8/{Module}/{id}``: at most 100 records a call (else
  ``LIMIT_EXCEEDED``); an outcome per record, in order, ``SUCCESS`` with ``details`` (id,
  times) or an error (``MANDATORY_NOT_FOUND`` with the field's ``api_name``,
  ``INVALID_DATA`` for a lookup to no record).
- ``faults``: scripted answers for the next calls (429 with ``Retry-After``, 5xx).

- ``POST``/``PATCH /crm/v8/actions/watch`` (``notifications.json``): channels with
  their events, token, notify URL and expiry (a week at most); ``notify`` posts a
  notification to each live channel watching a module (``drop_notifications``:
  the next ones are lost).
- Lists: ``If-Modified-Since``, ``sort_by``, ``page``/``per_page``, ``page_token``;
  ``Leads`` leaves converted leads (``$converted``) out unless ``converted`` is
  ``true`` or ``both``; ``Notes`` (``v8.0/notes.json``) ignores ``If-Modified-Since``
  and has no ``deleted`` list (400).
- ``GET /crm/v8/{Module}/deleted`` (``getDeletedRecords``): ``type``, paging,
  ``If-Modified-Since``; ``person_deletes`` puts a record there.

- Bulk read (``bulk_read.json``): ``POST /crm/bulk/v8/read`` (module, fields, page)
  adds a job over the module's records as they are then, ``bulk_per_page`` a page
  (Zoho's 200,000); ``GET …/read/{job_id}`` says ``ADDED`` for ``bulk_seconds``, then
  ``COMPLETED`` with its ``result``; ``GET …/read/{job_id}/result`` is a ZIP of one
  CSV (``Id`` and the fields asked for, a lookup's id, empty cells for nulls);
  ``expire_bulk_jobs`` forgets the jobs (404 ``RESOURCE_NOT_FOUND``, as after a day).
  The job's ``callback`` is not posted (the adapter asks for the state).

- ``GET /crm/v8/settings/fields?module=…`` (``fields.json``): the standard fields,
  the external-id field and ``custom_fields``, by API name, and the Deals' ``Stage``
  picklist with each value's ``forecast_type`` (``stages``).
- ``scopes``: ``ZohoCRM.modules.ALL`` for records, ``ZohoCRM.settings.ALL`` for
  ``settings/fields``, ``ZohoCRM.notifications.ALL`` for ``actions/watch``,
  ``ZohoCRM.bulk.READ`` for the bulk read; a call without its scope is 401
  ``OAUTH_SCOPE_MISMATCH``.

Not emulated (not used yet): COQL, bulk write, restoring from the recycle bin; credits only as
a count per window (``ops.emulators.zoho``), not Zoho's cost per call. Times
have milliseconds (Zoho's whole seconds), so a test's edits a moment apart order.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import itertools
import json
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from adapters.zoho.crm import ZohoCrmOptions
from adapters.zoho.crm_fields import FIELDS, MANDATORY, MODULES, from_zoho
from adapters.zoho.oauth import Credentials
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ZohoEmulator
from projections.events import ChangeEvent

ORG_ZONE = dt.timezone(dt.timedelta(hours=5, minutes=30))
class ZohoCrmEmulator(ZohoEmulator):
    api_prefix = "/crm/"
    SCOPES = frozenset({"ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL",
                        "ZohoCRM.notifications.ALL", "ZohoCRM.bulk.READ"})

    def __init__(self, *, token_ttl: float = 3600.0) -> None:
        super().__init__(token_ttl=token_ttl)
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODULES.values()}
        self.deleted: dict[str, list[dict[str, Any]]] = {m: [] for m in MODULES.values()}
        self.mandatory: dict[str, set[str]] = {MODULES[m]: {f} for m, f in MANDATORY.items()}
        self.writes = 0
        self.without_sync_key: set[str] = set()  # modules lacking the external-id field
        self.channels: dict[Any, dict[str, Any]] = {}  # channel id -> its subscription
        self.drop_notifications = 0  # the next notifications never sent
        # method, channel id, expiry, when it was asked
        self.subscriptions: list[tuple[str, Any, dt.datetime, dt.datetime]] = []
        self.stages = {"Qualification": "Open", "Needs Analysis": "Open",
                       "Negotiation/Review": "Open", "Closed Won": "Closed Won",
                       "Closed Lost": "Closed Lost",
                       "Closed-Lost to Competition": "Closed Lost"}
        """The Deals' Stage picklist: each value's ``forecast_type``."""
        self.custom_fields: dict[str, set[str]] = {m: set() for m in MODULES.values()}
        """Each module's custom fields by API name (besides ``Syncd_Key``), as
        ``settings/fields`` lists them."""
        self.bulk_jobs: dict[str, dict[str, Any]] = {}
        self.bulk_seconds = 0.0
        self.bulk_per_page = 200_000
        self._version = 0  # moved by every write: the search indexes are built again
        self._indexes: dict[str, tuple[int, dict[str, dict[str, list[dict[str, Any]]]]]] = {}
        self._sorted: dict[str, tuple[int, list[tuple[dt.datetime, str]],
                                      list[dict[str, Any]]]] = {}
        self._ids = itertools.count(4_876_000_000_000_001)
        self._last = dt.datetime.now(ORG_ZONE)

    # -- test-facing -----------------------------------------------------------

    def module(self, module: str) -> dict[str, dict[str, Any]]:
        return self.records[MODULES[module]]

    def only(self, module: str) -> dict[str, Any]:
        (record,) = self.module(module).values()
        return record

    def edit(self, module: str, record_id: str, fields: dict[str, Any],
             *, sync_key_field: str = "Syncd_Key") -> ChangeEvent:
        """A person edits a record in the CRM: the change its capture reports."""
        record = self.module(module)[record_id]
        record.update(fields)
        record["Modified_Time"] = self._now()
        self._version += 1
        return self.change(module, record_id, sync_key_field=sync_key_field,
                           changed=sorted(fields))

    def change(self, module: str, record_id: str, *, sync_key_field: str = "Syncd_Key",
               changed: list[str] | None = None) -> ChangeEvent:
        """The change the CRM's capture reports of a record as it is now (in the
        sync's names, as the adapter's capture will)."""
        record = self.module(module)[record_id]
        values = from_zoho(module, record, sync_key_field=sync_key_field)
        names = {api: ours for ours, api in FIELDS[module].items()}
        return ChangeEvent(
            event_id=uuid.uuid4(), source="crm", module=module, record_id=record_id,
            op="update", values=values,
            changed=None if changed is None else [names.get(c, c) for c in changed],
            modified_at=dt.datetime.fromisoformat(record["Modified_Time"]),
            created_at=dt.datetime.fromisoformat(record["Created_Time"]), origin="user",
            captured_at=dt.datetime.now(dt.UTC))

    def options(self, *, secret: str = CLIENT_SECRET) -> ZohoCrmOptions:
        """The adapter's options for this emulator (its accounts server names it as
        the API host)."""
        return ZohoCrmOptions(Credentials(
            client_id=CLIENT_ID, client_secret=SecretStr(secret),
            refresh_token=SecretStr(REFRESH_TOKEN), accounts_url=self.url))

    async def notify(self, module: str, ids: list[str], operation: str = "update") -> int:
        """Zoho's notification of a change: posted to each live channel watching the
        module (``{Module}.all`` or ``{Module}.{operation}``); returns the statuses'
        count of 200s."""
        zoho_module, ok = MODULES[module], 0
        if self.drop_notifications:
            self.drop_notifications -= 1  # lost on the way: the poll must catch it
            return 0
        async with aiohttp.ClientSession() as session:
            for channel in list(self.channels.values()):
                if channel["expires"] < dt.datetime.now(dt.UTC) or not {
                        f"{zoho_module}.all", f"{zoho_module}.{operation}"} & set(
                        channel["events"]):
                    continue
                body = {"server_time": int(time.time() * 1000), "query_params": {},
                        "module": zoho_module, "resource_uri": f"{self.url}/crm/v8/"
                        f"{zoho_module}", "ids": ids, "affected_fields": [],
                        "operation": operation, "channel_id": channel["channel_id"],
                        "token": channel["token"]}
                async with session.post(channel["notify_url"], json=body) as response:
                    ok += response.status == 200
        return ok

    # -- the service -------------------------------------------------------------

    def unauthorized(self) -> web.Response:
        return web.json_response({"code": "INVALID_TOKEN", "details": {},
                                  "message": "invalid oauth token", "status": "error"},
                                 status=401)

    def too_many_requests(self, retry_after: float) -> web.Response:
        return web.json_response({"code": "TOO_MANY_REQUESTS", "details": {},
                                  "message": "API credits exhausted", "status": "error"},
                                 status=429, headers={"Retry-After": str(int(retry_after))})

    def table(self, module: str) -> dict[str, dict[str, Any]]:
        return self.module(module)

    async def person_create(self, module: str, fields: dict[str, Any]) -> str:
        record_id = self.person_creates(module, fields)
        await self.notify(module, [record_id], "insert")
        return record_id

    async def person_edit(self, module: str, record_id: str, fields: dict[str, Any]) -> None:
        self.edit(module, record_id, fields)
        await self.notify(module, [record_id], "update")

    def backdate(self, module: str, record_id: str, when: dt.datetime) -> None:
        """The record was last modified at ``when`` (long before a test began, say)."""
        self.module(module)[record_id]["Modified_Time"] = when.astimezone(ORG_ZONE).isoformat(
            timespec="milliseconds")
        self._version += 1

    def expire_bulk_jobs(self) -> None:
        self.bulk_jobs.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/crm/bulk/v8/read", self._bulk_add)
        app.router.add_get("/crm/bulk/v8/read/{job}", self._bulk_state)
        app.router.add_get("/crm/bulk/v8/read/{job}/result", self._bulk_result)
        app.router.add_get("/crm/v8/settings/fields", self._fields)
        app.router.add_post("/crm/v8/actions/watch", self._watch)
        app.router.add_patch("/crm/v8/actions/watch", self._watch)
        app.router.add_get("/crm/v8/{module}/search", self._search)
        app.router.add_get("/crm/v8/{module}/deleted", self._deleted)
        app.router.add_post("/crm/v8/{module}/upsert", self._upsert)
        app.router.add_get("/crm/v8/{module}/{id}", self._get_one)
        app.router.add_put("/crm/v8/{module}/{id}", self._update)
        app.router.add_put("/crm/v8/{module}", self._update_many)
        app.router.add_get("/crm/v8/{module}", self._get)

    def _now(self) -> str:
        """Increasing times at the org's offset (Zoho answers in the org's time zone).
        Zoho's have whole seconds; these have milliseconds, so that a test's edits a
        moment apart are ordered."""
        now = dt.datetime.now(ORG_ZONE).replace(microsecond=0) + dt.timedelta(
            milliseconds=dt.datetime.now().microsecond // 1000)
        self._last = max(now, self._last + dt.timedelta(milliseconds=1))
        return self._last.isoformat(timespec="milliseconds")

    async def _fields(self, request: web.Request) -> web.Response:
        """``GET /crm/v8/settings/fields?module=…`` (``fields.json``): the standard
        fields, the external-id field unless ``without_sync_key`` names the module, and
        ``custom_fields``."""
        module = request.query.get("module", "")
        ours = next((m for m, z in MODULES.items() if z == module), None)
        if ours is None:
            return _error(400, "INVALID_MODULE", "the module name given seems to be invalid")
        fields: list[dict[str, Any]] = [
            {"api_name": api, "data_type": "text", "custom_field": False, "external": None}
            for api in FIELDS[ours].values()]
        for field in fields:
            if (module, field["api_name"]) == ("Deals", "Stage"):
                field.update(data_type="picklist", pick_list_values=[
                    {"actual_value": value, "display_value": value, "forecast_type": kind}
                    for value, kind in self.stages.items()])
        if module not in self.without_sync_key:
            fields.append({"api_name": "Syncd_Key", "data_type": "text",
                           "custom_field": True,
                           "external": {"show": True, "type": "user",
                                        "allow_multiple_config": False}})
        fields += [{"api_name": api, "data_type": "text", "custom_field": True,
                    "external": None} for api in sorted(self.custom_fields[module])]
        return web.json_response({"fields": fields})

    async def _watch(self, request: web.Request) -> web.Response:
        """Subscribe (POST) or update (PATCH) channels; an expiry past a week is
        refused, none means an hour (Zoho's default)."""
        out = []
        for item in (await request.json()).get("watch") or []:
            now = dt.datetime.now(dt.UTC)
            expiry = dt.datetime.fromisoformat(item["channel_expiry"]) \
                if item.get("channel_expiry") else now + dt.timedelta(hours=1)
            if expiry > now + dt.timedelta(days=7, minutes=1):
                return _error(400, "INVALID_DATA", "channel_expiry more than a week away")
            if request.method == "PATCH" and item["channel_id"] not in self.channels:
                return _error(400, "INVALID_DATA", "no such channel")
            self.channels[item["channel_id"]] = {**item, "expires": expiry}
            self.subscriptions.append((request.method, item["channel_id"], expiry, now))
            out.append({"code": "SUCCESS", "status": "success",
                        "message": "Successfully subscribed for actions-watch of the given"
                        " module" if request.method == "POST"
                        else "Successfully updated the subscribe details",
                        "details": {"events": [{
                            "channel_expiry": expiry.isoformat(), "resource_uri":
                            f"{self.url}/crm/v8/{e.split('.')[0]}", "resource_id": "1",
                            "resource_name": e.split(".")[0],
                            "channel_id": str(item["channel_id"])}
                            for e in item.get("events", [])]}})
        return web.json_response({"watch": out})

    def scope_needed(self, request: web.Request) -> str:
        path = request.path
        if path.startswith("/crm/bulk/"):
            return "ZohoCRM.bulk.READ"
        if path.startswith("/crm/v8/settings/"):
            return "ZohoCRM.settings.ALL"
        if path.startswith("/crm/v8/actions/watch"):
            return "ZohoCRM.notifications.ALL"
        return "ZohoCRM.modules.ALL"

    def scope_refused(self) -> web.Response:
        return _error(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")

    async def _bulk_add(self, request: web.Request) -> web.Response:
        body = await request.json()
        query = body.get("query") or {}
        module = (query.get("module") or {}).get("api_name")
        if module not in self.records:
            return _error(400, "MODULE_NOT_SUPPORTED", "the module is not supported")
        page = query.get("page") or 1
        if not isinstance(page, int) or page < 1:
            return _error(400, "INVALID_DATA", "page")
        start = (page - 1) * self.bulk_per_page
        records = sorted(self.records[module].values(), key=lambda r: int(r["id"]))
        job_id = str(next(self._ids))
        now = self._now()
        self.bulk_jobs[job_id] = {
            "module": module, "fields": list(query.get("fields") or []), "page": page,
            "records": [dict(r) for r in records[start:start + self.bulk_per_page]],
            "more": start + self.bulk_per_page < len(records), "created": now,
            "ready_at": time.monotonic() + self.bulk_seconds}
        return web.json_response({"data": [{
            "status": "success", "code": "ADDED_SUCCESSFULLY",
            "message": "Added successfully.", "details": {
                "id": job_id, "operation": "read", "state": "ADDED",
                "created_by": {"id": "410888000000086001", "name": "Integration User"},
                "created_time": now}}], "info": {}}, status=201)

    def _bulk_job(self, request: web.Request) -> dict[str, Any]:
        job = self.bulk_jobs.get(request.match_info["job"])
        if job is None:
            raise web.HTTPNotFound(text=json.dumps({
                "code": "RESOURCE_NOT_FOUND", "details": {"resource": "job_id"},
                "message": "the requested resource doesn't exist", "status": "error"}),
                content_type="application/json")
        return job

    async def _bulk_state(self, request: web.Request) -> web.Response:
        job, job_id = self._bulk_job(request), request.match_info["job"]
        done = time.monotonic() >= job["ready_at"]
        entry: dict[str, Any] = {
            "id": job_id, "operation": "read", "state": "COMPLETED" if done else "ADDED",
            "query": {"module": {"api_name": job["module"], "id": "1"},
                      "fields": job["fields"], "page": job["page"]},
            "created_by": {"id": "410888000000086001", "name": "Integration User"},
            "created_time": job["created"], "file_type": "csv"}
        if done:
            entry["result"] = {"page": job["page"], "count": len(job["records"]),
                               "download_url": f"/crm/bulk/v8/read/{job_id}/result",
                               "per_page": self.bulk_per_page, "more_records": job["more"]}
        return web.json_response({"data": [entry]})

    async def _bulk_result(self, request: web.Request) -> web.Response:
        job, job_id = self._bulk_job(request), request.match_info["job"]
        if time.monotonic() < job["ready_at"]:
            return _error(400, "INVALID_REQUEST", "the job is not completed yet")
        text = io.StringIO()
        writer = csv.writer(text)
        columns = ["Id", *job["fields"]]
        writer.writerow(columns)
        for record in job["records"]:
            writer.writerow([_cell(record.get("id" if c == "Id" else c)) for c in columns])
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr(f"{job_id}.csv", text.getvalue())
        return web.Response(body=archive.getvalue(), content_type="application/zip",
                            headers={"Content-Disposition":
                                     f"attachment; filename={job_id}.zip"})

    def _table(self, request: web.Request) -> dict[str, dict[str, Any]]:
        module = request.match_info["module"]
        if module not in self.records:
            raise web.HTTPBadRequest(text='{"code": "INVALID_MODULE"}',
                                     content_type="application/json")
        return self.records[module]

    async def _get(self, request: web.Request) -> web.Response:
        """Records by ``ids`` or a list, with the ``fields`` asked for (required, 50 at
        most) and the ``id``, a field the record lacks as null."""
        table = self._table(request)
        ids = [i for i in request.query.get("ids", "").split(",") if i]
        fields = [f for f in request.query.get("fields", "").split(",") if f]
        if len(ids) > 100:
            return _error(400, "LIMIT_EXCEEDED", "more than 100 ids")
        if not fields:
            return _error(400, "REQUIRED_PARAM_MISSING", "fields is required")
        if len(fields) > 50:
            return _error(400, "LIMIT_EXCEEDED", "more than 50 fields")
        if ids:
            return _page([_only(table[i], fields) for i in ids if i in table])
        return self._list(request, list(table.values()), fields)

    def _by_modified(self, module: str) -> tuple[list[tuple[dt.datetime, str]],
                                                 list[dict[str, Any]]]:
        """The module's records by modification time (then id), and their keys, sorted
        once after each write (a list call reads a slice of them)."""
        cached = self._sorted.get(module)
        if cached is None or cached[0] != self._version:
            keyed = sorted(((dt.datetime.fromisoformat(r["Modified_Time"]), r["id"]), r)
                           for r in self.records[module].values())
            cached = self._sorted[module] = (self._version, [k for k, _ in keyed],
                                             [r for _, r in keyed])
        return cached[1], cached[2]

    def _list(self, request: web.Request, records: list[dict[str, Any]],
              fields: list[str]) -> web.Response:
        """A records list: ``If-Modified-Since`` (modified after it), ``sort_by`` and
        ``sort_order``, ``page``/``per_page`` (200 at most) up to the 2,000th record,
        ``page_token`` past it (not together with ``page``)."""
        query = request.query
        if "page" in query and "page_token" in query:
            return _error(400, "INVALID_REQUEST", "page and page_token together")
        since = request.headers.get("If-Modified-Since")
        if request.match_info["module"] == "Notes":
            since = None  # the Notes API (v8.0/notes.json) takes no If-Modified-Since
        if since or query.get("sort_by") == "Modified_Time":
            times, records = self._by_modified(request.match_info["module"])
            if since:
                records = records[bisect.bisect_right(
                    times, (dt.datetime.fromisoformat(since), "\uffff")):]
            if query.get("sort_order") == "desc":
                records = records[::-1]
        if request.match_info["module"] == "Leads":
            # Converted leads are left out unless asked for (``converted``).
            wanted = {"false": (False,), "true": (True,), "both": (False, True)}.get(
                query.get("converted", "false"), (False,))
            records = [r for r in records if bool(r.get("$converted")) in wanted]
        per_page = min(int(query.get("per_page", "200")), 200)
        if "page_token" in query:
            start = int(query["page_token"])
        else:
            start = (int(query.get("page", "1")) - 1) * per_page
            if start + per_page > 2000 and start >= 2000:
                return _error(400, "LIMIT_EXCEEDED", "use page_token past 2,000 records")
        chunk = [_only(r, fields) for r in records[start:start + per_page]]
        if not chunk:
            return web.Response(status=204)
        more = start + per_page < len(records)
        info: dict[str, Any] = {"per_page": per_page, "count": len(chunk),
                                "more_records": more}
        if "page_token" not in query:
            info["page"] = int(query.get("page", "1"))
        if more:
            info["next_page_token"] = str(start + per_page)
        return web.json_response({"data": chunk, "info": info})

    def person_deletes(self, module: str, record_id: str, *, permanently: bool = False) -> None:
        """A person deletes a record (into the recycle bin, or for good)."""
        record = self.module(module).pop(record_id)
        self._version += 1
        self.deleted[MODULES[module]].append({
            "deleted_by": {"name": "A Person", "id": "410888000000086001"},
            "id": record_id, "display_name": record.get("Last_Name")
            or record.get("Account_Name") or record.get("Product_Name"),
            "type": "permanent" if permanently else "recycle",
            "created_by": {"name": "A Person", "id": "410888000000086001"},
            "deleted_time": self._now()})

    async def _deleted(self, request: web.Request) -> web.Response:
        """``GET /crm/v8/{Module}/deleted`` (``type``, ``page``/``per_page`` up to
        200, ``If-Modified-Since`` on the deletion time)."""
        self._table(request)
        if request.match_info["module"] == "Notes":  # notes.json lists no deleted notes
            return _error(400, "INVALID_URL_PATTERN",
                          "Please check if the URL trying to access is a correct one")
        entries = list(self.deleted[request.match_info["module"]])
        kind = request.query.get("type", "all")
        if kind not in ("all", "recycle", "permanent"):
            return _error(400, "INVALID_DATA", "type is all, recycle or permanent")
        if kind != "all":
            entries = [e for e in entries if e["type"] == kind]
        since = request.headers.get("If-Modified-Since")
        if since:
            limit = dt.datetime.fromisoformat(since)
            entries = [e for e in entries
                       if dt.datetime.fromisoformat(e["deleted_time"]) > limit]
        per_page = min(int(request.query.get("per_page", "200")), 200)
        page = int(request.query.get("page", "1"))
        chunk = entries[(page - 1) * per_page:page * per_page]
        if not chunk:
            return web.Response(status=204)
        return web.json_response({"data": chunk, "info": {
            "per_page": per_page, "count": len(chunk), "page": page,
            "more_records": page * per_page < len(entries)}})

    def person_creates(self, module: str, fields: dict[str, Any]) -> str:
        """A person creates a record in the CRM (not through the API under test)."""
        now = self._now()
        record_id = str(next(self._ids))
        self.module(module)[record_id] = {"id": record_id, **fields, "Created_Time": now,
                                          "Modified_Time": now}
        self._version += 1
        return record_id

    async def _get_one(self, request: web.Request) -> web.Response:
        record = self._table(request).get(request.match_info["id"])
        return _page([record] if record else [])

    async def _search(self, request: web.Request) -> web.Response:
        table = self._table(request)
        if "email" in request.query:
            wanted = request.query["email"].strip().lower()
            found = [r for r in table.values() if any(
                isinstance(v, str) and v.strip().lower() == wanted
                for k, v in r.items() if k in ("Email", "Secondary_Email"))]
        elif "criteria" in request.query:
            found = self._matching(request.match_info["module"],
                                   _criteria(request.query["criteria"]))
        else:
            return _error(400, "REQUIRED_PARAM_MISSING", "criteria, email, phone or word")
        return _page(found)

    def _matching(self, module: str, conditions: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The records any condition holds for (``equals``: case and outer spaces
        aside), by an index of the fields asked for, built again after any write."""
        index = self._indexes.get(module)
        if index is None or index[0] != self._version:
            index = self._indexes[module] = (self._version, {})
        found: dict[str, dict[str, Any]] = {}
        for name, value in conditions:
            by_value = index[1].get(name)
            if by_value is None:
                by_value = index[1][name] = {}
                for record in self.records[module].values():
                    held = str(record.get(name, "")).strip().lower()
                    by_value.setdefault(held, []).append(record)
            for record in by_value.get(value.strip().lower(), []):
                found[record["id"]] = record
        return list(found.values())

    async def _upsert(self, request: web.Request) -> web.Response:
        table = self._table(request)
        body = await request.json()
        data, checks = body.get("data") or [], body.get("duplicate_check_fields") or []
        if len(data) > 100:
            return _error(400, "LIMIT_EXCEEDED", "more than 100 records")
        outcomes = []
        for record in data:
            current = next((r for r in table.values() if any(
                record.get(c) is not None and r.get(c) == record.get(c) for c in checks)),
                None)
            outcomes.append(self._write(request.match_info["module"], table, current,
                                        record))
        return web.json_response({"data": outcomes})

    async def _update(self, request: web.Request) -> web.Response:
        table = self._table(request)
        current = table.get(request.match_info["id"])
        if current is None:
            return _error(400, "INVALID_DATA", "the id given seems to be invalid")
        body = await request.json()
        return web.json_response({"data": [
            self._write(request.match_info["module"], table, current, record)
            for record in body.get("data") or []]})

    async def _update_many(self, request: web.Request) -> web.Response:
        """Update Records: each record names its ``id``; each has its own outcome."""
        table = self._table(request)
        data = (await request.json()).get("data") or []
        if len(data) > 100:
            return _error(400, "LIMIT_EXCEEDED", "more than 100 records")
        outcomes = []
        for record in data:
            current = table.get(str(record.get("id")))
            outcomes.append(self._write(request.match_info["module"], table, current, record)
                            if current is not None else {
                                "code": "INVALID_DATA", "details": {"api_name": "id"},
                                "message": "the id given seems to be invalid",
                                "status": "error"})
        return web.json_response({"data": outcomes})

    def _write(self, module: str, table: dict[str, dict[str, Any]],
               current: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
        merged = {**(current or {}), **record}
        for name in sorted(self.mandatory.get(module, ())):
            if merged.get(name) in (None, ""):
                return {"code": "MANDATORY_NOT_FOUND", "details": {"api_name": name},
                        "message": "required field not found", "status": "error"}
        for name, value in record.items():
            if isinstance(value, dict) and "id" in value and not any(
                    value["id"] in t for t in self.records.values()):
                return {"code": "INVALID_DATA", "details": {"api_name": name},
                        "message": "invalid data", "status": "error"}
        now = self._now()
        if current is None:
            record_id = str(next(self._ids))
            current = table[record_id] = {"id": record_id, "Created_Time": now}
            action = "insert"
        else:
            action = "update"
        for name, value in record.items():
            if isinstance(value, dict) and "id" in value:
                value = {"id": value["id"], "name": _name_of(self.records, value["id"])}
            current[name] = value
        current["Modified_Time"] = now
        self.writes += 1
        self._version += 1
        return {"code": "SUCCESS", "status": "success", "action": action,
                "message": "record added" if action == "insert" else "record updated",
                "details": {"id": current["id"], "Modified_Time": now,
                            "Created_Time": current["Created_Time"]}}


@asynccontextmanager
async def running_emulator(**options: Any) -> AsyncIterator[ZohoCrmEmulator]:
    emulator = ZohoCrmEmulator(**options)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def _page(records: list[dict[str, Any]]) -> web.Response:
    if not records:
        return web.Response(status=204)
    return web.json_response({"data": records, "info": {
        "per_page": 200, "count": len(records), "page": 1, "more_records": False}})


def _only(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """The fields asked for, the ``id`` and Zoho's ``$`` keys (``$converted``: those
    come whatever ``fields`` asks)."""
    return {"id": record["id"], **{name: record.get(name) for name in fields},
            **{k: v for k, v in record.items() if k.startswith("$")}}


def _cell(value: Any) -> str:
    """A value as the bulk read's CSV holds it: a lookup by its id, null as empty."""
    if isinstance(value, dict):
        value = value.get("id")
    return "" if value is None else str(value)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "details": {}, "message": message,
                              "status": "error"}, status=status)


def _criteria(text: str) -> list[tuple[str, str]]:
    """``(Field:equals:value)``, or up to ten of them joined by ``or`` in parentheses
    (``((Email:equals:a)or(Email:equals:b))``), each value's ``(``, ``)``, ``,`` and
    ``\\`` escaped: the ``(field, value)`` of each condition."""
    body = text.strip()
    if body.startswith("(("):
        body = body[1:-1]
    conditions: list[tuple[str, str]] = []
    position = 0
    while position < len(body):
        if conditions:
            if not body.startswith("or", position):
                raise _invalid_query("only 'or' joins conditions here")
            position += 2
        if body[position:position + 1] != "(":
            raise _invalid_query("a condition is (field:equals:value)")
        out, escaped, position = [], False, position + 1
        while position < len(body) and (escaped or body[position] != ")"):
            escaped = not escaped and body[position] == "\\"
            if not escaped:
                out.append(body[position])
            position += 1
        name, op, value = "".join(out).split(":", 2)
        if op != "equals":
            raise _invalid_query("only equals")
        conditions.append((name, value))
        position += 1
    if not 1 <= len(conditions) <= 10:
        raise _invalid_query("one to ten conditions")
    return conditions


def _invalid_query(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({
        "code": "INVALID_QUERY", "details": {}, "message": message, "status": "error"}),
        content_type="application/json")


def _name_of(records: dict[str, dict[str, dict[str, Any]]], record_id: str) -> str | None:
    for table in records.values():
        if record_id in table:
            return table[record_id].get("Account_Name") or table[record_id].get("Last_Name")
    return None
