"""``syncd replay``: rebuild projections, or re-apply a window of events to the stores.

It works on the database directly, beside a running daemon (which keeps serving;
see ``projections.replay`` for what each replay locks and for how long). A
progress bar on a terminal, ``syncd_replay_progress_ratio`` on
``--metrics-listen``, a summary of what changed (or, with ``--dry-run``, would
change) per table, ``--json`` for scripts.

Exit status: 0 done (also a dry run), 1 the replay failed (each step commits on its
own: the message names those committed before the failure), 2 bad usage or settings,
3 another replay is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from typing import Any

import asyncpg
import click
from tabulate import tabulate

from daemon.runtime import heap
from daemon.runtime.settings import Settings
from projections import registry
from projections.catalog import SYNCED_MODULES
from projections.replay import LEDGER, EventLogSource, EventSource, Report, Window
from projections.sync import SyncProjection

EXIT_BUSY = 3
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Moment(click.ParamType[dt.datetime]):
    """A time with a zone (RFC 3339 / ISO 8601), or a span ago: ``90m``, ``6h``, ``2d``."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        relative = _RELATIVE.match(text)
        if relative:
            span = dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
            return dt.datetime.now(dt.UTC) - span
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is neither a time like 2026-11-25T14:00+01:00 nor a span"
                      " like 6h", param, ctx)
        if moment.tzinfo is None:
            self.fail(f"{text!r} has no time zone: add Z or an offset such as +01:00",
                      param, ctx)
        return moment


class _Progress:
    """One bar per step on a terminal (none otherwise); the gauge covers all steps."""

    def __init__(self, steps: int, *, bars: bool = True) -> None:
        from adapters import metrics

        self.gauge = metrics.REPLAY_PROGRESS
        self.steps = max(1, steps)
        self.step = -1
        self.bars = bars
        self.bar: Any = None
        self.gauge.set(0)

    def next_step(self, description: str) -> None:
        from tqdm import tqdm

        self.close()
        self.step += 1
        if self.bars:
            self.bar = tqdm(total=None, desc=description, unit="ev", disable=None,
                            leave=False)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.unit = " " + phase
            self.bar.n = done
            self.bar.refresh()
        within = min(1.0, done / total) if total else 0.0
        self.gauge.set(min(1.0, (max(0, self.step) + within) / self.steps))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self) -> None:
        self.close()
        self.gauge.set(1)


def _sample_line(table: str, sample: dict[str, Any]) -> str:
    if sample["change"] == "changed":
        key = " ".join(f"{k}={v}" for k, v in sample["key"].items())
        columns = "; ".join(f"{name}: {_short(c['from'])} → {_short(c['to'])}"
                            for name, c in sample["columns"].items())
        return f"  {table} changed {key}: {columns}"
    return f"  {table} {sample['change']}: {_short(sample['row'], 160)}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render(report: Report) -> str:
    lines = [f"{report.what}: {report.events} {report.unit} read"
             + (" (dry run: nothing was written)" if report.dry_run else "")]
    changed = [t for t in report.tables if t.total]
    if changed:
        lines.append(tabulate([(t.table, t.added, t.changed, t.removed) for t in report.tables],
                              headers=("table", "added", "changed", "removed")))
        for table in changed:
            lines.extend(_sample_line(table.table, s) for s in table.samples)
    else:
        lines.append("nothing to change" if report.dry_run else "nothing changed")
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def _kafka_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from daemon.runtime.runtime_file import read_runtime

    runtime = read_runtime(settings.data_dir)
    if runtime is None or not runtime.broker:
        raise click.UsageError(
            "--from-kafka needs a broker: set SYNCD_KAFKA_BOOTSTRAP, or run it beside the"
            " running daemon (the embedded broker keeps nothing once the daemon stops;"
            " replay from the event log instead)")
    return runtime.broker


def _steps(projections: tuple[str, ...]) -> tuple[list[str], set[str]]:
    """The steps to run (``ledger`` for the folds of the outcomes, then each projection
    of the event log by name, in registry order) and the projections asked for."""
    names = set(projections)
    known = registry.rebuildable()
    if "all" in names:
        names = set(known)
    refused = registry.not_rebuildable()
    for name in sorted(names):
        if name in refused:
            raise click.UsageError(f"--projection {name}: {refused[name]}")
        if name not in known:
            raise click.UsageError(f"--projection {name}: unknown; choose from"
                                   f" {', '.join((*known, 'all'))}")
    steps = ["ledger"] if names & set(LEDGER) else []
    steps += [s.name for s in registry.SPECS if s.rebuild == "events" and s.name in names]
    return steps, names


@click.command("replay")
@click.option("--projection", "projections", multiple=True, metavar="NAME|all",
              help="Rebuild a projection from the durable record: history, failures,"
                   " handshake, or all. Repeatable.")
