"""A hosted store's access, checked when the daemon starts: its credentials, scopes
and licence, by the same checks ``syncd integration check`` makes (``Check``).

Without them, a missing scope showed only at the store's first call, as a write
held *unavailable* after it had been tried. The gate (``AccessGate``) runs the
checks before the store's capture and writer start; while a check says a person must
act (a scope, a profile, a field, the licence), the store is *unavailable* with the
check's own words (``/readyz``, ``syncd status``, ``syncd_store_unavailable``) and
nothing is tried. The checks are made again, backing off from ``FIRST_RETRY`` to
``RETRY_CAP`` seconds, so a scope granted in Zoho brings the store back without a
restart. A check the service did not answer (down, a 5xx, a timeout, the credit
budget) is not a person's to mend: the store is said to be waiting for it, not
unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from adapters import metrics
from adapters.write_errors import Parked, Transient, WriteError
from projections.catalog import Side

log = structlog.get_logger(__name__)

FIRST_RETRY = 1.0
RETRY_CAP = 300.0
"""Seconds between the checks while they fail: doubling from the first, to the cap
(a round of checks costs a call each, about eight)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    unanswered: bool = False
    """Failed because the service did not answer (not a person's to mend)."""


def failed(name: str, err: WriteError, advice: str) -> Check:
    """A check refused with ``err``: its detail and what to do; or, when the service
    did not answer, that (the advice would blame what was not checked)."""
    if isinstance(err, (Transient, Parked)):
        return Check(name, False, f"{err.detail}: the service did not answer; try again",
                     unanswered=True)
    return Check(name, False, f"{err.detail}: {advice}")


Checks = Callable[[], Awaitable[Sequence[Check]]]


class AccessGate:
    """Holds a store's capture and writer until its checks pass (a root task: ``run``)."""

    def __init__(self, store: Side, checks: Checks) -> None:
        self.store: Side = store
        self.checks = checks
        self.passed = asyncio.Event()
        self.problem: str | None = None
        """What a person must mend, in the checks' words, while they say so."""
        self.waiting = "its credentials and scopes are being checked"

    def state(self) -> str | None:
        """Why the store has not started, for ``/readyz`` and the status; None once
        its checks passed."""
        if self.passed.is_set():
            return None
        return f"unavailable: {self.problem}" if self.problem else self.waiting

    async def run(self, stop: asyncio.Event) -> None:
        delay = FIRST_RETRY
        while not stop.is_set():
            try:
                problems = [c for c in await self.checks() if not c.ok]
            except Exception as err:  # a defect of a check: said, and checked again
                log.error("store_check_failed_unexpectedly", store=self.store,
                          error=f"{type(err).__name__}: {err}", exc_info=True)
                problems = [Check("checks", False, type(err).__name__, unanswered=True)]
            if not problems:
                self._passed()
                await stop.wait()  # a root task runs until the daemon stops
                return
            self._failed(problems, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_CAP)

    def then(self, task: Callable[[asyncio.Event], Awaitable[None]]
             ) -> Callable[[asyncio.Event], Awaitable[None]]:
        """``task`` as a root task that starts once the checks passed."""
        async def gated(stop: asyncio.Event) -> None:
            passed = asyncio.ensure_future(self.passed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({passed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                passed.cancel()
                stopped.cancel()
            if self.passed.is_set() and not stop.is_set():
                await task(stop)
        return gated

    def _passed(self) -> None:
        if self.problem is not None:
            log.info("store_available_again", store=self.store)
        log.info("store_checked", store=self.store)
        self.problem = None
        metrics.STORE_UNAVAILABLE.labels(self.store).set(0)
        self.passed.set()

    def _failed(self, problems: list[Check], retry_in: float) -> None:
        mend = [c for c in problems if not c.unanswered]
        if mend:
            problem = "; ".join(f"{c.name}: {c.detail}" for c in mend)
            if problem != self.problem:
                log.error("store_unavailable", store=self.store, detail=problem,
                          retry_in=retry_in)
            self.problem = problem
            metrics.STORE_UNAVAILABLE.labels(self.store).set(1)
            return
        self.problem = None
        metrics.STORE_UNAVAILABLE.labels(self.store).set(0)
        self.waiting = ("its start-up checks were not answered: "
                        + "; ".join(f"{c.name}: {c.detail}" for c in problems))
        log.warning("store_check_unanswered", store=self.store, detail=self.waiting,
                    retry_in=retry_in)
