"""OWN-02 for ticket actions: the daemon SIGKILLed during a burst of CRM users' actions
(comments, replies and creates), then restarted, applies every action exactly once: no
thread, ticket or outcome lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from daemon.service.ticket_actions import submit
from projections.people import CrmUser
from projections.ticket_requests import Kind

ROOT = Path(__file__).resolve().parents[2]
ADMIN = CrmUser(id="adm", name="Ada Admin", email="ada@crm.example", role="admin",
                desk_active=True)
COMMENTS, REPLIES, CREATES = 120, 30, 30


def start_daemon(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                 data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url,
           "SYNCD_KAFKA_BOOTSTRAP": kafka_bootstrap, "SYNCD_TOPIC_PREFIX": topic_prefix,
           "SYNCD_GROUP_ID": f"{topic_prefix}-g", "SYNCD_PARTITIONS": "3",
           "SYNCD_HTTP_LISTEN": "127.0.0.1:0", "SYNCD_DATA_DIR": str(data_dir),
           "SYNCD_CONSUMER_SESSION_TIMEOUT_MS": "2000", "SYNCD_RELAY_POLL_INTERVAL": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "daemon", "run"], cwd=ROOT, env=env)


async def until(pool: asyncpg.Pool, query: str, done: int, timeout: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await pool.fetchval(query)) < done:
        if loop.time() > deadline:
            raise TimeoutError(f"{query!r} is {value}, not {done}")
        await asyncio.sleep(0.1)


async def test_a_sigkill_during_a_burst_of_actions_loses_and_doubles_none(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """180 actions asked while the daemon runs, is SIGKILLed once some (not all) are
    applied, and runs again: each action has one outcome, each comment and reply one
    thread, each create one ticket."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    proc = start_daemon(database_url, kafka_bootstrap, topic_prefix, tmp_path)
    try:
        await pool.execute("INSERT INTO desk.departments (id, name) VALUES (3, 'Support')")
        contact = await pool.fetchval("INSERT INTO desk.contacts (last_name, email)"
                                      " VALUES ('Kim', 'kim@example.com') RETURNING id")
        tickets = [await pool.fetchval(
            "INSERT INTO desk.tickets (department_id, subject, requester_email, contact_id)"
            " VALUES (3, $1, 'kim@example.com', $2) RETURNING id", f"T{n}", contact)
            for n in range(3)]
        await until(pool, "SELECT count(*) FROM ticket_stats.tickets WHERE live", 3)

        asked: list[str] = []
        killed = False
        plan: list[tuple[Kind, int]] = (
            [("comment", n) for n in range(COMMENTS)] + [("reply", n) for n in range(REPLIES)]
            + [("create", n) for n in range(CREATES)])
        plan.sort(key=lambda item: (item[1] % 7, item[0]))  # the kinds interleaved
        for kind, n in plan:
            if kind == "create":
                accepted = await submit(
                    pool, ADMIN, "all", "create", ticket_id=None,
                    payload={"subject": f"new {n}", "department_id": "3",
                             "contact_id": str(contact)})
            else:
                accepted = await submit(
                    pool, ADMIN, "all", kind, ticket_id=str(tickets[n % 3]),
                    payload={"content": f"{kind} {n}"})
            asked.append(accepted["action_id"])
            applied = await pool.fetchval("SELECT count(*) FROM ticket_actions.actions")
            if not killed and applied >= 40:
                os.kill(proc.pid, signal.SIGKILL)  # mid-burst, mid-batch perhaps
                proc.wait(10)
                killed = True
                proc = start_daemon(database_url, kafka_bootstrap, topic_prefix, tmp_path)
            await asyncio.sleep(0.005)
        assert killed, "the burst ended before the kill"
        await until(pool, "SELECT count(*) FROM ticket_actions.actions", len(asked))

        assert await pool.fetchval(
            "SELECT count(*) FROM ticket_actions.actions WHERE outcome = 'applied'"
            " AND action_id = ANY($1::uuid[])", asked) == len(asked) == 180
        outcomes = await pool.fetch(
            "SELECT record_id, count(*) AS n FROM sync.outcomes WHERE module = 'ticket_actions'"
            " GROUP BY record_id")
        assert sorted(r["record_id"] for r in outcomes) == sorted(asked)
        assert {r["n"] for r in outcomes} == {1}
        contents = await pool.fetch(
            "SELECT content, count(*) AS n FROM desk.ticket_threads GROUP BY content")
        assert len(contents) == COMMENTS + REPLIES and {r["n"] for r in contents} == {1}
        assert await pool.fetchval(
            "SELECT count(*) FROM desk.tickets WHERE subject LIKE 'new %'") == CREATES
        assert await pool.fetchval(
            "SELECT count(DISTINCT subject) FROM desk.tickets WHERE subject LIKE 'new %'"
        ) == CREATES
        assert await pool.fetchval("SELECT count(*) FROM sync.failures") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await pool.close()
