"""What a hosted store's API lets one organisation spend: calls at once, calls a
second, and credits a window (Zoho Desk's daily credits, Zoho CRM's rolling 24
hours), kept by the daemon so that it parks its own work before the service
refuses it.

Every call of the store's client goes through ``call``:

- at most ``concurrency`` at once (the edition's cap, 5 to 25 at Zoho);
- with ``per_second``, a token bucket of that many calls a second, ``burst`` at once;
- with ``credits``, the credits spent in the last ``window`` seconds are counted:
  a write that would spend into the ``reserve`` (the last tenth, by default) is
  ``Parked`` until enough of the window's spending has aged out, and so is a read
  that would spend past the credits. The reserve keeps reads (the batch's match
  candidates, the capture's poll) going while the writes wait: a parked write
  fails nothing, it waits in the command outbox; a read whose credits return
  within ``READ_WAIT`` waits for them.

The count is kept in memory for each call's decision; ``adapters.credit_ledger``
writes what this process spent to the database every few seconds and tells the
budget what the window holds besides (``outside``: spent before a restart, or by
another replica), so a restarted daemon does not start from nought. What other
clients of the organisation spend is not in it, so ``credits`` should be set
below the organisation's allowance by what they use. A 429 the service answers
anyway is retried with the command writer's backoff, as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from adapters import metrics
from adapters.write_errors import Parked

_HELD: contextvars.ContextVar[tuple[CallBudget, list[int]] | None] = contextvars.ContextVar(
    "held_credits", default=None)
"""What ``CallBudget.held`` charged and the calls of this task have not spent yet."""

READ_WAIT = 30.0
"""Seconds a read waits in place for credits before it is ``Parked``: its batch or
poll would otherwise start over, and spend again on what it had read."""


@dataclass(frozen=True)
class ApiLimits:
    """An organisation's limits as configured (``SYNCD_ZOHO_*_CONCURRENCY``,
    ``…_CALLS_PER_SECOND``, ``…_CREDITS``, ``…_CREDIT_HOURS``)."""

    concurrency: int = 5
    calls_per_second: float | None = None
    credits: int | None = None
    credit_window: float = 24 * 3600.0
    reserve: float = 0.1

    def budget(self, store: str) -> CallBudget:
        return CallBudget(store, credits=self.credits, window=self.credit_window,
                          reserve=self.reserve, per_second=self.calls_per_second,
                          concurrency=self.concurrency)


@dataclass
class CallBudget:
    store: str
    credits: int | None = None
    """Credits a window; None: not counted."""
    window: float = 24 * 3600.0
    reserve: float = 0.1
    """The fraction of ``credits`` writes leave for reads."""
    per_second: float | None = None
    """Calls a second (a token bucket of ``burst``); None: only ``concurrency``."""
    burst: int = 10
    concurrency: int = 5
    _spent: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    _total: int = field(default=0, init=False)
    _outside: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    """Credits the window holds that this process did not spend (``outside``)."""
    _unrecorded: list[tuple[float, int]] = field(default_factory=list, init=False)
    """This process's spending not yet taken by the ledger: (time.time(), cost)."""
    _tokens: float = field(default=0.0, init=False)
    _filled: float = field(default_factory=time.monotonic, init=False)
    _gate: asyncio.Semaphore | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    @contextlib.asynccontextmanager
    async def call(self, *, write: bool, cost: int = 1) -> AsyncIterator[None]:
        """Spend ``cost`` credits on one call (raises ``Parked`` when the budget says
        wait; a read waits in place if its credits return within ``READ_WAIT``), then
        hold one of the ``concurrency`` places while it runs."""
        waited = 0.0
        while True:
            try:
                if not self._from_held(cost):
                    self._charge(write=write, cost=cost)
                break
            except Parked as parked:
                if write or waited + parked.retry_after > READ_WAIT:
                    raise
                await asyncio.sleep(parked.retry_after)
                waited += parked.retry_after
        await self._token()
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        async with self._gate:
            yield

    @contextlib.contextmanager
    def held(self, cost: int) -> Iterator[None]:
        """Charge a write's ``cost`` credits at once, as a write (``Parked`` if they
        are not there), for the calls made within (the write's look-ups and the write
        itself), which then spend them rather than charge again. Without it a write's
        look-up could spend a credit and its write then park: retried, it would spend
        again and again while never writing (and several writes in step could starve
        each other for good)."""
        self._charge(write=True, cost=cost)
        token = _HELD.set((self, [cost]))
        try:
            yield
        finally:
            _HELD.reset(token)

    def _from_held(self, cost: int) -> bool:
        """Spend ``cost`` of what ``held`` charged for the calls within, if it has it."""
        held = _HELD.get()
        if held is None or held[0] is not self or held[1][0] < cost:
            return False
        held[1][0] -= cost
        return True

    @property
    def spent(self) -> int:
        """Credits spent in the current window (this process's and ``outside``)."""
        self._age(time.monotonic())
        return self._total + sum(cost for _, cost in self._outside)

    def unrecorded(self) -> list[tuple[float, int]]:
        """This process's spending since the last call, ``(time.time(), cost)`` each,
        for the ledger to record."""
        taken, self._unrecorded = self._unrecorded, []
        return taken

    def outside(self, spending: list[tuple[float, int]]) -> None:
        """What the window holds besides this process's spending, ``(time.time(),
        cost)`` each (the ledger's, from the database)."""
        wall, mono = time.time(), time.monotonic()
        self._outside = deque(sorted((mono - (wall - at), cost) for at, cost in spending))
        self._age(mono)
        metrics.STORE_CREDITS_SPENT.labels(self.store).set(self.spent)

    def _charge(self, *, write: bool, cost: int) -> None:
        if self.credits is None:
            return
        now = time.monotonic()
        self._age(now)
        limit = self.credits * (1 - self.reserve) if write else self.credits
        spent = self.spent
        if spent + cost > limit:
            wait = self._until_under(limit - cost, now)
            metrics.STORE_PARKED.labels(self.store).set(1)
            raise Parked(f"{spent} of {self.credits} API credits spent in the last"
                         f" {_span(self.window)}: {'writes' if write else 'calls'} wait"
                         f" {wait:.0f} s for credits to return", retry_after=wait)
        metrics.STORE_PARKED.labels(self.store).set(0)
        self._spent.append((now, cost))
        self._unrecorded.append((time.time(), cost))
        self._total += cost
        metrics.STORE_CREDITS_SPENT.labels(self.store).set(spent + cost)

    def _age(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window:
            self._total -= self._spent.popleft()[1]
        while self._outside and self._outside[0][0] <= now - self.window:
            self._outside.popleft()

    def _until_under(self, allowed: float, now: float) -> float:
        """Seconds until what the window holds is at most ``allowed`` (the oldest
        spending, this process's or outside, ages out first)."""
        total = self.spent
        for spent_at, cost in sorted([*self._spent, *self._outside]):
            total -= cost
            if total <= allowed:
                return max(0.05, spent_at + self.window - now)
        return self.window  # a call dearer than the whole budget: a window, then again

    async def _token(self) -> None:
        if self.per_second is None:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(float(self.burst),
                                   self._tokens + (now - self._filled) * self.per_second)
                self._filled = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.per_second)


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
