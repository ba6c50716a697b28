"""The integration aggregate on the real embedded PostgreSQL, and its follower (OPS-05)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from eventsourcing.persistence import OperationalError, RecordConflictError
from structlog.testing import capture_logs

from adapters.integration_store import (
    IntegrationService,
    environment,
    open_application,
)
from projections.config import NOT_SET_UP, SyncConfig
from projections.integration import IntegrationDeleted
from projections.integration_app import IntegrationApplication, in_memory
from projections.mapping import build_mapping

CUSTOM = [{"desk": "email", "crm": "email"},
          {"desk": "custom.tier", "desk_type": "integer", "crm": "custom.level",
           "crm_type": "integer"}]


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[IntegrationService,
                                                             IntegrationService]]:
    """Two services on one database: two daemon replicas."""
    first = await IntegrationService.open(database_url)
    try:
        second = await IntegrationService.open(database_url)
        try:
            yield first, second
        finally:
            await second.close()
    finally:
        await first.close()


# -- from a DSN to eventsourcing's settings ----------------------------------

def test_socket_dsn_becomes_settings() -> None:
    """A Unix-socket URL (the embedded server's) gives host = the socket directory."""
    env = environment("postgresql://postgres:@/syncd?host=/run/pg")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_DBNAME"], env["POSTGRES_USER"]) == (
        "/run/pg", "syncd", "postgres")
    assert (env["POSTGRES_PASSWORD"], env["POSTGRES_PORT"]) == ("", "5432")
    assert (env["POSTGRES_SCHEMA"], env["CREATE_TABLE"]) == ("integration", "y")


def test_tcp_dsn_becomes_settings() -> None:
    """A TCP URL with percent-encoded credentials is decoded; key=value strings work too."""
    env = environment("postgresql://us%40r:p%3Aw@db.internal:6543/crm?connect_timeout=3",
                      schema="other")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("us@r", "p:w")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.internal", "6543")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_CONNECT_TIMEOUT"]) == ("crm", "3")
    assert env["POSTGRES_SCHEMA"] == "other"
    assert environment("host=h dbname=d user=u")["POSTGRES_HOST"] == "h"


@pytest.mark.parametrize(("dsn", "reason"), [
    ("postgresql://u:pw@h/d?sslmode=require", "sslmode"),
    ("postgresql://u:pw@h/d?connect_timeout=soon", "connect_timeout"),
    ("not a dsn s3cret", "not a valid"),
])
def test_unusable_dsn_is_refused(dsn: str, reason: str) -> None:
    """What the store cannot honour is refused by name, and no password is echoed."""
    with pytest.raises(ValueError, match=reason) as refused:
        environment(dsn)
    assert "pw" not in str(refused.value) and "s3cret" not in str(refused.value)


# -- persisted, and read back by another replica -----------------------------

async def test_commands_persist_for_another_replica(
        replicas: tuple[IntegrationService, IntegrationService], database_url: str) -> None:
    """What one replica records, a second replica reads back: state, config and audit."""
    first, second = replicas
    await first.set_up("portal-1", "org-1", by="alice")
    await first.choose_sync_type("crm_to_desk", by="alice")
    await first.change_field_mapping("contacts", CUSTOM, by="bob")
    await first.change_matching_options(True, by="bob")
    await first.choose_products_department(12, by="carol")

    seen = await second.current()
    assert seen is not None
    assert (seen.desk_portal, seen.crm_org, seen.mode) == ("portal-1", "org-1", "sync")
    assert seen == await first.current()
    assert await second.current_config() == SyncConfig(
        direction="crm_to_desk",
        mappings={"contacts": build_mapping("contacts", CUSTOM),
                  "accounts": build_mapping("accounts"),
                  "products": build_mapping("products")},
        match_secondary_email=True, products_department_id=12)
    assert await second.audit() == await first.audit()

    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            "integration")
    finally:
        await conn.close()
    assert [t["table_name"] for t in tables] == ["integration_events"]


async def test_audit_names_who_paused_and_when(
        replicas: tuple[IntegrationService, IntegrationService]) -> None:
    """The audit trail, read on another replica, says who paused and when."""
    first, second = replicas
    await first.set_up("portal-1", "org-1", by="alice")
    before = datetime.now(UTC)
    await first.pause(by="ops@example.com")
    after = datetime.now(UTC)

    last = (await second.audit())[-1]
    assert (last.what, last.who, last.details) == ("paused", "ops@example.com", {})
    assert before <= last.when <= after
    changes = await second.changes_after(1)
    assert [(c.notification_id, c.entry.what) for c in changes] == [(2, "paused")]


async def test_invariants_hold_across_replicas(
        replicas: tuple[IntegrationService, IntegrationService]) -> None:
    """A delete on one replica is final for the other."""
    first, second = replicas
    await first.set_up("portal-1", "org-1", by="alice")
    await first.delete(by="alice")
    with pytest.raises(IntegrationDeleted):
        await second.resume(by="bob")
    assert (await second.current_config()).active is False


