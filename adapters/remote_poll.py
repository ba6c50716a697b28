"""A remote store's change capture by polling, woken by its notifications.

Every ``interval`` seconds, or at once when woken (``remote_capture.WAKE_CHANNEL``,
from whichever replica the store called), the records of each synced module
modified since the module's cursor are fetched and captured
(``adapters.remote_capture``), and the cursor moves on. A notification lost costs
one interval, never a change. One replica polls at a time (a session advisory lock
on the connection it listens on).

The first poll of a module reaches back ``first_window`` (the first sync's window,
SYNC-08): what it brings is captured as the first sync's (origin ``import``). The
cursor moves to the newest modification time seen, less ``OVERLAP``: a record
changed later in the same second as the newest one is fetched again next time
rather than missed (the capture takes a copy it has seen for old news).

A store with a bulk read (``remote_bulk.BulkReadable``: Zoho CRM's) has its first
poll of a module made by it instead (``remote_bulk.BulkFirstRead``, resumable).

A store whose adapter reports deletes (``DeletesPollable``: Zoho CRM's
``/deleted``) has them captured by the same rounds, from a cursor of their own.

A ``Subscription`` (the CRM's notification channel, the desk's webhook) is kept by
the poller: subscribed when it starts, renewed when the subscription says.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import zlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import structlog

from adapters.exclusive import run_exclusively
from adapters.remote_bulk import BulkFirstRead, BulkReadable
from adapters.remote_capture import WAKE_CHANNEL, RemoteCapture
from adapters.write_errors import WriteError
from projections.catalog import Side
from projections.db import CONNECTION_LOST, Conn
from projections.stores.port import Values

log = structlog.get_logger(__name__)

OVERLAP = dt.timedelta(seconds=1)
MODULES = ("accounts", "contacts", "products")  # accounts first: contacts name them
_POLL_ERRORS: tuple[type[BaseException], ...] = (WriteError, *CONNECTION_LOST)
_LOCK_BASE = 0x5359_4E43_4341_0000  # "SYNCCA" and the store's checksum


class Pollable(Protocol):
    store: Side

    async def modified_since(self, module: str, since: dt.datetime
                             ) -> list[tuple[str, Values]]:
        """The records of ``module`` modified after ``since`` (``(id, values)``, with
        ``modified_time`` and ``created_time``), each once."""
        ...


@runtime_checkable
class DeletesPollable(Protocol):
    async def deleted_since(self, module: str, since: dt.datetime
                            ) -> list[tuple[str, dt.datetime, bool]]:
        """The records of ``module`` deleted after ``since``: ``(id, deleted_time,
        permanently)``."""
        ...


class Subscription(Protocol):
    async def keep(self) -> dt.datetime | None:
        """Subscribe, or renew, if it is time; return when to be asked again (None:
        no need, or it could not be done: said in the log, asked again next round)."""
        ...


class RemotePoll:
    def __init__(self, source: Pollable, capture: RemoteCapture, *, interval: float = 60.0,
                 first_window: dt.timedelta = dt.timedelta(days=30),
                 modules: Sequence[str] = MODULES,
                 subscription: Subscription | None = None,
                 bulk: BulkReadable | None = None) -> None:
        self.source = source
        self.bulk = bulk
        self.capture = capture
        self.interval = interval
        self.first_window = first_window
        self.modules = tuple(modules)
        self.subscription = subscription
        self.active = asyncio.Event()
        self.rounds = 0
        self._ask_again: dt.datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """A root task: wait to be the store's one poller, then poll until ``stop``."""
        store = self.capture.store
        key = _LOCK_BASE + zlib.crc32(store.encode()) % 0xFFFF
        await run_exclusively(self.capture.pool, key, stop, self._poll_while_held,
                              task=f"capture-{store}", active=self.active)

    async def _poll_while_held(self, conn: Conn, stop: asyncio.Event) -> None:
        wake = asyncio.Event()

        def woken(_conn: object, _pid: object, _channel: object, payload: object) -> None:
            if payload == self.capture.store:
                wake.set()

        await conn.add_listener(WAKE_CHANNEL, woken)
        try:
            while not stop.is_set():
                wake.clear()
                await self._keep_subscription()
                await self.poll_all()
                self.rounds += 1
                await _first(stop, wake, timeout=self._sleep())
                await conn.fetchval("SELECT 1")  # the lock's connection is still ours
        finally:
            with contextlib.suppress(*CONNECTION_LOST):
                await conn.remove_listener(WAKE_CHANNEL, woken)

    async def _keep_subscription(self) -> None:
        now = dt.datetime.now(dt.UTC)
        if self.subscription is None or (self._ask_again is not None and now < self._ask_again):
            return
        self._ask_again = await self.subscription.keep()

    def _sleep(self) -> float:
        if self._ask_again is None:
            return self.interval
        due_in = (self._ask_again - dt.datetime.now(dt.UTC)).total_seconds()
        return max(0.05, min(self.interval, due_in))

    async def poll_all(self) -> None:
        for module in self.modules:
            try:
                await self.poll(module)
            except _POLL_ERRORS as err:
                log.warning("capture_poll_failed", store=self.capture.store, module=module,
                            error=f"{type(err).__name__}: {err}")
                return

    async def poll(self, module: str) -> int:
        """Capture ``module``'s changes since its cursor; return the events appended."""
        since = await self.capture.cursor(module)
        first = since is None
        if since is None:
            since = dt.datetime.now(dt.UTC) - self.first_window
            if self.bulk is not None and self.bulk.reads(module):
                appended = await BulkFirstRead(self.bulk, self.capture).run(module, since)
                if isinstance(self.source, DeletesPollable):
                    await self._poll_deletes(module, first=True)
                return appended
        started = time.monotonic()
        records = await self.source.modified_since(module, since)
        appended = await self.capture.observed(module, records,
                                               origin="import" if first else "user")
        newest = max((dt.datetime.fromisoformat(v["modified_time"]) for _, v in records),
                     default=since + OVERLAP)
        await self.capture.advance(module, newest - OVERLAP)
        if isinstance(self.source, DeletesPollable):
            appended += await self._poll_deletes(module, first)
        if appended:
            log.info("capture_polled", store=self.capture.store, module=module,
                     records=len(records), changes=appended,
                     seconds=round(time.monotonic() - started, 3))
        return appended


    async def _poll_deletes(self, module: str, first: bool) -> int:
        """Capture ``module``'s deletes since their own cursor (``module/deleted``);
        the first poll starts it now: what was deleted before was never synced."""
        key = f"{module}/deleted"
        since = await self.capture.cursor(key)
        if since is None or first:
            await self.capture.advance(key, dt.datetime.now(dt.UTC) - OVERLAP)
            return 0
        assert isinstance(self.source, DeletesPollable)
        deletes = await self.source.deleted_since(module, since)
        appended = await self.capture.deleted(module, deletes)
        newest = max((when for _, when, _ in deletes), default=since + OVERLAP)
        await self.capture.advance(key, newest - OVERLAP)
        return appended


async def _first(stop: asyncio.Event, wake: asyncio.Event, *, timeout: float) -> None:
    """Wait for ``stop``, ``wake`` or ``timeout``, whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
