"""The one-shot commands as a person runs them: pause and resume return once in
effect, `sync --initial` says when the first sync is done, and `migrate` keeps its
log lines off the terminal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from adapters import initial_sync
from daemon.cli import cli
from tests.support.daemon import TOKENS, RunningDaemon, running_daemon
from tests.support.integration import enable_sync
from tests.support.pipeline import Pipeline


@pytest.fixture
async def daemon(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                 data_dir: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              data_dir) as running:
        await running.enable_sync()
        yield running


async def syncd(data_dir: Path, *args: str, **env: str) -> Result:
    """The CLI in a thread, so the in-process daemon keeps serving meanwhile."""
    environment = {"SYNCD_DATA_DIR": str(data_dir), "SYNCD_API_TOKEN": TOKENS["operator"],
                   **env}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=environment)


async def state(daemon: RunningDaemon) -> str:
    _, body = await daemon.call("GET", "/api/v1/status", role="viewer")
    return str(body["state"])


async def test_pause_returns_once_in_effect_and_resume_too(daemon: RunningDaemon,
                                                           data_dir: Path) -> None:
    """When `syncd pause` returns the daemon's next batch writes nothing: an edit made at
    once is deferred, not applied; when `syncd resume` returns it is applied."""
    result = await syncd(data_dir, "pause")
    assert result.exit_code == 0, result.output
    assert "paused: in effect" in result.output
    assert await state(daemon) == "paused"
    await daemon.pool.execute(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Right', 'after@pause.example')")
    await daemon.wait_until("SELECT count(*) FROM sync.deferred", 1)
    assert await daemon.pool.fetchval("SELECT count(*) FROM crm.contacts") == 0

    result = await syncd(data_dir, "resume", "--json")
    assert result.exit_code == 0, result.output
    assert await state(daemon) == "running"
    await daemon.wait_until("SELECT count(*) FROM crm.contacts", 1)


async def test_pause_times_out_with_a_message(daemon: RunningDaemon, data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """If the daemon does not apply the pause in time, the command says so and fails."""
    from daemon.cli import admin as cli_admin

    monkeypatch.setattr(cli_admin, "wait_for_state", lambda *_a, **_k: False)
    result = await syncd(data_dir, "pause", "--timeout", "0")
    assert result.exit_code == 1
    assert "pause is recorded, but the daemon" in result.output


async def test_initial_sync_after_it_is_done_says_so(pipeline: Pipeline, database_url: str,
                                                     data_dir: Path) -> None:
    """`syncd sync --initial` waits for sync to be enabled on the integration (it says
    so); a second one says the first one is done (when, how many) and that it does not
    run again, instead of repeating the old total."""
    assert pipeline.pool is not None
    await pipeline.preexisting("INSERT INTO crm.contacts (last_name, email) SELECT 'n' || g,"
                               " 'r' || g || '@x.com' FROM generate_series(1, 5) g")
    refused = await syncd(data_dir, "sync", "--initial", SYNCD_DATABASE_URL=database_url)
    assert refused.exit_code == 1 and "the integration is not set up" in refused.output
    await enable_sync(database_url)
    first = await syncd(data_dir, "sync", "--initial", SYNCD_DATABASE_URL=database_url)
    assert first.exit_code == 0, first.output
    assert "5 of 5 records applied" in first.output
    async with pipeline.pool.acquire() as conn:
        done = await initial_sync.finished(conn)
    assert done is not None and (done.total, done.applied) == (5, 5)
    again = await syncd(data_dir, "sync", "--initial", SYNCD_DATABASE_URL=database_url)
    assert again.exit_code == 0, again.output
    assert "first sync: already done on " in again.output
    assert "(5 of 5 records applied)" in again.output
    assert "cannot be run again" in again.output


async def test_migrate_prints_its_result_without_log_lines(
        empty_database_url: str, pg_server_dsn: str, tmp_path: Path) -> None:
    """`syncd migrate` prints one line for people; the log lines only with --verbose."""
    from tests.conftest import create_database, drop_database

    def migrate(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"SYNCD_DATABASE_URL": url, "SYNCD_DATA_DIR": str(tmp_path),
                            "SYNCD_LOG_FORMAT": "json"}
        return subprocess.run([sys.executable, "-m", "daemon", *flags, "migrate"], env=env,
                              capture_output=True, text=True, timeout=120, check=True)

    quiet = await asyncio.to_thread(migrate, empty_database_url)
    assert quiet.stdout.startswith("applied ") and quiet.stdout.count("\n") == 1
    assert quiet.stderr == ""
    other = await create_database(pg_server_dsn, template=None)
    try:
        loud = await asyncio.to_thread(migrate, other, "--verbose")
    finally:
        await drop_database(pg_server_dsn, other)
    assert loud.stdout == quiet.stdout
    assert '"event": "migration_applied"' in loud.stderr
