"""Test harness: real embedded PostgreSQL and broker, started once per session.

Each test gets its own database (cloned from a migrated template, dropped when the
test ends) and its own topic prefix, so tests never clean up after each other.
``SYNCD_TEST_DATABASE_URL`` and ``SYNCD_TEST_KAFKA_BOOTSTRAP`` point the
suite at external services instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from adapters.migrate import migrate
from daemon.runtime.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.support.pipeline import Pipeline

# One template per pytest-xdist worker: on an external server (SYNCD_TEST_DATABASE_URL)
# the workers share the server, and each builds its own template.
TEMPLATE_DB = f"syncd_test_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"

# The real Kafka cluster and the system PostgreSQL (started only for the tests that ask).
pytest_plugins = ["tests.support.cluster_fixtures"]


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SYNCD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        asyncio.run(_keep_wal_small(server.dsn))
        yield server.dsn
    finally:
        server.stop()


async def _keep_wal_small(dsn: str) -> None:
    """Every test database is a copy of the template written to the WAL; PostgreSQL's
    default keeps up to 1 GB of it between checkpoints, which the shared disk of a CI
    run cannot spare twice over (one server per xdist worker)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER SYSTEM SET max_wal_size = '96MB'")
        await conn.execute("ALTER SYSTEM SET min_wal_size = '32MB'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SYNCD_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def template_dsn(pg_server_dsn: str) -> str:
    """A database with every migration applied, cloned for each test."""

    async def build() -> None:
        admin = await asyncpg.connect(pg_server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(pg_server_dsn, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return with_database(pg_server_dsn, TEMPLATE_DB)


async def create_database(server_dsn: str, *, template: str | None = TEMPLATE_DB) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await admin.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, url: str) -> None:
    """Drop a test's database, closing what the test left connected to it: a session
    keeping every test's database filled the disk of a CI run."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_server_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone, dropped when it ends."""
    url = await create_database(pg_server_dsn)
    yield url
    await drop_database(pg_server_dsn, url)


@pytest.fixture
async def empty_database_url(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied, dropped when the test ends."""
    url = await create_database(pg_server_dsn, template=None)
    yield url
    await drop_database(pg_server_dsn, url)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # In UTC, as the daemon's pool is (daemon.app.create_pool).
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8,
                                     server_settings={"timezone": "UTC"})
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A CLI command run in-process configures logging for itself (warnings only, for
    most commands): give the next test the configuration the session had."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    yield
    current = asyncio.current_task()
    for _ in range(3):
        await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if left:
        names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro()) for t in left))
        for task in left:
            task.cancel()
        pytest.fail(f"test left {len(left)} asyncio task(s) running: {names}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and asyncio.iscoroutinefunction(function):
            item.fixturenames.insert(0, "_no_leftover_tasks")  # type: ignore[attr-defined]


@pytest.fixture
async def pipeline(database_url: str, kafka_bootstrap: str,
                   topic_prefix: str) -> AsyncIterator[Pipeline]:
    """Relays and projector running on this test's database and topic."""
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix)
    await pipe.start()
    try:
        yield pipe
    finally:
        await pipe.close()
