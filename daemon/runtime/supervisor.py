"""Root tasks: started together, guarded, stopped together.

Signals only set ``stop``. Each root task watches ``stop``, finishes what is
in flight and returns. When any root task exits unexpectedly (or raises),
its guard logs why and sets ``stop`` so the others drain; whatever has not
finished ``deadline`` seconds after ``stop`` is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from adapters import metrics

log = structlog.get_logger(__name__)

RootTask = Callable[[asyncio.Event], Awaitable[None]]


async def _guard(name: str, task: RootTask, stop: asyncio.Event, failures: list[str]) -> None:
    try:
        await task(stop)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and not current.cancelling():
            # A CancelledError nobody asked for (a library's own, escaping): the task
            # ended while the daemon runs, which must not pass without a word.
            failures.append(name)
            metrics.ROOT_TASK_FAILURES.labels(name).inc()
            log.error("root_task_failed", task=name, error="CancelledError raised inside it")
            stop.set()
            return
        if not stop.is_set():
            failures.append(name)
        raise
    except Exception as err:
        failures.append(name)
        metrics.ROOT_TASK_FAILURES.labels(name).inc()
        log.error("root_task_failed", task=name, error=f"{type(err).__name__}: {err}",
                  exc_info=True)
        stop.set()
        return
    if not stop.is_set():
        failures.append(name)
        metrics.ROOT_TASK_FAILURES.labels(name).inc()
        log.error("root_task_exited", task=name, error="returned while the daemon was running")
        stop.set()


async def supervise(roots: Mapping[str, RootTask], stop: asyncio.Event, *, deadline: float) -> int:
    """Run the root tasks until they all end; return the process exit status."""
    failures: list[str] = []
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(_guard(name, task, stop, failures), name=name)
            for name, task in roots.items()
        ]

        async def enforce_deadline() -> None:
            await stop.wait()
            log.info("shutdown_started", deadline_seconds=deadline)
            _done, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                log.warning("root_task_cancelled_at_deadline", task=task.get_name())
                task.cancel()

        watcher = group.create_task(enforce_deadline(), name="shutdown-deadline")
        await asyncio.wait(tasks)
        watcher.cancel()
    if failures:
        log.error("daemon_stopped_on_failure", tasks=failures)
        return 1
    return 0
