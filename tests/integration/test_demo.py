"""The README's first command, `python3 dev.py run` (`syncd run --demo`): the demo
stores are seeded, the integration is set up two-way as the demo's administrator,
the first sync links the records created within the window, the demo's tickets
give its CRM contacts customer statistics, and sales signals, that a replay finds nothing
to change in, and the demo's people (CRM users of each role, desk profiles with
restrictions) are there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from adapters import initial_sync
from tests.support.daemon import running_daemon

ROOT = Path(__file__).resolve().parents[2]


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

        # The demo's tickets, as the statistics of the CRM contact with the most of them.
        row = await daemon.pool.fetchrow(
            "SELECT l.crm_id, count(*) AS tickets,"
            " count(*) FILTER (WHERE t.rating = 'good') AS good"
            " FROM desk.tickets t JOIN sync.links l"
            "  ON l.module = 'contacts' AND l.desk_id = t.contact_id::text"
            " GROUP BY l.crm_id ORDER BY 2 DESC, 1 LIMIT 1")
        assert row is not None and row["tickets"] >= 2
        code, stats = await daemon.call(
            "GET", f"/api/v1/crm/contacts/{row['crm_id']}/statistics", role="viewer")
        assert code == 200 and stats["total_tickets"] == row["tickets"]
        assert stats["ratings"]["good"] == row["good"] and stats["as_of"] is not None
        assert await daemon.pool.fetchval(
            "SELECT count(*) FROM ticket_stats.replies") > 100
        assert await daemon.pool.fetchval(
            "SELECT count(*) FROM desk.ticket_threads WHERE kind = 'comment'") > 10

        # CRM users of each role, one not yet accepted, a mutual one; restricted profiles.
        code, people = await daemon.call("GET", "/api/v1/people", role="viewer")
        assert code == 200 and people["ticket_visibility"] == "departments"
        users = {u["name"]: u for u in people["users"]}
        assert {u["role"] for u in users.values()} == {"admin", "agent", "light_agent"}
        assert users["Pablo López"]["permissions"] == ["comment"]
        assert users["Inês Pereira"]["permissions"] == ["comment"]
        assert users["Hugo Dupont"]["permissions"] == ["comment", "forward", "reply"]
        assert people["mutual_users"] == ["1005"] and users["Zoé Bernard"]["desk_active"]
        assert all(u["departments"] for u in users.values())
        profiles = {p["name"]: p for p in people["profiles"]}
        assert profiles["Light Agent"]["access"]["deals"] == "none"
        assert profiles["Light Agent"]["access"]["notes"] == "restricted"
        assert not profiles["Contractor"]["visible"] and profiles["Supervisor"]["configures"]

        env = {**os.environ, "SYNCD_DATABASE_URL": database_url,
               "SYNCD_DATA_DIR": str(tmp_path / "replay")}
        env.pop("SYNCD_KAFKA_BOOTSTRAP", None)
        signals = await daemon.pool.fetchval("SELECT count(*) FROM sales_signals.signals")
        for projection in ("statistics", "signals", "ticket_actions", "crm_view", "handshake"):
            replay = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "daemon", "replay", "--projection",
                                 projection, "--dry-run"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert replay.returncode == 0, replay.stderr
            assert "nothing to change" in replay.stdout, (projection, replay.stdout)
        assert signals > 0  # the demo's overdue tickets of CRM contacts, at least
