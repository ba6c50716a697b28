"""The first sync follows the integration (SYNC-08, issue 15 part 5): nothing is
applied until the integration is set up and sync is enabled; changes made before
are captured and wait; the first sync starts when sync is enabled, not on the
daemon's first start, and a first sync a restart interrupted is resumed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from adapters import initial_sync
from tests.support.daemon import RunningDaemon, running_daemon
from tests.support.integration import enable_sync


async def _existing(database_url: str, store: str, *names: str) -> None:
    """Records that were there before the daemon: not captured (the first sync's job)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL syncd.capture = 'off'")
            for name in names:
                await conn.execute(f"INSERT INTO {store}.contacts (last_name, email)"
                                   " VALUES ($1, $2)", name, f"{name.lower()}@example.com")
    finally:
        await conn.close()


async def _status(daemon: RunningDaemon) -> dict[str, object]:
    code, body = await daemon.call("GET", "/api/v1/status", role="viewer")
    assert code == 200
    return body  # type: ignore[no-any-return]


async def _wait_state(daemon: RunningDaemon, state: str) -> None:
    for _ in range(100):
        if (await _status(daemon))["state"] == state:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"state stayed {(await _status(daemon))['state']}, not {state}")


async def test_nothing_is_applied_until_sync_is_enabled(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    await _existing(database_url, "crm", "Before")
    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              tmp_path / "data") as daemon:
        status = await _status(daemon)
        assert status["state"] == "not_set_up"
        assert "not set up" in str(status["waiting_for"])
        async with daemon.session.get(daemon.base + "/readyz") as response:
            ready = await response.json()
        # Ready (its API must stay reachable to be set up), and it says why it waits.
        assert response.status == 200 and "not set up" in ready["sync"]

        await daemon.pool.execute("INSERT INTO desk.contacts (last_name, email)"
                                  " VALUES ('Live', 'live@example.com')")
        await daemon.wait_until("SELECT count(*) FROM sync.deferred", 1)  # captured, waiting
        assert await daemon.pool.fetchval("SELECT count(*) FROM crm.contacts") == 1
        assert await daemon.pool.fetchval("SELECT count(*) FROM desk.contacts") == 1
        async with daemon.pool.acquire() as conn:
            assert await initial_sync.progress(conn) is None  # no first sync yet

        code, _ = await daemon.call("POST", "/api/v1/integration",
                                    body={"desk_portal": "d", "crm_org": "c"})
        assert code == 200
        await _wait_state(daemon, "sync_not_enabled")
        assert (await _status(daemon))["deferred_while_paused"] == 1

        code, _ = await daemon.call("PUT", "/api/v1/integration/sync-type",
                                    body={"sync_type": "two_way"})
        assert code == 200
        await _wait_state(daemon, "running")
        # The change that waited is applied, and the first sync brought the record
        # that was there before.
        await daemon.wait_until("SELECT count(*) FROM crm.contacts WHERE last_name = 'Live'", 1)
        await daemon.wait_until(
            "SELECT count(*) FROM desk.contacts WHERE last_name = 'Before'", 1)
        async with daemon.pool.acquire() as conn:
            progress = await initial_sync.progress(conn)
            # Before (crm) and Live (desk), and Live's CRM twin if the resume drain
            # created it before the first sync counted: linked already, it changes nothing.
            assert progress is not None and progress.total in (2, 3)
            assert await conn.fetchval("SELECT count(*) FROM sync.links") == 2
        await daemon.wait_until("SELECT count(*) FROM desk.contacts", 2)
        await daemon.wait_until("SELECT count(*) FROM crm.contacts", 2)
        async with daemon.session.get(daemon.base + "/readyz") as response:
            assert "sync" not in await response.json()


async def test_an_interrupted_first_sync_is_resumed_after_a_restart(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A first sync planned and partly captured when the daemon died goes on at the
    next start (before, the daemon only ever started one on its first start)."""
    await _existing(database_url, "crm", "One", "Two", "Three")
    await enable_sync(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await initial_sync.start(pool, direction="two_way", window_days=365)
        assert await initial_sync.capture_chunk(pool, "crm", "contacts", 1) == 1
    finally:
        await pool.close()
    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              tmp_path / "data") as daemon:
        await daemon.wait_until("SELECT count(*) FROM desk.contacts", 3)
        async with daemon.pool.acquire() as conn:
            assert await initial_sync.captured_all(conn)


async def test_resume_before_sync_is_enabled_says_why(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Set up but no sync type chosen: `syncd resume` says what is missing instead of
    waiting for a state that will not come."""
    from click.testing import CliRunner

    from daemon.cli import cli
    from tests.support.daemon import TOKENS

    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              tmp_path / "data") as daemon:
        code, _ = await daemon.call("POST", "/api/v1/integration",
                                    body={"desk_portal": "d", "crm_org": "c"})
        assert code == 200
        await _wait_state(daemon, "sync_not_enabled")
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["resume", "--timeout", "5"],
            env={"SYNCD_DATA_DIR": str(tmp_path / "data"),
                 "SYNCD_API_TOKEN": TOKENS["operator"]})
        assert result.exit_code == 1
        assert "sync is not enabled yet" in result.output
