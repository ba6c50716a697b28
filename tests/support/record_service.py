"""A small fake HTTP record service, and the remote store adapter for it (its
``RemoteReads`` and its writer's ``Target``): the test bed of the command writer
(``adapters.command_writer``) and of a deferred store in the sync, until the hosted
desk and CRM adapters and their emulators exist.

The service keeps records per module in memory, with the embedded stores' field
names (so the default mapping applies), and honours an idempotency key per write
(a write delivered again with its key has no second effect). A record created with
a sync key (``SYNC_KEY_FIELD``, its external-id field) is upserted by it, and a
value naming a sync key (a contact's account being created) is resolved to that
record's id, as a lookup by an external id would be. A write with
``if_unmodified_since`` is refused with 412 when the record is newer. Faults are
scripted per request (``faults``: 429 with ``Retry-After``, 5xx, a hang longer than
the client waits, a write applied but never answered) or per record (``refuse``:
an error envelope for every write of that record).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from adapters.command_writer import Backoff, Landed
from adapters.remote_store import RemoteStore
from adapters.write_errors import Transient, classify_http
from projections.catalog import Side
from projections.events import ChangeEvent
from projections.stores.commands import Command
from projections.stores.port import SYNC_KEY_FIELD, Found, Held, is_placeholder
from projections.sync_plan import held_keys


@dataclass
class Fault:
    kind: str  # status | hang | apply_then_hang
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 5.0


@dataclass
class Received:
    at: float
    key: str
    record_key: str
    answered: int


class RecordService:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.by_key: dict[str, tuple[str, str]] = {}
        self.faults: deque[Fault] = deque()
        self.refuse: dict[str, tuple[int, Any]] = {}
        self.received: list[Received] = []
        self.applied = asyncio.Event()
        self.release = asyncio.Event()  # ends every hang at once
        self._ids = itertools.count(1000)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/{module}", self._write)
        app.router.add_patch("/v1/{module}/{record_id}", self._write)
        app.router.add_get("/v1/{module}/search", self._search)
        app.router.add_get("/v1/{module}", self._read)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def effects(self) -> int:
        """Writes applied (a repeated key applies nothing)."""
        return len(self.by_key)

    async def _write(self, request: web.Request) -> web.Response:
        body = await request.json()
        module = request.match_info["module"]
        key, record_key = body["idempotency_key"], body["record_key"]
        loop = asyncio.get_running_loop()
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "status":
            self.received.append(Received(loop.time(), key, record_key, fault.status))
            return web.json_response(fault.body or {"code": "INTERNAL_ERROR"},
                                     status=fault.status, headers=fault.headers)
        if fault is not None and fault.kind == "hang":
            await self._hang(fault.seconds)
        if record_key in self.refuse:
            status, envelope = self.refuse[record_key]
            self.received.append(Received(loop.time(), key, record_key, status))
            return web.json_response(envelope, status=status)
        record_id = request.match_info.get("record_id")
        current = self._current(module, record_id, body["values"].get(SYNC_KEY_FIELD))
        limit = body.get("if_unmodified_since")
        if (current is not None and limit is not None and key not in self.by_key
                and dt.datetime.fromisoformat(current["modified_time"])
                > dt.datetime.fromisoformat(limit)):
            self.received.append(Received(loop.time(), key, record_key, 412))
            return web.json_response({"code": "STALE"}, status=412)
        values, unresolved = self._resolve(body["values"])
        if unresolved:
            self.received.append(Received(loop.time(), key, record_key, 400))
            return web.json_response({"code": "INVALID_DATA", "message": "no record has"
                                      f" the external id {unresolved}"}, status=400)
        record_id, record = self._apply(
            module, current["id"] if current else record_id, key, values)
        self.received.append(Received(loop.time(), key, record_key, 200))
        self.applied.set()
        if fault is not None and fault.kind == "apply_then_hang":
            await self._hang(fault.seconds)
        return web.json_response({"data": [{"code": "SUCCESS", "details": {
            "id": record_id, "record": record}}]})

    def _current(self, module: str, record_id: str | None,
                 sync_key: str | None) -> dict[str, Any] | None:
        table = self.records.get(module, {})
        if record_id is not None:
            return table.get(record_id)
        return next((r for r in table.values()
                     if sync_key and r.get(SYNC_KEY_FIELD) == sync_key), None)

    def _resolve(self, values: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Values naming a record by its sync key get that record's id."""
        out = dict(values)
        for name, value in values.items():
            if name != SYNC_KEY_FIELD and isinstance(value, str) and is_placeholder(value):
                held = next((r for t in self.records.values() for r in t.values()
                             if r.get(SYNC_KEY_FIELD) == value), None)
                if held is None:
                    return out, value
                out[name] = int(held["id"])
        return out, None

    async def _search(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        keys = set(request.query.getall("key", []))
        secondary = request.query.get("secondary") == "1"
        found = []
        for record in self.records.get(module, {}).values():
            if record.get("deleted"):
                continue
            for key, via in held_keys(module, record, secondary=secondary):
                if key in keys:
                    found.append({"id": record["id"], "key": key, "via_secondary": via,
                                  "record": record})
        return web.json_response({"data": found})

    async def _read(self, request: web.Request) -> web.Response:
        table = self.records.get(request.match_info["module"], {})
        ids = request.query.getall("id", [])
        return web.json_response({"data": [table[i] for i in ids if i in table]})

    def person_creates(self, module: str, values: dict[str, Any]) -> str:
        """A person creates a record in the service (not through the API under test)."""
        record_id, _ = self._apply(module, None, f"person:{uuid.uuid4()}", values)
        return record_id

    def edit(self, module: str, record_id: str, values: dict[str, Any]) -> ChangeEvent:
        """A person edits a record in the service: the change its capture reports."""
        record = self.records[module][record_id]
        record.update(values)
        record["modified_time"] = _now()
        return self.change(module, record_id, changed=sorted(values))

    def change(self, module: str, record_id: str, *,
               changed: list[str] | None = None) -> ChangeEvent:
        """The change the service's capture reports of a record as it is now."""
        record = self.records[module][record_id]
        return ChangeEvent(
            event_id=uuid.uuid4(), source="crm", module=module, record_id=record_id,
            op="update", values=dict(record), changed=changed,
            modified_at=dt.datetime.fromisoformat(record["modified_time"]),
            created_at=dt.datetime.fromisoformat(record["created_time"]), origin="user",
            captured_at=dt.datetime.now(dt.UTC))

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), seconds)

    def _apply(self, module: str, record_id: str | None, key: str,
               values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        table = self.records.setdefault(module, {})
        if key in self.by_key:  # delivered again: the first delivery's effect stands
            _, known = self.by_key[key]
            return known, table[known]
        now = _now()
        if record_id is None:
            record_id = str(next(self._ids))
        record = table.setdefault(record_id, {"id": record_id, "created_time": now,
                                              "deleted": False, "custom": {}})
        custom = {**record["custom"], **(values.get("custom") or {})}
        record.update(values)
        record["custom"] = {k: v for k, v in custom.items() if v is not None}
        record["deleted"] = False
        record["modified_time"] = now
        self.by_key[key] = (module, record_id)
        return record_id, record


@contextlib.asynccontextmanager
async def running_service() -> AsyncIterator[RecordService]:
    """A started service, stopped after (every hang released first)."""
    service = RecordService()
    await service.start()
    try:
        yield service
    finally:
        service.release.set()
        await service.stop()


class RecordServiceTarget:
    """The store adapter's write side for the fake service (``Target``)."""

    def __init__(self, url: str, store: Side = "crm") -> None:
        self.url = url
        self.store: Side = store
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def write(self, command: Command) -> Landed:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        by_id = command.op == "update" and command.record_id is not None
        path = f"/v1/{command.module}" + (f"/{command.record_id}" if by_id else "")
        values = dict(command.payload)
        if not by_id and is_placeholder(command.record_key):
            values[SYNC_KEY_FIELD] = command.record_key  # an upsert by the external id
        body = {"idempotency_key": str(command.idempotency_key),
                "record_key": command.record_key, "values": values,
                "if_unmodified_since": command.seen.isoformat() if command.seen else None}
        method = self._session.patch if by_id else self._session.post
        try:
            async with method(self.url + path, json=body) as response:
                answer = await response.json(content_type=None)
                if response.status >= 300:
                    raise classify_http(response.status, response.headers, answer)
        except aiohttp.ClientError as err:
            raise Transient(f"{type(err).__name__}: {err}") from None
        details = answer["data"][0]["details"]
        record = details["record"]
        return Landed(record_id=details["id"], values=record,
                      modified_time=dt.datetime.fromisoformat(record["modified_time"]),
                      created_time=dt.datetime.fromisoformat(record["created_time"]))


class RecordServiceReads:
    """The store adapter's read side for the fake service (``RemoteReads``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, params: list[tuple[str, str]]) -> list[Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(self.url + path, params=params) as response:
            response.raise_for_status()
            return list((await response.json())["data"])

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        if module not in ("contacts", "accounts") or not keys:
            return []
        rows = await self._get(f"/v1/{module}/search", [
            *(("key", k) for k in keys), ("secondary", "1" if secondary else "0")])
        return [Found(r["id"], r["record"], r["key"], r["via_secondary"]) for r in rows]

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        if not ids:
            return {}
        rows = await self._get(f"/v1/{module}", [("id", i) for i in ids])
        return {r["id"]: Held(r, dt.datetime.fromisoformat(r["modified_time"])) for r in rows}


def remote_store(url: str, *, concurrency: int = 8, **backoff: float) -> tuple[
        RemoteStore, RecordServiceReads, RecordServiceTarget]:
    """The fake service as a remote CRM (``Overrides.remote``), and its two clients
    (for the caller to close)."""
    reads, target = RecordServiceReads(url), RecordServiceTarget(url)
    return (RemoteStore(reads=reads, target=target, concurrency=concurrency,
                        backoff=Backoff(**backoff)), reads, target)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
