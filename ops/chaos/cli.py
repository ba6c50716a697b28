"""``python -m ops.chaos``: the fault-injection run, the two-replica run and the soak run.

From a checkout, with the ``tools`` extra (psutil) installed::

    python -m ops.chaos [--changes N] [--kills N] [--seed N] [--json]
    python -m ops.chaos --two-replicas [--kafka BOOTSTRAP] [--changes N] [--seed N] [--json]
    python -m ops.chaos soak [--rate N] [--minutes M]

Each run starts an embedded PostgreSQL and broker of its own in a temporary
directory and the daemon (``python -m daemon run``) as subprocesses on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from daemon.runtime.logs import configure_logging

TOOLS_EXTRA = ("pip install 'deskcrm-sync[tools]' (from a checkout: pip install -e '.[tools]';"
               " `python3 dev.py test` installs it)")


def _need_psutil(command: str) -> None:
    """Refuse, naming the ``[tools]`` extra, when psutil is missing."""
    try:
        import psutil  # noqa: F401 - only whether it is there
    except ImportError:
        raise click.ClickException(
            f"`python -m ops.chaos{command}` needs the tools extra (psutil): {TOOLS_EXTRA}"
        ) from None


@click.group(invoke_without_command=True)
@click.option("--changes", type=click.IntRange(10), default=20_000, show_default=True)
@click.option("--kills", type=click.IntRange(0), default=34, show_default=True,
              help="Faults to inject (SIGKILLs, a zombie, broker and PostgreSQL restarts, "
                   "a relay killed mid-batch, a switch to one-way CRM -> desk and back).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--two-replicas", is_flag=True,
              help="Instead: two daemons in one group, one killed midway (OWN-05).")
@click.option("--kafka", metavar="BOOTSTRAP", default=None,
              help="With --two-replicas: run on this Kafka cluster instead of an embedded"
                   " broker (topic and group names unique to the run).")
@click.option("--real-kafka", is_flag=True,
              help="Start a three-broker Apache Kafka cluster (tests/support/kafka_cluster.py:"
                   " Java and Maven needed) and run on it; the chaos run then also kills,"
                   " pauses and restarts its brokers.")
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True,
              help="Log this process's info lines too (embedded services started, stopped);"
                   " otherwise warnings and errors only.")
@click.pass_context
def chaos(ctx: click.Context, changes: int, kills: int, seed: int, two_replicas: bool,
          kafka: str | None, real_kafka: bool, as_json: bool, verbose: bool) -> None:
    """Fault injection run: prints lost, duplicated and diverged (all must be 0).

    With the `soak` command instead: a steady change rate for a long time."""
    # As `syncd chaos|soak` did: this process logs warnings only, its output is the report.
    configure_logging(level="info" if verbose else "warning")
    if ctx.invoked_subcommand is not None:
        return  # `soak`: the options above are not used
    _need_psutil("")
    if kafka and not two_replicas:
        raise click.UsageError("--kafka goes with --two-replicas (the chaos run restarts"
                               " an embedded broker of its own)")
    from ops.chaos.harness import run_chaos, run_two_replicas

    with tempfile.TemporaryDirectory(prefix="syncd-chaos-") as tmp, \
            contextlib.ExitStack() as stack:
        cluster = stack.enter_context(_real_kafka(Path(tmp))) if real_kafka else None
        if two_replicas:
            figures = asyncio.run(run_two_replicas(
                changes=changes, seed=seed, root=Path(tmp), echo=click.echo,
                kafka=kafka or (cluster.bootstrap if cluster else None)))
        else:
            figures = asyncio.run(run_chaos(changes=changes, kills=kills, seed=seed,
                                            root=Path(tmp), echo=click.echo,
                                            cluster=cluster))
    data = dict(figures.__dict__)
    if as_json:
        click.echo(json.dumps(data))
    else:
        for key, value in data.items():
            click.echo(f"{key:>20}: {value}")
    if not figures.ok:
        raise SystemExit(1)


@contextlib.contextmanager
def _real_kafka(root: Path) -> Iterator[Any]:
    """The tests' three-broker cluster (from a checkout), for the run, then stopped."""
    from tests.support.kafka_cluster import KafkaCluster, fetch_jars, missing_tools

    missing = missing_tools()
    if missing:
        raise click.ClickException(f"--real-kafka: {missing}")
    cluster = KafkaCluster(root / "kafka", jars=fetch_jars())
    click.echo("starting a three-broker Kafka cluster", err=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@chaos.command()
@click.option("--rate", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--minutes", type=float, default=10.0, show_default=True)
def soak(rate: int, minutes: float) -> None:
    """Soak: a steady change rate for a long time, sampling RSS and lag every 10 s."""
    _need_psutil(" soak")
    from ops.chaos.harness import run_soak

    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp:
        result = asyncio.run(run_soak(rate=rate, seconds=int(minutes * 60), root=Path(tmp),
                                      echo=click.echo))
    click.echo(json.dumps({k: v for k, v in result.items() if k != "samples"}))


def main() -> None:
    chaos(prog_name="python -m ops.chaos")
