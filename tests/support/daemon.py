"""The whole daemon, in-process, on this test's database and topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from daemon.app import run
from daemon.runtime.settings import ApiToken, Settings
from tests.support.pipeline import TEST_SESSION_TIMEOUT_MS

TOKENS = {"viewer": "viewer-token-0123456789", "operator": "operator-token-0123456789",
          "admin": "admin-token-0123456789"}
WEBHOOK_SECRET = "webhook-secret-for-tests"


@dataclass
class RunningDaemon:
    base: str
    pool: asyncpg.Pool
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, *, role: str | None = "admin",
                   body: Any = None, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if role is not None:
            sent["Authorization"] = f"Bearer {TOKENS[role]}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with self.session.request(method, self.base + path, data=data,
                                        headers=sent) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    async def enable_sync(self, sync_type: str = "two_way") -> None:
        """Set the integration up and enable sync as an administrator, over the API, and
        return once this daemon runs with it (nothing is applied before)."""
        for method, path, body in (
                ("POST", "/api/v1/integration", {"desk_portal": "d", "crm_org": "c"}),
                ("PUT", "/api/v1/integration/sync-type", {"sync_type": sync_type})):
            status, answer = await self.call(method, path, body=body)
            assert status == 200, answer
        for _ in range(200):
            _, now = await self.call("GET", "/api/v1/status", role="viewer")
            if now["config_position"] >= answer["position"]:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("the daemon did not follow the integration's set-up")

    async def wait_until(self, query: str, expected: Any, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (value := await self.pool.fetchval(query)) != expected:
            if loop.time() > deadline:
                raise TimeoutError(f"{query!r} is {value!r}, not {expected!r}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running_daemon(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                         data_dir: Path, *, demo: bool = False, ready: bool = True,
                         **overrides: Any) -> AsyncIterator[RunningDaemon]:
    """The daemon, once ``/readyz`` says it is ready (``ready``), or once start-up is
    done (its API answers) when the test expects it not to be."""
    overrides.setdefault("http_listen", "127.0.0.1:0")
    settings = Settings(
        database_url=SecretStr(database_url), kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}-g", partitions=3,
        data_dir=data_dir, shutdown_deadline=5, relay_poll_interval=0.2,
        consumer_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
        api_tokens=[ApiToken(name=role if role != "operator" else "ops", role=role,  # type: ignore[arg-type]
                             token=SecretStr(token)) for role, token in TOKENS.items()],
        webhook_secrets={"desk": SecretStr(WEBHOOK_SECRET), "crm": SecretStr(WEBHOOK_SECRET)},
        **overrides)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, demo=demo))
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    session = aiohttp.ClientSession()
    try:
        runtime = data_dir / "runtime.json"
        for _ in range(600):
            if task.done():
                raise RuntimeError(f"daemon exited: {task.result()}")
            if runtime.exists():
                base = "http://" + json.loads(runtime.read_text())["http"]
                path, headers = ("/readyz", {}) if ready else (
                    "/api/v1/status", {"Authorization": f"Bearer {TOKENS['viewer']}"})
                try:
                    async with session.get(base + path, headers=headers) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.1)
        else:
            raise TimeoutError("daemon not ready")
        yield RunningDaemon(base, pool, session)
    finally:
        stop.set()
        await session.close()
        await pool.close()
        assert await task == 0
