"""Waiting for a dependency that is not there yet: capped exponential backoff.

A daemon started while its database or broker is briefly away (a rolling
restart, a pod that starts before its database) must neither crash nor spin:
``wait_for`` repeats one attempt until it succeeds, sleeping between attempts
with capped exponential backoff and jitter, logs one line per failed attempt
(the error's type and message, no traceback), keeps the reason where
``/readyz`` can name it, and gives up only after an overall limit (if any) or
when the daemon is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

Transient = Callable[[BaseException], bool]
"""Whether an error means "not there yet, try again" (else it is raised at once)."""


@dataclass(frozen=True)
class Backoff:
    """Delays of ``first · factor^(n-1)`` seconds, capped at ``cap``, each drawn
    uniformly from the upper half of that ceiling (jitter, so that replicas
    started together do not retry in step)."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


class Stopped(Exception):
    """The daemon was told to stop while it waited."""

    def __init__(self, what: str) -> None:
        super().__init__(f"stopped while waiting for the {what}")
        self.what = what


class GaveUp(Exception):
    """The dependency did not come within the overall limit."""

    def __init__(self, what: str, attempts: int, waited: float, error: str) -> None:
        super().__init__(f"the {what} did not become available in {waited:.0f} s"
                         f" ({attempts} attempts); last error: {error}")
        self.what = what
        self.attempts = attempts
        self.waited = waited
        self.error = error


def describe(err: BaseException, limit: int = 300) -> str:
    """One line naming the error: its type and message, never a traceback."""
    name, message = type(err).__name__, str(err)
    text = " ".join((message if message.startswith(name) else f"{name}: {message}").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


async def wait_for(what: str, attempt: Callable[[], Awaitable[T]], *, transient: Transient,
                   stop: asyncio.Event, limit: float | None = None,
                   backoff: Backoff = Backoff(), waiting: dict[str, str] | None = None,
                   rng: random.Random | None = None) -> T:
    """Run ``attempt`` until it succeeds; return its result.

    A transient error is logged (``dependency_unavailable``, with ``what``, the
    attempt number, the error and the delay before the next attempt) and the
    attempt repeated after the backoff; any other error is raised at once. While
    it fails, ``waiting[what]`` holds the reason (removed on success). ``limit``
    (seconds, None or 0 for no limit) bounds the whole wait: past it, ``GaveUp``.
    ``stop`` set meanwhile, even during an attempt, raises ``Stopped``.
    """
    rng = rng or random.Random()
    started = time.monotonic()
    number = 0
    while True:
        number += 1
        try:
            result = await _unless_stopped(what, attempt(), stop)
        except Stopped:
            raise
        except Exception as err:
            if not transient(err):
                raise
            waited = time.monotonic() - started
            reason = describe(err)
            if limit and waited >= limit:
                log.error("dependency_wait_gave_up", what=what, attempts=number,
                          waited_s=round(waited, 1), error=reason)
                raise GaveUp(what, number, waited, reason) from None
            delay = backoff.delay(number, rng)
            if limit:
                delay = max(0.0, min(delay, limit - waited))
            if waiting is not None:
                waiting[what] = (f"waiting for the {what}: {reason}"
                                 f" (attempt {number}, next in {delay:.1f} s)")
            log.warning("dependency_unavailable", what=what, attempt=number, error=reason,
                        retry_in_s=round(delay, 1), waited_s=round(waited, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise Stopped(what) from None
            continue
        if waiting is not None:
            waiting.pop(what, None)
        if number > 1:
            log.info("dependency_available", what=what, attempts=number,
                     waited_s=round(time.monotonic() - started, 1))
        return result


async def _unless_stopped(what: str, work: Awaitable[T], stop: asyncio.Event) -> T:
    """``work``'s result, or ``Stopped`` (``work`` cancelled) once ``stop`` is set."""
    if stop.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise Stopped(what)
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopped(what)
    return task.result()
