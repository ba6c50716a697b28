"""A replay's dry run (OPS-07) for the console: rebuild projections from the event
log, or re-apply a window of events to the stores, without writing, and report what
would change per table (added, changed, removed, with samples).

The same ``projections.replay`` functions as ``syncd replay --dry-run``, on one
connection of the pool held for the run: its session lock keeps it from running
beside another replay (a ``Conflict``), and a dry run's transactions roll back, so
nothing is written. Applying stays with ``syncd replay``, once the preview is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg

from daemon.service import Conflict, ServiceError
from projections import registry
from projections import replay as rp
from projections.config import SyncConfig
from projections.sync import SyncProjection


def projection_names() -> tuple[str, ...]:
    """What a rebuild may name (besides ``all``)."""
    return registry.rebuildable()


async def preview(pool: asyncpg.Pool, *, projections: list[str] | None = None,
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  source: str | None = None, module: str | None = None,
                  config: Callable[[], SyncConfig]) -> list[dict[str, Any]]:
    """The dry run's reports (``Report.as_dict``): a rebuild of ``projections``
    (``["all"]`` for every one), or else a re-apply of the window ``since``…``until``;
    ``config``: the integration's configuration the daemon runs with."""
    names = set(projections or [])
    if "all" in names:
        names = set(registry.rebuildable())
    unknown = sorted(names - set(registry.rebuildable()))
    if unknown:
        raise ServiceError("invalid_parameter", f"not a projection of the log: {unknown}")
    if not names and since is None:
        raise ServiceError("invalid_parameter", "name projections, or a window's start")
    if since is not None and until is not None and until <= since:
        raise ServiceError("invalid_parameter", "the window must end after it starts")
    async with pool.acquire() as conn:
        if not await rp.try_lock(conn):
            raise Conflict("replay_running", "another replay is running; try again later")
        try:
            reports = []
            if names:
                if names & set(rp.LEDGER):
                    reports.append(await rp.rebuild_ledger(conn, names, dry_run=True))
                for spec in registry.SPECS:
                    if spec.rebuild == "events" and spec.name in names:
                        reports.append(await rp.rebuild_from_events(
                            conn, spec, rp.EventLogSource(), dry_run=True))
            else:
                current = config()
                if not current.active:
                    raise Conflict("integration_deleted",
                                   "the integration was deleted: nothing is re-applied")
                window = rp.Window(since=since, until=until, source=source, module=module)
                reports.append(await rp.reapply(conn, SyncProjection(lambda: current),
                                                rp.EventLogSource(), window, dry_run=True))
        except rp.ReplayError as err:
            raise Conflict("replay_refused", str(err)) from None
        finally:
            await rp.unlock(conn)
    return [r.as_dict() for r in reports]
