"""``python -m ops.bench``: the product's performance, measured against the stack's raw limit.

The command only parses options and prints; the scenarios live in
``ops.bench.scenarios`` and the workloads in ``ops.bench.workloads``, imported
when the command runs so that ``--help`` answers at once. It is run from a
checkout (the installed daemon ships no tooling). ``ops/bench/README.md`` has the
workloads, the targets, the figures and where the time goes.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click

from daemon.runtime import heap
from daemon.runtime.logs import configure_logging
from daemon.runtime.settings import SettingsError, load_settings

SCENARIOS = ("steady", "capture", "initial", "latency", "replay", "handshake")
PEER = "peer"
"""The peer sink on the same events on a real Kafka cluster (``ops.bench.peer``): in
``--scenario all`` unless ``--no-peer``; skipped, with the reason, without Java/Maven."""
FULL_RECORDS = 1_000_000

_HEADLINE = {
    "steady": ("events_per_s", "events/s"), "capture": ("changes_per_s", "changes/s"),
    "initial": ("seconds", "s"), "latency": ("p50_ms", "ms p50"),
    "handshake": ("median_ms", "ms median"), "replay": ("events_per_s", "events/s"),
    "peer": ("peer_events_per_s", "peer events/s"),
}


def render(report: dict[str, Any]) -> str:
    """The report as a table for a terminal: one row per target."""
    from tabulate import tabulate

    rows: list[list[Any]] = []
    for name, outcome in report["scenarios"].items():
        if not outcome.get("measured", True) or "targets" not in outcome:
            rows.append([name, "not measured", "", "", "", outcome.get("reason", "")])
            continue
        key, unit = _HEADLINE[name]
        raw = outcome.get("raw", {})
        raw_text = ", ".join(f"{k} {v}" for k, v in raw.items() if k.endswith(("per_s", "ms")))
        detail = f"{outcome.get(key)} {unit}; ratio {outcome.get('ratio')}; raw: {raw_text}"
        if name == PEER:
            detail = (f"syncd steady {outcome.get('events_per_s')} events/s, peer sink"
                      f" {outcome.get(key)} events/s, raw sink {raw.get('sink_per_s')}"
                      f" events/s; syncd ÷ peer {outcome.get('syncd_to_peer')}")
        for target in outcome["targets"]:
            rows.append([name, target["figure"], target["value"], target["target"],
                         "yes" if target["met"] else "NO", detail])
    machine = report["machine"]
    header = (f"ops.bench: --records {report['records']} on {machine['cores']} cores"
              f" ({machine['cpu']}), load {report['load_before']} -> {report['load_after']}")
    table = tabulate(rows, headers=["scenario", "figure", "value", "target", "met", "detail"])
    for name, outcome in report["scenarios"].items():
        statements = outcome.get("statements")
        if statements:
            table += f"\n\n{name}: where its statements on the pool spent their time\n" + tabulate(
                [[s["seconds"], s["calls"], s["ms_each"], s["statement"][:110]]
                 for s in statements],
                headers=["seconds", "calls", "ms each", "statement"])
    return f"{header}\n{table}"


@click.command("bench")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="TOML file of settings (environment variables SYNCD_* win over it), as"
                   " `syncd --config`.")
@click.option("-v", "--verbose", is_flag=True,
              help="Log at the configured level; otherwise warnings and errors only"
                   " (unless SYNCD_LOG_LEVEL=debug).")
@click.option("--scenario", "chosen", type=click.Choice([*SCENARIOS, PEER, "all"]),
              multiple=True, default=("all",), show_default=True,
              help="Which scenario to run; repeat it for several (they run in the order"
                   " of `all`: `--scenario steady --scenario replay` rebuilds the log that"
                   " steady timed).")
@click.option("--peer/--no-peer", "with_peer", default=True, show_default=True,
              help="Whether `--scenario all` includes the peer sink (Kafka Connect with"
                   " Debezium's JDBC sink on a real Kafka cluster; needs Java and Maven).")
@click.option("--records", type=click.IntRange(100, 100_000_000), default=FULL_RECORDS,
              show_default=True, help="Scale: events (steady), changes (capture), CRM "
              "contacts (initial); the other sizes follow (see ops/bench/README.md).")
@click.option("--duration", type=click.FloatRange(1, 3600), default=None,
              help="Seconds of the latency run (default 60, less for tiny --records).")
@click.option("--statements", type=click.IntRange(0, 1000), default=0,
              help="Report the N statements the steady scenario's projector (and the"
                   " initial scenario's first sync) spent most time in (calls, seconds;"
                   " asyncpg's query logger). 0: none.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every figure.")
@click.pass_context
def bench(ctx: click.Context, config_file: Path | None, verbose: bool,
          chosen: tuple[str, ...], records: int, duration: float | None, statements: int,
          as_json: bool, with_peer: bool) -> None:
    """Measure throughput and latency on generated data, against the raw limit.

    Runs on the embedded services (in a temporary directory) unless SYNCD_DATABASE_URL
    and SYNCD_KAFKA_BOOTSTRAP are configured; see ops/bench/README.md."""
    from ops.bench.scenarios import run_bench

    try:
        settings = load_settings(config_file)
    except SettingsError as err:
        click.echo(f"ops.bench: {err}", err=True)
        ctx.exit(2)
    if verbose or settings.log_level == "debug":
        configure_logging(level=settings.log_level, fmt=settings.log_format)
    else:
        configure_logging(level="warning", fmt=settings.log_format)
    every = [*SCENARIOS, *([PEER] if with_peer else [])]
    scenarios = every if "all" in chosen else [name for name in [*SCENARIOS, PEER]
                                                if name in chosen]

    async def main() -> dict[str, Any]:
        # SIGTERM / Ctrl-C cancel the run, so that the embedded services are stopped.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await run_bench(settings, scenarios, records, duration=duration,
                               statements=statements)

    report = asyncio.run(main())
    click.echo(json.dumps(report, default=str) if as_json else render(report))
    failed = [name for name, outcome in report["scenarios"].items()
              if str(outcome.get("reason", "")).startswith("failed")]
    ctx.exit(1 if failed else 0)


def main() -> None:
    # The product runs in this process: its heap settled as ``syncd run`` settles the
    # daemon's (daemon/runtime/heap.py). Here, not in ``bench``, which tests invoke in
    # their own process.
    heap.settle()
    bench(prog_name="python -m ops.bench")