async def test_stale_write_is_a_record_conflict(database_url: str) -> None:
    """PostgreSQL refuses a write from a stale load as a RecordConflictError (what we retry on)."""
    first = await asyncio.to_thread(open_application, database_url)
    second = await asyncio.to_thread(open_application, database_url)
    try:
        await asyncio.to_thread(first.set_up, "p", "o", by="alice")
        stale = await asyncio.to_thread(first.current)
        assert stale is not None
        await asyncio.to_thread(second.delete, by="bob")
        stale.pause(by="alice")
        with pytest.raises(RecordConflictError):
            await asyncio.to_thread(first.save, stale)
    finally:
        await asyncio.to_thread(first.close)
        await asyncio.to_thread(second.close)


async def test_replicas_starting_together(database_url: str) -> None:
    """Two replicas creating the schema and tables at the same moment both start."""
    apps = await asyncio.gather(asyncio.to_thread(open_application, database_url),
                                asyncio.to_thread(open_application, database_url))
    try:
        await asyncio.to_thread(apps[0].set_up, "p", "o", by="alice")
        assert await asyncio.to_thread(apps[1].current) is not None
    finally:
        for app in apps:
            await asyncio.to_thread(app.close)


# -- following the aggregate ---------------------------------------------------

async def wait_for_config(configs: asyncio.Queue[SyncConfig], *, timeout: float) -> SyncConfig:
    async with asyncio.timeout(timeout):
        return await configs.get()


async def test_follow_delivers_another_replicas_pause_within_a_second(
        replicas: tuple[IntegrationService, IntegrationService]) -> None:
    """A pause, then a mapping change, made on another replica reach the follower within 1 s."""
    follower, other = replicas
    await other.set_up("portal-1", "org-1", by="alice")
    await other.choose_sync_type("two_way", by="alice")
    assert (await follower.current_config()).paused is False

    configs: asyncio.Queue[SyncConfig] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(follower.follow(stop, configs.put_nowait), name="follow")
    try:
        await asyncio.sleep(0.6)  # a full poll: nothing changed since current_config
        assert configs.empty()

        loop = asyncio.get_running_loop()
        started = loop.time()
        await other.pause(by="ops")
        paused = await wait_for_config(configs, timeout=1.0)
        assert paused.paused is True
        assert loop.time() - started < 1.0

        await other.change_field_mapping("contacts", CUSTOM, by="ops")
        changed = await wait_for_config(configs, timeout=1.0)
        assert changed.mappings["contacts"] == build_mapping("contacts", CUSTOM)
    finally:
        stop.set()
        stopping = asyncio.get_running_loop().time()
        await asyncio.wait_for(task, timeout=2.0)
    assert asyncio.get_running_loop().time() - stopping < 0.3


async def test_follow_without_baseline_reports_the_current_config() -> None:
    """Started without current_config(), follow reports the config in force at once."""
    service = IntegrationService(in_memory())
    configs: asyncio.Queue[SyncConfig] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(service.follow(stop, configs.put_nowait, interval=0.05))
    try:
        assert await wait_for_config(configs, timeout=1.0) == NOT_SET_UP
    finally:
        stop.set()
        await task


class FlakyApplication(IntegrationApplication):
    """The database fails the first poll, then answers again."""

    failures = 1

    def position(self) -> int:
        if self.failures:
            self.failures -= 1
            raise OperationalError("connection refused")
        return super().position()


async def test_follow_survives_a_database_error() -> None:
    """A failed poll is logged; the follower keeps polling and reports once it succeeds."""
    app = FlakyApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    service = IntegrationService(app)
    configs: asyncio.Queue[SyncConfig] = asyncio.Queue()
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(service.follow(stop, configs.put_nowait, interval=0.05))
        try:
            assert await wait_for_config(configs, timeout=1.0) == NOT_SET_UP
        finally:
            stop.set()
            await task
    events = [entry["event"] for entry in logs]
    assert events[:2] == ["integration_follow_failed", "integration_config_applied"]
    assert "integration_follow_recovered" in events


@pytest.mark.parametrize("interval", [0, -1, 1.5])
async def test_follow_refuses_an_interval_that_breaks_the_one_second_promise(
        interval: float) -> None:
    """The poll interval must be positive and at most one second."""
    service = IntegrationService(in_memory())
    with pytest.raises(ValueError, match="interval"):
        await service.follow(asyncio.Event(), lambda config: None, interval=interval)


class StuckApplication(IntegrationApplication):
    """The database went away: a poll waits for a connection until its timeout."""

    def position(self) -> int:
        time.sleep(3)
        raise OperationalError("connection timeout expired")


async def test_follow_stops_at_once_while_a_poll_waits_for_the_database() -> None:
    """Stop ends follow even while its poll waits for a database that is gone (the
    daemon's shutdown once waited for such a poll until the deadline cancelled it)."""
    service = IntegrationService(StuckApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}))
    stop = asyncio.Event()
    task = asyncio.create_task(service.follow(stop, lambda config: None, interval=0.05))
    await asyncio.sleep(0.2)  # the first poll is waiting
    loop = asyncio.get_running_loop()
    stopping = loop.time()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert loop.time() - stopping < 0.5
