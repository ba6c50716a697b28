"""``daemon.runtime.waiting.wait_for``: capped exponential backoff with jitter, one log line per
failed attempt, a reason for /readyz, a limit, and a prompt stop (issue 13, part 7)."""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog

from daemon.runtime.waiting import Backoff, GaveUp, Stopped, wait_for

FAST = Backoff(first=0.01, factor=2.0, cap=0.04)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    backoff, rng = Backoff(first=0.5, factor=2.0, cap=10.0), random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (40, 10.0)]:
        delays = {backoff.delay(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter


async def test_transient_failures_are_retried_and_logged_once_each() -> None:
    calls = 0
    waiting: dict[str, str] = {}

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError(111, "Connection refused")
        return "up"

    with structlog.testing.capture_logs() as logs:
        result = await wait_for("database", attempt, transient=lambda e: isinstance(e, OSError),
                                stop=asyncio.Event(), backoff=FAST, waiting=waiting)
    assert result == "up" and calls == 4 and waiting == {}
    lines = [e for e in logs if e["event"] == "dependency_unavailable"]
    assert [e["attempt"] for e in lines] == [1, 2, 3]
    assert all(e["what"] == "database" and "ConnectionRefusedError" in e["error"]
               and "exc_info" not in e for e in lines)
    assert [e["attempts"] for e in logs if e["event"] == "dependency_available"] == [4]


async def test_the_reason_is_kept_while_waiting() -> None:
    waiting: dict[str, str] = {}
    seen: list[str] = []

    async def attempt() -> None:
        if waiting:
            seen.append(waiting["broker"])
            return
        raise TimeoutError("no answer")

    await wait_for("broker", attempt, transient=lambda e: True, stop=asyncio.Event(),
                   backoff=FAST, waiting=waiting)
    assert seen and seen[0].startswith("waiting for the broker: TimeoutError: no answer")


async def test_a_permanent_error_is_raised_at_once() -> None:
    async def attempt() -> None:
        raise PermissionError("wrong password")

    with pytest.raises(PermissionError):
        await wait_for("database", attempt, transient=lambda e: False, stop=asyncio.Event())


async def test_past_the_limit_it_gives_up() -> None:
    async def attempt() -> None:
        raise OSError("down")

    with pytest.raises(GaveUp) as caught:
        await wait_for("database", attempt, transient=lambda e: True, stop=asyncio.Event(),
                       backoff=FAST, limit=0.1)
    assert caught.value.what == "database" and caught.value.attempts >= 2
    assert "OSError: down" in str(caught.value)


async def test_stop_interrupts_the_wait_and_a_hanging_attempt() -> None:
    stop = asyncio.Event()

    async def hangs() -> None:
        await asyncio.sleep(3600)

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Stopped):
        await asyncio.wait_for(wait_for("broker", hangs, transient=lambda e: True, stop=stop),
                               5)

    async def fails() -> None:
        raise OSError("down")

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Stopped):
        await asyncio.wait_for(wait_for("broker", fails, transient=lambda e: True, stop=stop,
                                        backoff=Backoff(first=60, cap=60)), 5)
