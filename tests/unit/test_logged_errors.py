"""D4: errors the daemon's loops meet are logged (warning, with the error) and the
loops go on; the demo seeding says why it leaves the integration as it is."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from adapters import metrics
from daemon import app, resume_drain, stats
from projections.integration import InvalidCommand


class _FailingPool:
    """A pool whose every connection fails with ``error``; counts the attempts."""

    def __init__(self, error: BaseException, stop: asyncio.Event, *, after: int) -> None:
        self.error, self.stop, self.after, self.attempts = error, stop, after, 0

    def acquire(self) -> Any:
        pool = self

        class _Acquire:
            async def __aenter__(self) -> Any:
                pool.attempts += 1
                if pool.attempts >= pool.after:
                    pool.stop.set()
                raise pool.error

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Acquire()


async def test_export_stats_logs_a_failing_query_and_goes_on() -> None:
    stop = asyncio.Event()
    pool = _FailingPool(asyncpg.UndefinedTableError('relation "sync.failures" does not exist'),
                        stop, after=2)
    before = metrics.STATS_EXPORT_FAILURES._value.get()
    with capture_logs() as logs:
        await asyncio.wait_for(stats.export_stats(pool, stop, interval=0.01), 5)  # type: ignore[arg-type]
    failed = [e for e in logs if e["event"] == "stats_export_failed"]
    assert pool.attempts == 2 and len(failed) == 2
    assert failed[0]["log_level"] == "warning" and "UndefinedTableError" in failed[0]["error"]
    assert metrics.STATS_EXPORT_FAILURES._value.get() == before + 2


async def test_drain_deferred_logs_a_failing_round_and_goes_on() -> None:
    stop = asyncio.Event()
    pool = _FailingPool(asyncpg.DeadlockDetectedError("deadlock detected"), stop, after=2)
    with capture_logs() as logs:
        await asyncio.wait_for(resume_drain.drain_deferred(pool, None, stop,  # type: ignore[arg-type]
                                                  retry_after=0.01), 5)
    failed = [e for e in logs if e["event"] == "deferred_drain_failed"]
    assert pool.attempts == 2 and len(failed) == 2
    assert failed[0]["log_level"] == "warning" and failed[0]["sqlstate"] == "40P01"
    assert "DeadlockDetectedError" in failed[0]["error"]


class _Integration:
    async def current(self) -> None:
        return None

    async def set_up(self, *_args: object, by: str) -> None:
        raise InvalidCommand("the integration is already set up", code="already_set_up")


class _Pool:
    async def fetchval(self, *_args: object) -> int:
        return 1


async def test_seed_demo_says_why_it_leaves_the_integration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def seeded(_pool: object) -> None:
        return None

    monkeypatch.setattr(app, "seed_demo", seeded)
    with capture_logs() as logs:
        await app._seed_demo(_Pool(), _Integration())  # type: ignore[arg-type]
    skipped = [e for e in logs if e["event"] == "demo_integration_skipped"]
    assert len(skipped) == 1 and skipped[0]["log_level"] == "warning"
    assert skipped[0]["code"] == "already_set_up"
