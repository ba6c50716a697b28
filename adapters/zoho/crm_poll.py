"""Zoho CRM's change capture by polling: every ``interval`` seconds, the records of
each synced module modified since the module's cursor are fetched and captured
(``adapters.remote_capture``), and the cursor moves on. The first poll of a module
reaches back ``first_window`` (the first sync's window, SYNC-08): what it brings is
captured as the first sync's (origin ``import``).

The cursor moves to the newest modification time seen, less ``OVERLAP``: Zoho's
times have whole seconds, so a record changed later in the same second as the
newest one is fetched again next time rather than missed (the capture takes a copy
it has seen for old news). Notifications (``actions/watch``) are to come in front
of this poll; it stays as the reconciliation that catches what they miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import structlog

from adapters.remote_capture import RemoteCapture
from adapters.write_errors import WriteError
from adapters.zoho.crm import ZohoCrm
from projections.db import CONNECTION_LOST

log = structlog.get_logger(__name__)

OVERLAP = dt.timedelta(seconds=1)
MODULES = ("accounts", "contacts", "products")  # accounts first: contacts name them
_POLL_ERRORS: tuple[type[BaseException], ...] = (WriteError, *CONNECTION_LOST)


class ZohoCrmPoll:
    def __init__(self, crm: ZohoCrm, capture: RemoteCapture, *, interval: float = 60.0,
                 first_window: dt.timedelta = dt.timedelta(days=30),
                 modules: tuple[str, ...] = MODULES) -> None:
        self.crm = crm
        self.capture = capture
        self.interval = interval
        self.first_window = first_window
        self.modules = modules
        self.rounds = 0

    async def run(self, stop: asyncio.Event) -> None:
        """A root task: poll every module, then wait ``interval``, until ``stop``. A
        round that fails (the CRM or the database away) is logged and tried again
        at the next one; the cursor only moves once a module's changes are captured."""
        while not stop.is_set():
            for module in self.modules:
                try:
                    await self.poll(module)
                except _POLL_ERRORS as err:
                    log.warning("capture_poll_failed", store="crm", module=module,
                                error=f"{type(err).__name__}: {err}")
                    break
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def poll(self, module: str) -> int:
        """Capture ``module``'s changes since its cursor; return the events appended."""
        since = await self.capture.cursor(module)
        first = since is None
        if since is None:
            since = dt.datetime.now(dt.UTC) - self.first_window
        records = await self.crm.modified_since(module, since)
        appended = await self.capture.observed(module, records,
                                               origin="import" if first else "user")
        newest = max((dt.datetime.fromisoformat(v["modified_time"]) for _, v in records),
                     default=since + OVERLAP)
        await self.capture.advance(module, newest - OVERLAP)
        if appended:
            log.info("capture_polled", store="crm", module=module, records=len(records),
                     changes=appended)
        return appended
