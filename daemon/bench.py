"""``syncd bench``: the product's performance, measured against the stack's raw limit.

The command only parses options and prints; the scenarios live in
``daemon.bench_scenarios`` and the workloads in ``daemon.bench_workloads``,
imported when the command runs so that every other ``syncd`` command starts
as fast as before. ``ops/bench/README.md`` has the workloads, the targets,
the figures and where the time goes.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import click

from daemon.runtime.logs import configure_logging
from daemon.runtime.settings import Settings

SCENARIOS = ("steady", "capture", "initial", "latency", "replay", "handshake")
FULL_RECORDS = 1_000_000

_HEADLINE = {
    "steady": ("events_per_s", "events/s"), "capture": ("changes_per_s", "changes/s"),
    "initial": ("seconds", "s"), "latency": ("p50_ms", "ms p50"),
    "handshake": ("median_ms", "ms median"), "replay": ("events_per_s", "events/s"),
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
        for target in outcome["targets"]:
            rows.append([name, target["figure"], target["value"], target["target"],
                         "yes" if target["met"] else "NO", detail])
    machine = report["machine"]
    header = (f"syncd bench: --records {report['records']} on {machine['cores']} cores"
              f" ({machine['cpu']}), load {report['load_before']} -> {report['load_after']}")
    table = tabulate(rows, headers=["scenario", "figure", "value", "target", "met", "detail"])
    return f"{header}\n{table}"


@click.command("bench")
@click.option("--scenario", type=click.Choice([*SCENARIOS, "all"]), default="all",
              show_default=True, help="Which scenario to run.")
@click.option("--records", type=click.IntRange(100, 100_000_000), default=FULL_RECORDS,
              show_default=True, help="Scale: events (steady), changes (capture), CRM "
              "contacts (initial); the other sizes follow (see ops/bench/README.md).")
@click.option("--duration", type=click.FloatRange(1, 3600), default=None,
              help="Seconds of the latency run (default 60, less for tiny --records).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every figure.")
@click.pass_context
def bench(ctx: click.Context, scenario: str, records: int, duration: float | None,
          as_json: bool) -> None:
    """Measure throughput and latency on generated data, against the raw limit."""
    from daemon.bench_scenarios import run_bench

    settings = ctx.obj
    assert isinstance(settings, Settings)
    if settings.log_level != "debug":
        configure_logging(level="warning", fmt=settings.log_format)
    scenarios = list(SCENARIOS) if scenario == "all" else [scenario]

    async def main() -> dict[str, Any]:
        # SIGTERM / Ctrl-C cancel the run, so that the embedded services are stopped.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await run_bench(settings, scenarios, records, duration=duration)

    report = asyncio.run(main())
    click.echo(json.dumps(report, default=str) if as_json else render(report))
    failed = [name for name, outcome in report["scenarios"].items()
              if str(outcome.get("reason", "")).startswith("failed")]
    ctx.exit(1 if failed else 0)
