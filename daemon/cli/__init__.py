"""The ``syncd`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import click
import structlog

from daemon.cli import ticket_actions  # noqa: F401  (registers its commands on `tickets`)
from daemon.cli.admin import COMMANDS
from daemon.cli.crm_view import crm_view
from daemon.cli.db import db
from daemon.cli.handshake import handshake
from daemon.cli.people import profiles, users
from daemon.cli.signals import signals
from daemon.cli.tickets import tickets
from daemon.runtime.logs import command_log_level, configure_logging
from daemon.runtime.settings import Settings, SettingsError, load_settings
from projections.config import SyncConfig

log = structlog.get_logger(__name__)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@click.group()
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="TOML file of settings (environment variables SYNCD_* win over it).")
@click.option("-v", "--verbose", is_flag=True,
              help="Log at the configured level (info) in commands other than `run`,"
                   " which log warnings and errors only.")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, verbose: bool) -> None:
    """syncd keeps a help desk and a CRM consistent through an event stream."""
    try:
        settings = load_settings(config_file)
    except SettingsError as err:
        click.echo(f"syncd: {err}", err=True)
        ctx.exit(2)
    level = command_log_level(settings.log_level, ctx.invoked_subcommand, verbose=verbose)
    configure_logging(level=level, fmt=settings.log_format)
    ctx.obj = settings


def _run_until_signalled(main: Any) -> int:
    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        result: int = await main(stop)
        return result

    return asyncio.run(wrapper())


@cli.command()
@click.option("--demo", is_flag=True, help="Seed a realistic desk and CRM first (once).")
@click.pass_context
def run(ctx: click.Context, demo: bool) -> None:
    """Run the daemon (embedded PostgreSQL and broker unless configured)."""
    from adapters.migrate import MigrationError
    from daemon.app import run as run_daemon
    from daemon.runtime import heap

    settings = _settings(ctx)
    heap.settle()  # the daemon's code is imported: it is never collected again
    try:
        status = _run_until_signalled(lambda stop: run_daemon(settings, stop, demo=demo))
    except MigrationError as err:
        log.error("startup_failed", error=str(err))
        status = 1
    ctx.exit(status)


@contextlib.asynccontextmanager
async def _migrated_pool(settings: Settings, *, max_size: int
                         ) -> AsyncIterator[tuple[asyncpg.Pool, int, str]]:
    """The daemon's database (the embedded one started if need be), migrated, as a pool;
    with the number of migrations applied and its address. For the one-shot commands."""
    from adapters.migrate import migrate as apply_migrations
    from daemon.app import create_pool
    from daemon.runtime.services import open_services

    async with open_services(settings, need_broker=False, stop_adopted=False) as services:
        pool = await create_pool(services.dsn, max_size=max_size)
        try:
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn)
            yield pool, applied, services.dsn
        finally:
            await pool.close()


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending database migrations and exit."""
    from adapters.migrate import MigrationError

    settings = _settings(ctx)

    async def main() -> int:
        async with _migrated_pool(settings, max_size=2) as (_pool, applied, dsn):
            # The integration store's tables too, so that a least-privilege role running
            # the daemon finds everything created (docs/reliability.md).
            from adapters.integration_store import IntegrationService

            await (await IntegrationService.open(dsn)).close()
        click.echo(f"applied {applied} migration(s)")
        return 0

    try:
        ctx.exit(asyncio.run(main()))
    except MigrationError as err:
        click.echo(f"syncd: {err}", err=True)
        ctx.exit(1)


async def _integration_config(dsn: str) -> SyncConfig:
    from adapters.integration_store import IntegrationService

    service = await IntegrationService.open(dsn)
    try:
        return await service.current_config()
    finally:
        await service.close()


def already_done(done: Any) -> str:
    """What ``sync --initial`` says when the first sync is over (``initial_sync.Finished``)."""
    when = done.finished_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"first sync: already done on {when} ({done.applied} of {done.total} records"
            " applied).\nIt runs once per database (SYNC-08) and cannot be run again:"
            " records created or changed since then are synced live, and `syncd replay"
            " --since TIME` re-applies a window of captured events.")


@cli.command("sync")
@click.option("--initial", is_flag=True, required=True,
              help="Run (or resume) the first sync: bulk import and export (SYNC-08);"
                   " once it is done, say so.")
@click.option("--window-days", type=click.IntRange(1, 36_500), default=None,
              help="Only records created within this many days (default from settings).")
@click.option("--no-wait", is_flag=True, help="Capture and return; do not wait for the apply.")
@click.pass_context
def sync_command(ctx: click.Context, initial: bool, window_days: int | None,
                 no_wait: bool) -> None:
    """Run the first sync against the daemon's database, with a progress bar."""
    from tqdm import tqdm

    from adapters import initial_sync

    settings = _settings(ctx)

    async def main() -> int:
        async with _migrated_pool(settings, max_size=3) as (pool, _applied, dsn):
            async with pool.acquire() as conn:
                done = await initial_sync.finished(conn)
            if done is not None:
                click.echo(already_done(done))
                return 0
            config = await _integration_config(dsn)
            if not (config.enabled and config.active):
                # The first sync follows the integration: it starts when sync is enabled.
                click.echo(f"syncd: no first sync: {config.waiting_for}", err=True)
                return 1
            with tqdm(total=0, unit="rec", desc="first sync", disable=None) as bar:
                def show(progress: initial_sync.Progress) -> None:
                    bar.total = progress.total
                    bar.n = progress.applied
                    bar.set_postfix(captured=progress.captured, refresh=False)
                    bar.refresh()

                result = await initial_sync.run(
                    pool, direction=config.direction,
                    window_days=window_days or settings.initial_sync_window_days,
                    wait=not no_wait, on_progress=show)
        click.echo(f"first sync: {result.applied} of {result.total} records applied"
                   f" ({result.captured} captured)")
        return 0

    ctx.exit(asyncio.run(main()))


for _command in COMMANDS:
    cli.add_command(_command)

# The benchmark and the chaos, two-replica and soak harnesses are not commands of the
# installed daemon: they live in ops/ and run from a checkout (`python -m ops.bench`,
# `python -m ops.chaos`; docs/performance.md, docs/reliability.md).
cli.add_command(db)
cli.add_command(handshake)
cli.add_command(tickets)
cli.add_command(users)
cli.add_command(profiles)
cli.add_command(signals)
cli.add_command(crm_view)

from daemon.cli.replay import replay  # noqa: E402

cli.add_command(replay)


def main() -> None:
    cli(prog_name="syncd")


if __name__ == "__main__":  # pragma: no cover
    main()