@click.option("--since", type=Moment(), help="Re-apply events captured at or after TIME"
              " (2026-11-25T14:00Z, or a span ago: 6h, 2d).")
@click.option("--until", type=Moment(), help="… and before TIME.")
@click.option("--source", type=click.Choice(["desk", "crm"]), help="Only events of this side.")
@click.option("--module", type=click.Choice(sorted(SYNCED_MODULES)),
              help="Only events of this module.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--from-kafka", is_flag=True, help="Read events from the topic's earliest"
              " retained offset instead of the event log (for a pruned event log).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="Serve /metrics (syncd_replay_progress_ratio) while the replay runs.")
@click.pass_context
def replay(ctx: click.Context, projections: tuple[str, ...], since: dt.datetime | None,
           until: dt.datetime | None, source: str | None, module: str | None, dry_run: bool,
           from_kafka: bool, as_json: bool, metrics_listen: str | None) -> None:
    """Rebuild projections, or re-apply a window of events to the stores (OPS-07).

    \b
    syncd replay --projection all [--dry-run]
    syncd replay --since 2026-11-25T06:00Z [--until TIME] [--source crm] [--module contacts]
    """
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    if bool(projections) == (since is not None):
        raise click.UsageError("give either --projection NAME|all or --since TIME")
    if projections and (until or source or module):
        raise click.UsageError("--until, --source and --module select a window: use them"
                               " with --since")
    if since is not None and until is not None and until <= since:
        raise click.UsageError("--until must be after --since")
    steps, names = _steps(projections) if projections else (["window"], set())
    bootstrap = _kafka_bootstrap(settings) if from_kafka else None
    window = Window(since=since, until=until, source=source, module=module)
    if metrics_listen:
        _serve_metrics(metrics_listen)
    heap.settle()  # a rebuild works in batches too (daemon/runtime/heap.py)
    status, reports = asyncio.run(_main(settings, steps, names, window, dry_run=dry_run,
                                        bootstrap=bootstrap))
    if reports:
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in reports], indent=2,
                                  ensure_ascii=False, default=str))
        else:
            click.echo("\n\n".join(render(r) for r in reports))
    ctx.exit(status)


def _serve_metrics(address: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise click.UsageError("--metrics-listen: expected HOST:PORT")
    start_http_server(int(port), addr=host or "127.0.0.1")


async def _main(settings: Settings, steps: list[str], names: set[str], window: Window, *,
                dry_run: bool, bootstrap: str | None) -> tuple[int, list[Report]]:
    from adapters.migrate import pending
    from daemon.runtime.services import open_services
    from projections import replay as rp

    async with open_services(settings, need_broker=False, stop_adopted=False) as services:
        conn = await _connect(services.dsn)
        try:
            missing = await pending(conn)
            if missing:
                click.echo(f"syncd: migrations {missing} are pending; run `syncd migrate`"
                           " (or start the daemon) first", err=True)
                return 2, []
            if not await rp.try_lock(conn):
                holder = await rp.lock_holder(conn)
                click.echo("syncd: another replay is running"
                           + (f" (database backend pid {holder})" if holder else "")
                           + "; try again when it has finished", err=True)
                return EXIT_BUSY, []
            source: rp.EventSource = rp.EventLogSource()
            if bootstrap is not None:
                from adapters.replay_kafka import KafkaEventSource

                source = KafkaEventSource(bootstrap, topic=settings.events_topic,
                                          group_id=settings.group_id,
                                          security=settings.kafka_security())
            phases = _phases(steps, source)
            progress = _Progress(len(phases))
            reports: list[Report] = []
            try:
                await _run(conn, services.dsn, phases, names, window, source, reports,
                           dry_run=dry_run, progress=progress)
            except rp.ReplayError as err:
                progress.close()
                click.echo(f"syncd: replay failed: {err}; {_kept(reports)}", err=True)
                return 1, []
            finally:
                await rp.unlock(conn)
            progress.finish()
            return 0, reports
        finally:
            await conn.close()


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings={
        "timezone": "UTC", "jit": "off", "application_name": "syncd-replay"})
    # Killed mid-statement, the session must not run on, holding the projector's
    # lock, until it next writes to us: PostgreSQL 14+ checks the client meanwhile.
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("SET client_connection_check_interval = '1s'")
    return conn


