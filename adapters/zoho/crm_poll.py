"""Zoho CRM's change capture: a poll, woken by notifications.

Every ``interval`` seconds, or at once when a notification arrives, the records of
each synced module modified since the module's cursor are fetched and captured
(``adapters.remote_capture``), and the cursor moves on. The poll is what captures:
a notification only wakes it (``WAKE_CHANNEL``, from whichever replica Zoho
called), so a notification lost costs one interval, never a change. One replica
polls at a time (a session advisory lock on the connection it listens on).

The first poll of a module reaches back ``first_window`` (the first sync's window,
SYNC-08): what it brings is captured as the first sync's (origin ``import``). The
cursor moves to the newest modification time seen, less ``OVERLAP``: Zoho's times
have whole seconds, so a record changed later in the same second as the newest one
is fetched again next time rather than missed (the capture takes a copy it has
seen for old news).

With ``notifications``, the poller subscribes the channel (``actions/watch``, its
token checked on every callback by the HTTP intake) and renews it when a quarter
of its span is left; a channel Zoho let expire is subscribed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import zlib
from dataclasses import dataclass

import structlog
from pydantic import SecretStr

from adapters.exclusive import run_exclusively
from adapters.remote_capture import WAKE_CHANNEL, RemoteCapture
from adapters.write_errors import WriteError
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_fields import module_name
from projections.db import CONNECTION_LOST, Conn

log = structlog.get_logger(__name__)

OVERLAP = dt.timedelta(seconds=1)
MODULES = ("accounts", "contacts", "products")  # accounts first: contacts name them
MAX_CHANNEL_SPAN = dt.timedelta(days=7)  # Zoho v4 and later
_POLL_ERRORS: tuple[type[BaseException], ...] = (WriteError, *CONNECTION_LOST)
_LOCK_BASE = 0x5359_4E43_4341_0000  # "SYNCCA" and the store's checksum


@dataclass(frozen=True)
class Notifications:
    notify_url: str
    """Where Zoho posts: the daemon's ``/webhooks/zoho-crm``, as Zoho reaches it."""
    token: SecretStr
    channel_id: int
    span: dt.timedelta = dt.timedelta(days=1)


class ZohoCrmPoll:
    def __init__(self, crm: ZohoCrm, capture: RemoteCapture, *, interval: float = 60.0,
                 first_window: dt.timedelta = dt.timedelta(days=30),
                 modules: tuple[str, ...] = MODULES,
                 notifications: Notifications | None = None) -> None:
        if notifications is not None and notifications.span > MAX_CHANNEL_SPAN:
            raise ValueError("a Zoho CRM notification channel lasts a week at most")
        self.crm = crm
        self.capture = capture
        self.interval = interval
        self.first_window = first_window
        self.modules = modules
        self.notifications = notifications
        self.channel_expiry: dt.datetime | None = None
        self.active = asyncio.Event()
        self.rounds = 0

    async def run(self, stop: asyncio.Event) -> None:
        """A root task: wait to be the store's one poller, then poll until ``stop``."""
        key = _LOCK_BASE + zlib.crc32(b"crm") % 0xFFFF
        await run_exclusively(self.capture.pool, key, stop, self._poll_while_held,
                              task="capture-crm", active=self.active)

    async def _poll_while_held(self, conn: Conn, stop: asyncio.Event) -> None:
        wake = asyncio.Event()

        def woken(*_: object) -> None:
            wake.set()

        await conn.add_listener(WAKE_CHANNEL, woken)
        try:
            while not stop.is_set():
                wake.clear()
                await self._keep_channel()
                await self.poll_all()
                self.rounds += 1
                await _first(stop, wake, timeout=self._sleep())
                await conn.fetchval("SELECT 1")  # the lock's connection is still ours
        finally:
            with contextlib.suppress(*CONNECTION_LOST):
                await conn.remove_listener(WAKE_CHANNEL, woken)

    def _sleep(self) -> float:
        if self.notifications is None or self.channel_expiry is None:
            return self.interval
        renew_in = (self._renew_at() - dt.datetime.now(dt.UTC)).total_seconds()
        return max(0.05, min(self.interval, renew_in))

    def _renew_at(self) -> dt.datetime:
        assert self.notifications is not None and self.channel_expiry is not None
        return self.channel_expiry - self.notifications.span / 4

    async def _keep_channel(self) -> None:
        """Subscribe the notification channel, or renew it when its time has come."""
        n = self.notifications
        now = dt.datetime.now(dt.UTC)
        if n is None or (self.channel_expiry is not None and now < self._renew_at()):
            return
        renew = self.channel_expiry is not None and now < self.channel_expiry
        try:
            self.channel_expiry = await self.crm.watch(
                channel_id=n.channel_id, notify_url=n.notify_url,
                token=n.token.get_secret_value(), expiry=now + n.span, renew=renew,
                events=[f"{module_name(m)}.all" for m in self.modules])
        except WriteError as err:
            log.warning("notification_channel_failed", store="crm",
                        error=f"{type(err).__name__}: {err}")
            return
        log.info("notification_channel_renewed" if renew else "notification_channel_subscribed",
                 store="crm", channel_id=n.channel_id,
                 expires=self.channel_expiry.isoformat())

    async def poll_all(self) -> None:
        for module in self.modules:
            try:
                await self.poll(module)
            except _POLL_ERRORS as err:
                log.warning("capture_poll_failed", store="crm", module=module,
                            error=f"{type(err).__name__}: {err}")
                return

    async def poll(self, module: str) -> int:
        """Capture ``module``'s changes since its cursor; return the events appended."""
        since = await self.capture.cursor(module)
        first = since is None
        if since is None:
            since = dt.datetime.now(dt.UTC) - self.first_window
        started = time.monotonic()
        records = await self.crm.modified_since(module, since)
        appended = await self.capture.observed(module, records,
                                               origin="import" if first else "user")
        newest = max((dt.datetime.fromisoformat(v["modified_time"]) for _, v in records),
                     default=since + OVERLAP)
        await self.capture.advance(module, newest - OVERLAP)
        if appended:
            log.info("capture_polled", store="crm", module=module, records=len(records),
                     changes=appended, seconds=round(time.monotonic() - started, 3))
        return appended


async def _first(stop: asyncio.Event, wake: asyncio.Event, *, timeout: float) -> None:
    """Wait for ``stop``, ``wake`` or ``timeout``, whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
