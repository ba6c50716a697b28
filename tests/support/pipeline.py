"""The capture → Kafka → projector pipeline, in-process, on one test database, wired
as the daemon wires it (``daemon.bootstrap.build``): every projection of the
registry, then a test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
from pydantic import SecretStr

from adapters.kafka import ensure_topics
from adapters.remote_store import RemoteStore
from daemon.bootstrap import Overrides, build
from daemon.runtime.services import Services
from daemon.runtime.settings import Settings
from daemon.runtime.supervisor import supervise
from projections.batch import Projection
from projections.catalog import Side
from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.stores.outbox import Outbox

TEST_SESSION_TIMEOUT_MS = 2_000
"""The embedded broker holds a consumer's first join for about half its session
timeout (waiting for other members), rounded up to a second: 3 s at the daemon's
default of 6 s, 1 s at 2 s. The tests' consumers join a hundred times a run."""


class Pipeline:
    def __init__(self, dsn: str, bootstrap: str, prefix: str,
                 config: SyncConfig | None = None, partitions: int = 3,
                 extra_projections: Sequence[Projection] = (),
                 settings: Mapping[str, Any] | None = None,
                 remote: Mapping[Side, RemoteStore] | None = None) -> None:
        """``settings``: fields of ``Settings`` to set besides the pipeline's own (the
        Kafka security settings of a test on an authenticated listener, say);
        ``remote``: sides that are remote stores (``Overrides.remote``)."""
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topic = f"{prefix}.events"
        self.group = f"{prefix}-group"
        self.partitions = partitions
        self.config = config or SyncConfig()
        self.extra_projections = list(extra_projections)
        self.settings_overrides = dict(settings or {})
        self.remote = dict(remote or {})
        self.stop = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[int] | None = None

    def configure(self, **changes: Any) -> None:
        self.config = replace(self.config, **changes)

    async def start(self) -> None:
        # The daemon's wiring (daemon.bootstrap), with shorter intervals.
        settings = Settings(**{
            "database_url": SecretStr(self.dsn), "kafka_bootstrap": self.bootstrap,
            "topic_prefix": self.prefix, "group_id": self.group,
            "partitions": self.partitions, "relay_poll_interval": 0.2,
            "relay_resend_after": 5,
            "consumer_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
            **self.settings_overrides})
        await ensure_topics(self.bootstrap, [self.topic], partitions=self.partitions,
                            security=settings.kafka_security())
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=6,
                                              server_settings={"timezone": "UTC"})
        self.parts = build(
            settings, services=Services(dsn=self.dsn, bootstrap=self.bootstrap),
            pool=self.pool, config=lambda: self.config,
            overrides=Overrides(extra_projections=self.extra_projections, stall_after=10,
                                drain_retry_after=0.1, remote=self.remote))
        self.sync = self.parts.sync
        self.projector = self.parts.consumer
        self.stop = asyncio.Event()
        self._task = asyncio.create_task(supervise(self.parts.roots(), self.stop, deadline=5))
        await asyncio.wait_for(self.projector.joined.wait(), 30)

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.stop.set()
        if self._task is not None:
            assert await self._task == 0
        if self.pool is not None:
            await self.pool.close()

    async def _unapplied(self) -> int:
        assert self.pool is not None
        return int(await self.pool.fetchval(
            "SELECT (SELECT count(*) FROM desk.outbox) + (SELECT count(*) FROM crm.outbox)"
            " + (SELECT count(*) FROM sync.deferred) + (SELECT count(*) FROM sync.commands)"))

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every captured change has been recorded and applied, and every
        command for a remote store delivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = await self._unapplied()
            if left == 0:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"{left} captured changes not applied in {timeout} s")
            await asyncio.sleep(0.05)

    async def drain(self, timeout: float = 30.0) -> None:
        """End to end: return once everything captured or sent so far is applied.

        The outboxes and the pause queue are empty (an outbox row goes in the batch
        that logs its event), and the projector has consumed to the end offsets the
        topic had (``ConsumerLoop.drained``: messages sent to Kafka directly, rejected
        ones). Applying can capture more (the sync's writes are captured too), so
        both are checked again until they hold together."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.settle(timeout=max(0.1, deadline - loop.time()))
            await self.projector.drained(timeout=max(0.1, deadline - loop.time()))
            if await self._unapplied() == 0:
                return

    async def wait_for_count(self, query: str, expected: int, timeout: float = 30.0) -> None:
        """Wait until ``query`` returns at least ``expected``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while int(await self.fetchval(query)) < expected:
            if loop.time() > deadline:
                raise TimeoutError(f"{query!r} stayed below {expected}")
            await asyncio.sleep(0.05)
        # And whatever else the topic held by then is applied too (the batch that did
        # it, and messages sent after it: undecodable ones, say).
        await self.projector.drained(timeout=max(0.1, deadline - loop.time()))

    async def eventually(self, query: str, expected: Any, *args: Any,
                         timeout: float = 20.0) -> None:
        """Wait until ``query`` returns ``expected``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (value := await self.fetchval(query, *args)) != expected:
            assert loop.time() < deadline, f"{query!r} is {value!r}, not {expected!r}"
            await asyncio.sleep(0.05)

    async def captured(self, side: Side, event: ChangeEvent) -> None:
        """A store's capture reports a change (a remote store's notification intake
        would): appended to its outbox, as a person's."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await Outbox(conn, side).append(event, keep_id=True)

    async def preexisting(self, query: str, *args: Any) -> None:
        """Run ``query`` on the stores as rows that were there before sync was enabled
        (the first sync's to find): not captured."""
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL syncd.origin = 'sync'")
            await conn.execute("SET LOCAL syncd.capture = 'off'")
            await conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        assert self.pool is not None
        return await self.pool.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        assert self.pool is not None
        return await self.pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert self.pool is not None
        return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        assert self.pool is not None
        return await self.pool.execute(query, *args)