async def dry_run_all(dsn: str) -> list[Report]:
    """``syncd replay --projection all --dry-run`` as a function: rebuild every
    projection from the event log without writing, and report what would change
    (``Report.changes``; 0 everywhere when the live projections are what their event
    log says). Raises ``projections.replay.ReplayError`` if it cannot run (another
    replay holds the lock, migrations are pending, …)."""
    from adapters.migrate import pending
    from projections import replay as rp

    steps, names = _steps(("all",))
    conn = await _connect(dsn)
    try:
        missing = await pending(conn)
        if missing:
            raise rp.ReplayError(f"migrations {missing} are pending")
        if not await rp.try_lock(conn):
            raise rp.ReplayError("another replay is running")
        try:
            source = rp.EventLogSource()
            phases = _phases(steps, source)
            reports: list[Report] = []
            await _run(conn, dsn, phases, names, Window(), source, reports,
                       dry_run=True, progress=_Progress(len(phases), bars=False))
            return reports
        finally:
            await rp.unlock(conn)
    finally:
        await conn.close()


def _phases(steps: list[str], source: EventSource) -> list[str | tuple[str, ...]]:
    """The steps as they run: from the event log, the projections of the log together
    (rebuilt side by side, ``projections.replay.rebuild_side_by_side``) and the fold of
    the history and the failure log beside them; from Kafka, one after the other (one
    consumer reads the topic for each)."""
    from projections import replay as rp

    rebuilds = tuple(step for step in steps if step not in ("ledger", "window"))
    if len(rebuilds) < 2 or not isinstance(source, rp.EventLogSource):
        return list(steps)
    return [step for step in steps if step == "window"] + [
        tuple(step for step in steps if step != "window")]


def _kept(reports: list[Report]) -> str:
    """What a failed replay leaves: each step commits on its own, so the steps done
    before the failure that changed something stay changed."""
    kept = [r.what for r in reports if r.changes and not r.dry_run]
    return ("committed before it: " + "; ".join(kept)) if kept else "nothing was changed"


async def _run(conn: asyncpg.Connection, dsn: str, phases: list[str | tuple[str, ...]],
               names: set[str], window: Window, source: EventSource, reports: list[Report],
               *, dry_run: bool, progress: _Progress) -> None:
    """Run the phases, adding each step's report to ``reports`` once it is done (what a
    failure leaves committed is read from them)."""
    from projections import replay as rp

    for step in phases:
        if isinstance(step, tuple):
            assert isinstance(source, rp.EventLogSource)
            progress.next_step(", ".join("history and failure log" if name == "ledger"
                                         else name for name in step) + " side by side")
            await _side_by_side(conn, dsn, step, names, source, reports, dry_run=dry_run,
                                progress=progress)
            _note_source(reports[-1], source)
        elif step == "ledger":
            progress.next_step("history and failure log")
            reports.append(await rp.rebuild_ledger(conn, names, dry_run=dry_run,
                                                   progress=progress))
        elif step != "window":
            progress.next_step(step)
            reports.append(await rp.rebuild_from_events(
                conn, registry.spec(step), source, dry_run=dry_run, progress=progress))
            _note_source(reports[-1], source)
        else:
            progress.next_step("re-apply")
            reports.append(await rp.reapply(conn, await _sync(dsn), source, window,
                                            dry_run=dry_run, progress=progress))
            _note_source(reports[-1], source)


async def _side_by_side(conn: asyncpg.Connection, dsn: str, steps: tuple[str, ...],
                        names: set[str], source: EventLogSource, reports: list[Report], *,
                        dry_run: bool, progress: _Progress) -> None:
    """The projections of the log rebuilt side by side, the ledger's fold beside them
    (``projections.replay.rebuild_side_by_side``); each step's report added to
    ``reports``, in the steps' order, once all are done or one has failed."""
    from projections import replay as rp

    done: dict[str, Report] = {}
    try:
        await rp.rebuild_side_by_side(
            conn, rp.connections(lambda: _connect(dsn)), [registry.spec(name) for name in steps
                                       if name != "ledger"], source,
            ledger=names if "ledger" in steps else (), dry_run=dry_run, progress=progress,
            finished=done.__setitem__)
    finally:
        reports.extend(done[name] for name in steps if name in done)


async def _sync(dsn: str) -> SyncProjection:
    """The sync projection with the integration's current configuration (mapping,
    direction, products department), as the daemon would run it."""
    from adapters.integration_store import IntegrationService
    from projections.replay import ReplayError

    integration = await IntegrationService.open(dsn)
    try:
        config = await integration.current_config()
    finally:
        await integration.close()
    if not config.active:
        raise ReplayError("the integration was deleted: nothing is applied to the stores")
    return SyncProjection(lambda: config)


def _note_source(report: Report, source: Any) -> None:
    undecodable = getattr(source, "undecodable", 0)
    if undecodable:
        report.notes.append(f"{undecodable} message(s) did not decode and were skipped")
    for partition, (end, stored) in sorted(getattr(source, "short", {}).items()):
        report.notes.append(f"partition {partition} ends at offset {end}, before the"
                            f" projector's offset {stored}: the broker lost messages")
