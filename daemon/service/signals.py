"""The sales signals a CRM user reads (TICKET-09): a page of them after a position, and
what wakes the open streams.

Why it exists: the signals projection decides every signal once, for everybody
(``projections.sales_signals``); what one CRM user gets of them is a filter at read
time — the tickets the user may see (``projections.people.may_see``, TICKET-08) and
the signals the user enabled (``CrmUser.signals``) — so a change of either applies at
once, to old signals too, and nothing per user is stored.

Resuming without loss or repeat needs no state here either: sequence numbers become
visible in order (the projection allocates them under a lock held to the commit), so
"the signals after N" read in one snapshot never skips one. A page says how far it
*scanned* (``cursor``), not only what it kept: signals the user may not see are
passed over once, not read again by the next page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from daemon.service.board import MoveNotifier
from projections.db import Conn
from projections.people import CrmUser, Visibility, may_see
from projections.sales_signals import NOTIFY_CHANNEL, SIGNAL_COLUMNS, signal_json

SCAN = 500
"""Signals read per query; a page keeps those the user gets."""


def gets(user: CrmUser, visibility: Visibility, signal: dict[str, Any]) -> bool:
    """Whether ``user`` receives ``signal``: a ticket the user may see, a signal the
    user enabled."""
    return signal["kind"] in user.signals and may_see(user, visibility,
                                                      signal["department_id"])


@dataclass(frozen=True, slots=True)
class Page:
    signals: list[dict[str, Any]]
    cursor: int
    """The last sequence number scanned: the next page starts after it."""
    more: bool
    """Whether signals after ``cursor`` were there when the page was read."""

    def as_json(self) -> dict[str, Any]:
        return {"signals": self.signals, "cursor": self.cursor, "more": self.more}


async def signals_after(conn: Conn, user: CrmUser, visibility: Visibility, after: int, *,
                        limit: int) -> Page:
    """Up to ``limit`` of the signals ``user`` gets after sequence number ``after``, in
    order, scanning at most ``SCAN`` signals per query until the page is full or the
    signals run out."""
    kept: list[dict[str, Any]] = []
    cursor = after
    while True:
        rows = await conn.fetch(
            f"SELECT {SIGNAL_COLUMNS} FROM sales_signals.signals"
            " WHERE seq > $1 ORDER BY seq LIMIT $2",
            cursor, SCAN)
        for row in rows:
            signal = signal_json(row)
            if gets(user, visibility, signal):
                kept.append(signal)
            cursor = row["seq"]
            if len(kept) == limit:
                more = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM sales_signals.signals WHERE seq > $1)",
                    cursor)
                return Page(kept, cursor, bool(more))
        if len(rows) < SCAN:
            return Page(kept, cursor, False)


async def last_seq(conn: Conn) -> int:
    """The newest sequence number decided (0: none yet)."""
    value = await conn.fetchval(
        "SELECT coalesce((SELECT last_seq FROM sales_signals.clock), 0)")
    return int(value)


class SignalStreams:
    """What the open signal streams share: one LISTEN connection (held while any stream
    is open; a notification wakes them all, each reads its own filter), how many are
    open, and whether the daemon is stopping."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.notifier = MoveNotifier(pool, channel=NOTIFY_CHANNEL, by_payload=False)
        self.open = 0
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.notifier.wake_all()

    async def close(self) -> None:
        await self.notifier.close()
