"""The README's first command, `python3 dev.py run` (`syncd run --demo`): the demo
stores are seeded, the integration is set up two-way as the demo's administrator,
and the first sync links the records created within the window."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters import initial_sync
from tests.support.daemon import running_daemon


async def test_the_demo_runs_its_first_sync(database_url: str, kafka_bootstrap: str,
                                            topic_prefix: str, tmp_path: Path) -> None:
    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              tmp_path / "data", demo=True) as daemon:
        code, status = await daemon.call("GET", "/api/v1/status", role="viewer")
        assert code == 200 and status["state"] == "running"
        code, integration = await daemon.call("GET", "/api/v1/integration", role="viewer")
        assert code == 200 and integration["mode"] == "sync"
        assert integration["products_department_id"] is not None
        for _ in range(900):
            async with daemon.pool.acquire() as conn:
                done = await initial_sync.finished(conn)
            if done is not None:
                break
            await asyncio.sleep(0.1)
        assert done is not None and done.total > 1000 and done.applied == done.total
        linked = await daemon.pool.fetchval(
            "SELECT count(*) FROM sync.links WHERE module = 'contacts'")
        assert linked > 1000
        failed = await daemon.pool.fetchval("SELECT count(*) FROM sync.failures")
        assert failed < linked // 10  # realistic data: a few fail (shared e-mails, say)
