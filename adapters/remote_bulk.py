"""A remote store's first sync (SYNC-08) by its bulk read, resumable.

A hosted store's first poll of a module would list every record of the window, 200
a call; a store with a bulk read (``BulkReadable``: Zoho CRM's) is asked for the
whole module as jobs instead, a page of records a job: create the job, ask for its
state until it is done, download its file. Each page's records in the window are
captured in chunks (``RemoteCapture.observed``, origin ``import``), each chunk in a
transaction of its own.

Where it stands is kept in ``syncd.remote_bulk_reads`` (the job, its page, the rows
of it captured): a daemon killed at any point asks for the same job's file again and
captures from where it stood; a chunk captured but not counted is captured again as
old news (the capture has seen those copies), so nothing is lost or doubled. A job
the store no longer keeps is asked for again. When the last page is captured, the
module's poll cursor is set to when the first job was asked for (less the poll's
overlap): the poll then brings what changed while the jobs ran.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from adapters import metrics
from adapters.remote_capture import RemoteCapture, record_time
from projections.stores.port import Values

log = structlog.get_logger(__name__)

CHUNK = 5000
"""Records captured a transaction."""


@dataclass(frozen=True)
class BulkPage:
    count: int
    """Records in the job's file."""
    more: bool
    """Whether a next page holds more."""


class JobGone(Exception):
    """The store no longer keeps the job (or its file): ask for its page again."""


class BulkReadable(Protocol):
    def reads(self, module: str) -> bool:
        """Whether ``module``'s first poll is made by the bulk read."""
        ...

    async def start(self, module: str, page: int) -> str:
        """Ask for ``page`` (from 1) of ``module``'s records; the job's id."""
        ...

    async def page(self, job_id: str) -> BulkPage | None:
        """The job's page once it is done; None while it runs (``JobGone``: gone)."""
        ...

    async def rows(self, module: str, job_id: str) -> list[tuple[str, Values]]:
        """The done job's records, in its file's order: ``(id, values)``, the values
        with ``modified_time`` and ``created_time``."""
        ...


class BulkFirstRead:
    def __init__(self, bulk: BulkReadable, capture: RemoteCapture, *,
                 poll: float = 0.5, poll_cap: float = 10.0, chunk: int = CHUNK) -> None:
        self.bulk = bulk
        self.capture = capture
        self.poll = poll
        self.poll_cap = poll_cap
        self.chunk = chunk

    async def run(self, module: str, since: dt.datetime) -> int:
        """Capture (or go on capturing) every record of ``module`` modified after
        ``since``; set the module's cursor; return the events appended."""
        store, started = self.capture.store, time.monotonic()
        asked_at, page, job_id, done = await self._state(module)
        appended = 0
        while True:
            if job_id is None:
                job_id = await self.bulk.start(module, page)
                done = 0
                await self._save(module, page, job_id, done)
                log.info("bulk_read_job_added", store=store, module=module, page=page,
                         job_id=job_id)
            try:
                result = await self._finished(job_id)
                rows = [(record_id, values) for record_id, values
                        in await self.bulk.rows(module, job_id)
                        if record_time(values["modified_time"]) > since]
            except JobGone:
                log.info("bulk_read_job_gone", store=store, module=module, job_id=job_id)
                job_id = None
                continue
            for start in range(done, len(rows), self.chunk):
                chunk = rows[start:start + self.chunk]
                appended += await self.capture.observed(module, chunk, origin="import")
                done = start + len(chunk)
                await self._save(module, page, job_id, done)
                metrics.REMOTE_FIRST_SYNC_RECORDS.labels(store, module).inc(len(chunk))
                log.info("bulk_read_progress", store=store, module=module, page=page,
                         captured=done, of=len(rows))
            if not result.more:
                break
            page, job_id, done = page + 1, None, 0
            await self._save(module, page, job_id, done)
        await self.capture.advance(module, asked_at - dt.timedelta(seconds=1))
        await self._forget(module)
        log.info("bulk_read_finished", store=store, module=module, pages=page,
                 changes=appended, seconds=round(time.monotonic() - started, 3))
        return appended

    async def _finished(self, job_id: str) -> BulkPage:
        wait = self.poll
        while (result := await self.bulk.page(job_id)) is None:
            await asyncio.sleep(wait)
            wait = min(self.poll_cap, wait * 2)
        return result

    async def _state(self, module: str) -> tuple[dt.datetime, int, str | None, int]:
        async with self.capture.pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO syncd.remote_bulk_reads (store, module, asked_at)"
                " VALUES ($1, $2, now()) ON CONFLICT (store, module)"
                " DO UPDATE SET store = EXCLUDED.store"
                " RETURNING asked_at, page, job_id, captured", self.capture.store, module)
        assert row is not None
        return row["asked_at"], row["page"], row["job_id"], row["captured"]

    async def _save(self, module: str, page: int, job_id: str | None, captured: int) -> None:
        async with self.capture.pool.acquire() as conn:
            await conn.execute(
                "UPDATE syncd.remote_bulk_reads SET page = $3, job_id = $4, captured = $5"
                " WHERE store = $1 AND module = $2",
                self.capture.store, module, page, job_id, captured)

    async def _forget(self, module: str) -> None:
        async with self.capture.pool.acquire() as conn:
            await conn.execute("DELETE FROM syncd.remote_bulk_reads WHERE store = $1"
                               " AND module = $2", self.capture.store, module)

