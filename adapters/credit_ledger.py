"""What a hosted store's organisation was charged, kept in the database
(``syncd.api_credits``, a row a minute), so that the credit budget
(``adapters.call_budget``) counts the whole window: what this process spent before
a restart, and what the other replicas spend, not only its own since it started.

Every ``every`` seconds (and once more when the daemon stops) the ledger adds what
the budget charged since the last time to its minute's row, reads the window's
rows, and tells the budget what they hold besides this process's own (``outside``),
each minute's counted as spent at the minute's end (it ages out no sooner than it
did). Rows older than the window (and an hour) are removed. Spending not yet
recorded when the database is away is kept and recorded the next time; what a
process spent in its last seconds before a crash is lost to the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter

import asyncpg
import structlog

from adapters.call_budget import CallBudget
from projections.catalog import Side
from projections.db import CONNECTION_LOST

log = structlog.get_logger(__name__)

_NOT_RECORDED: tuple[type[BaseException], ...] = (*CONNECTION_LOST, asyncpg.PostgresError)
RECORD_EVERY = 5.0
"""Seconds between two records of the spending (the replicas see each other's this
late at most)."""


def _minute(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at - at % 60, dt.UTC)


class CreditLedger:
    def __init__(self, pool: asyncpg.Pool, store: Side, budget: CallBudget, *,
                 every: float = RECORD_EVERY) -> None:
        self.pool = pool
        self.store = store
        self.budget = budget
        self.every = every
        self._pending: list[tuple[float, int]] = []
        self._mine: Counter[dt.datetime] = Counter()  # what this process recorded

    async def run(self, stop: asyncio.Event) -> None:
        """A root task: record every ``every`` seconds until ``stop``, then once more."""
        while True:
            try:
                await self.record()
            except _NOT_RECORDED as err:
                log.warning("credit_ledger_not_recorded", store=self.store,
                            error=f"{type(err).__name__}: {err}")
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    async def record(self) -> None:
        """Record the budget's new spending; tell it what the window holds besides."""
        self._pending += self.budget.unrecorded()
        spent: Counter[dt.datetime] = Counter()
        for at, cost in self._pending:
            spent[_minute(at)] += cost
        window = dt.timedelta(seconds=self.budget.window)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO syncd.api_credits (store, minute, spent) VALUES ($1, $2, $3)"
                " ON CONFLICT (store, minute) DO UPDATE"
                " SET spent = syncd.api_credits.spent + EXCLUDED.spent",
                [(self.store, minute, cost) for minute, cost in sorted(spent.items())])
            rows = await conn.fetch(
                "SELECT minute, spent FROM syncd.api_credits WHERE store = $1"
                " AND minute > now() - $2::interval - interval '1 minute'", self.store, window)
            await conn.execute(
                "DELETE FROM syncd.api_credits WHERE store = $1"
                " AND minute < now() - $2::interval - interval '1 hour'", self.store, window)
        self._pending = []
        self._mine.update(spent)
        now = dt.datetime.now(dt.UTC)
        for minute in [m for m in self._mine if m < now - window - dt.timedelta(minutes=1)]:
            del self._mine[minute]
        self.budget.outside([
            (min(row["minute"] + dt.timedelta(minutes=1), now).timestamp(), others)
            for row in rows if (others := row["spent"] - self._mine[row["minute"]]) > 0])
