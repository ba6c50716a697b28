"""``syncd db``: the embedded PostgreSQL of the data directory, on its own.

With no ``SYNCD_DATABASE_URL`` the stores live in an embedded PostgreSQL under
``<data dir>/pg``, which ``syncd run`` starts and stops with itself. ``db start``
starts it alone, in the background, so the stores can be read and edited while
the daemon is stopped (or before its first start); a daemon started meanwhile
uses that server and leaves it running when it exits, and ``db stop`` stops it.
``db psql`` opens the psql bundled with pgserver on it, ``db url`` prints its URL.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import click

from daemon.runtime.embedded import EmbeddedPostgres, pid_alive
from daemon.runtime.runtime_file import RuntimeInfo, read_runtime
from daemon.runtime.settings import Settings

NOT_RUNNING = "run `syncd db start` or `syncd run`"


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _embedded(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir.resolve())


def running_daemon(settings: Settings) -> RuntimeInfo | None:
    """The daemon running on this data directory (its runtime.json names a live pid)."""
    runtime = read_runtime(settings.data_dir)
    if runtime is None or not pid_alive(runtime.pid):
        return None
    return runtime


def psql_binary() -> Path:
    """``pgserver/pginstall/bin/psql`` inside site-packages, found without importing
    pgserver (its import starts nothing, but touches its runtime directory)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("the pgserver package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "psql"


async def _accepts_connections(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


@click.group()
def db() -> None:
    """The embedded PostgreSQL alone: reach the stores while the daemon is stopped."""


@db.command("url")
@click.pass_context
def url(ctx: click.Context) -> None:
    """Print the database URL: SYNCD_DATABASE_URL as configured, else the embedded one."""
    settings = _settings(ctx)
    if settings.database_url is not None:
        click.echo(settings.database_url.get_secret_value())
        return
    postgres = _embedded(settings)
    uri = postgres.uri()
    if uri is None:
        raise click.ClickException(
            f"the embedded PostgreSQL of {postgres.data_dir} is not running: {NOT_RUNNING}")
    click.echo(uri)


@db.command("start")
@click.pass_context
def start(ctx: click.Context) -> None:
    """Start the embedded PostgreSQL in the background; return once it accepts connections.

    It runs until `syncd db stop`; a daemon started meanwhile uses it and leaves it
    running when it exits.
    """
    settings = _settings(ctx)
    if settings.database_url is not None:
        raise click.ClickException(
            "SYNCD_DATABASE_URL is set: syncd uses that server, and starts no embedded one")
    postgres = _embedded(settings)
    daemon = running_daemon(settings)
    pid = postgres.postmaster_pid()
    if pid is not None:
        if postgres.claimed():
            click.echo(f"already running (pid {pid}), started by `syncd db start`")
        elif daemon is not None:
            click.echo(f"already running (pid {pid}): the daemon's (pid {daemon.pid}); it stops"
                       " when the daemon stops (run `syncd db start` again after that to keep"
                       " it up)")
        else:
            postgres.claim()
            click.echo(f"already running (pid {pid}), left by an earlier run; it now stays up"
                       " until `syncd db stop`")
        click.echo(postgres.uri() or "")
        return
    postgres.data_dir.mkdir(parents=True, exist_ok=True)
    postgres.start()
    asyncio.run(_accepts_connections(postgres.dsn))
    postgres.claim()
    click.echo(f"started PostgreSQL (pid {postgres.postmaster_pid()}) on {postgres.pgdata};"
               " `syncd db stop` stops it")
    click.echo(postgres.dsn)


@db.command("stop")
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the embedded PostgreSQL that `syncd db start` started (not while a daemon uses it)."""
    settings = _settings(ctx)
    if settings.database_url is not None:
        raise click.ClickException(
            "SYNCD_DATABASE_URL is set: that server is not syncd's to stop")
    postgres = _embedded(settings)
    uri = postgres.uri()
    if uri is None:
        postgres.claim_path.unlink(missing_ok=True)
        click.echo("not running")
        return
    daemon = running_daemon(settings)
    if daemon is not None and daemon.database == uri:
        raise click.ClickException(
            f"the daemon (pid {daemon.pid}) is running on this database: stop the daemon"
            " first (SIGTERM, or Ctrl-C in its terminal); it stops a server it started itself")
    ours = postgres.claimed()
    postgres.stop()
    click.echo("stopped" if ours else "stopped (it was left running by an earlier run)")


@db.command("psql", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def psql(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run pgserver's psql on the database; the arguments go to psql (-c "SELECT 1")."""
    settings = _settings(ctx)
    if settings.database_url is not None:
        target = settings.database_url.get_secret_value()
    else:
        postgres = _embedded(settings)
        found = postgres.uri()
        if found is None:
            raise click.ClickException(
                f"the embedded PostgreSQL of {postgres.data_dir} is not running: {NOT_RUNNING}")
        target = found
    binary = psql_binary()
    if not binary.exists():
        raise click.ClickException(f"psql is not where pgserver keeps it: {binary}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [str(binary), "--dbname", target, *args])
