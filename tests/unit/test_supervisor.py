from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from daemon.runtime.supervisor import supervise


async def test_work_in_flight_finishes_before_exit() -> None:
    """After stop, a root task finishes its in-flight work and the status is 0."""
    stop = asyncio.Event()
    committed: list[int] = []

    async def worker(stop: asyncio.Event) -> None:
        batch = 0
        while not stop.is_set():
            batch += 1
            await asyncio.sleep(0.05)  # work in flight when stop arrives
            committed.append(batch)

    async def stopper(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.12)
        stop.set()

    status = await supervise({"worker": worker, "stopper": stopper}, stop, deadline=2)
    assert status == 0
    assert committed == list(range(1, len(committed) + 1))
    assert len(committed) >= 2


async def test_task_ignoring_stop_is_cancelled_at_deadline() -> None:
    """A root task still running at the deadline is cancelled, and that is logged."""
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn(stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop.set()
    with capture_logs() as logs:
        status = await asyncio.wait_for(supervise({"stubborn": stubborn}, stop, deadline=0.2), 5)
    assert status == 0
    assert cancelled.is_set()
    assert any(e["event"] == "root_task_cancelled_at_deadline" for e in logs)


async def test_crashing_root_task_stops_all_with_failure() -> None:
    """A root task that raises is logged with its reason, the others stop, status is 1."""
    stop = asyncio.Event()
    other_stopped = asyncio.Event()

    async def crasher(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def other(stop: asyncio.Event) -> None:
        await stop.wait()
        other_stopped.set()

    with capture_logs() as logs:
        status = await supervise({"crasher": crasher, "other": other}, stop, deadline=2)
    assert status == 1
    assert other_stopped.is_set()
    failed = [e for e in logs if e["event"] == "root_task_failed"]
    assert failed and failed[0]["task"] == "crasher" and "boom" in failed[0]["error"]


async def test_root_task_returning_early_is_a_failure() -> None:
    """A root task that returns while the daemon runs is an unexpected exit."""
    stop = asyncio.Event()

    async def quitter(stop: asyncio.Event) -> None:
        return

    async def other(stop: asyncio.Event) -> None:
        await stop.wait()

    with capture_logs() as logs:
        status = await supervise({"quitter": quitter, "other": other}, stop, deadline=2)
    assert status == 1
    assert any(e["event"] == "root_task_exited" and e["task"] == "quitter" for e in logs)


async def test_a_cancelled_error_nobody_asked_for_is_a_failure_said_aloud() -> None:
    """A root task ended by a CancelledError raised inside it (a library's own, as
    aiokafka's consumer stop can raise) is a failure: logged, and the daemon stops
    with status 1. It once ended the projector's task without a word while the rest
    of the daemon ran on."""
    stop = asyncio.Event()

    async def victim(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        raise asyncio.CancelledError

    async def other(stop: asyncio.Event) -> None:
        await stop.wait()

    with capture_logs() as logs:
        status = await asyncio.wait_for(
            supervise({"victim": victim, "other": other}, stop, deadline=2), 5)
    assert status == 1
    assert any(e["event"] == "root_task_failed" and e["task"] == "victim" for e in logs)
