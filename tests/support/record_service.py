"""A small fake HTTP record service, and the store adapter that writes to it: the
test bed of the command writer (``adapters.command_writer``) until the hosted
desk and CRM adapters and their emulators exist.

The service keeps records per module in memory and honours an idempotency key per
write (a write delivered again with its key has no second effect, as an upsert by
an external id would). Faults are scripted per request (``faults``: 429 with
``Retry-After``, 5xx, a hang longer than the client waits, a write applied but
never answered) or per record (``refuse``: an error envelope for every write of
that record).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from adapters.command_writer import Landed
from adapters.write_errors import Transient, classify_http
from projections.catalog import Side
from projections.stores.commands import Command


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
        record_id, record = self._apply(module, request.match_info.get("record_id"), key,
                                        body["values"])
        self.received.append(Received(loop.time(), key, record_key, 200))
        self.applied.set()
        if fault is not None and fault.kind == "apply_then_hang":
            await self._hang(fault.seconds)
        return web.json_response({"data": [{"code": "SUCCESS", "details": {
            "id": record_id, "record": record}}]})

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), seconds)

    def _apply(self, module: str, record_id: str | None, key: str,
               values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        table = self.records.setdefault(module, {})
        if key in self.by_key:  # delivered again: the first delivery's effect stands
            _, known = self.by_key[key]
            return known, table[known]
        now = dt.datetime.now(dt.UTC).isoformat()
        if record_id is None:
            record_id = str(next(self._ids))
            table[record_id] = {"id": record_id, "Created_Time": now}
        record = table.setdefault(record_id, {"id": record_id, "Created_Time": now})
        record.update(values)
        record["Modified_Time"] = now
        self.by_key[key] = (module, record_id)
        return record_id, record


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
        path = f"/v1/{command.module}" + (
            f"/{command.record_id}" if command.op == "update" else "")
        body = {"idempotency_key": str(command.idempotency_key),
                "record_key": command.record_key, "values": command.payload}
        method = self._session.patch if command.op == "update" else self._session.post
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
                      modified_time=dt.datetime.fromisoformat(record["Modified_Time"]),
                      created_time=dt.datetime.fromisoformat(record["Created_Time"]))
