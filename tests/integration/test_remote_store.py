"""A remote store in the sync (issue 15 part 3): the CRM is a fake HTTP record service
written through the command outbox by its writer, the desk the embedded store. The
whole path: decided in the batch, queued with it, delivered after it, landed back as
an event that moves the link onto the store's id; echoes recognised, nothing loops,
a stale write gives way, a refused one fails with its reason and is retried."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adapters import metrics
from projections.stores.port import SYNC_KEY_FIELD
from projections.sync_plan import REASON_ALREADY_MAPPED
from tests.support.pipeline import Pipeline
from tests.support.record_service import Fault, RecordService, remote_store, running_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def service() -> AsyncIterator[RecordService]:
    async with running_service() as svc:
        yield svc


@pytest.fixture
async def remote_crm(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                     service: RecordService) -> AsyncIterator[Pipeline]:
    store, reads, target = remote_store(service.url, base=0.05, cap=0.2)
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
    await pipe.start()
    try:
        yield pipe
    finally:
        await pipe.close()
        await reads.close()
        await target.close()


async def until(check: Callable[[], Any], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def crm_twin(pipe: Pipeline, module: str, desk_id: int) -> str | None:
    found = await pipe.fetchval(
        "SELECT crm_id FROM sync.links WHERE module = $1 AND desk_id = $2",
        module, str(desk_id))
    return None if found is None else str(found)


def stale_writes() -> float:
    return metrics.COMMAND_ATTEMPTS.labels("crm", "stale")._value.get()  # type: ignore[no-any-return]


def only(service: RecordService, module: str) -> dict[str, Any]:
    (record,) = service.records[module].values()
    return record


async def test_desk_records_reach_the_remote_crm_linked_by_its_ids(
        remote_crm: Pipeline, service: RecordService) -> None:
    """A desk account and a contact pointing at it, created in one batch: the remote
    CRM holds each once, the contact pointing at the account's remote id (resolved from
    the placeholder it was queued with); the links hold the remote ids; the captured
    echo of the create is an echo; the writes land without a failure."""
    pipe = remote_crm
    # One statement, so one transaction: both rows reach the outbox, the relay and the
    # topic together, and one fetch reads both. Two transactions a moment apart were
    # one batch only by timing (in two, the contact is written without its account,
    # then again once the account is linked: a third landing).
    row = await pipe.fetchrow(
        "WITH a AS (INSERT INTO desk.accounts (account_name) VALUES ('Acme') RETURNING id)"
        " INSERT INTO desk.contacts (last_name, email, account_id)"
        " SELECT 'Doe', 'doe@acme.example', id FROM a RETURNING id, account_id")
    assert row is not None
    contact, account = row["id"], row["account_id"]
    await pipe.drain()
    remote_account, remote_contact = only(service, "accounts"), only(service, "contacts")
    assert remote_contact["email"] == "doe@acme.example"
    assert remote_contact["account_id"] == int(remote_account["id"])
    assert await crm_twin(pipe, "accounts", account) == remote_account["id"]
    assert await crm_twin(pipe, "contacts", contact) == remote_contact["id"]
    assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    # Each landing came back as an event of origin sync, and was taken as an echo.
    assert await pipe.fetchval(
        "SELECT count(*) FROM sync.outcomes WHERE source = 'crm' AND outcome = 'echo'") == 2

    # The remote store's own capture of the sync's create: an echo, nothing written.
    effects = service.effects()
    await pipe.captured("crm", service.change("contacts", remote_contact["id"]))
    await pipe.drain()
    assert service.effects() == effects
    assert await pipe.fetchval(
        "SELECT outcome FROM sync.outcomes WHERE source = 'crm' ORDER BY id DESC"
        " LIMIT 1") == "echo"
    assert await pipe.fetchval("SELECT count(*) FROM sync.commands") == 0


async def test_edits_flow_both_ways_without_a_loop(
        remote_crm: Pipeline, service: RecordService) -> None:
    pipe = remote_crm
    contact = await pipe.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Roe', 'roe@x.example')"
        " RETURNING id")
    await pipe.drain()
    remote_id = only(service, "contacts")["id"]

    # A person edits the contact in the remote CRM: the desk follows.
    await pipe.captured("crm", service.edit("contacts", remote_id, {"phone": "+44 20 7946 0000"}))
    await pipe.drain()
    assert await pipe.fetchval("SELECT phone FROM desk.contacts WHERE id = $1",
                               contact) == "+44 20 7946 0000"
    # A desk edit: the remote record is updated in place (one record, never two).
    await pipe.execute("UPDATE desk.contacts SET last_name = 'Roe-Smith' WHERE id = $1",
                       contact)
    await pipe.drain()
    assert only(service, "contacts")["last_name"] == "Roe-Smith"
    assert only(service, "contacts")["phone"] == "+44 20 7946 0000"

    # Quiet: the landing of that update and the store's capture of it are echoes.
    await pipe.captured("crm", service.change("contacts", remote_id))
    await pipe.drain()
    logged = await pipe.fetchval("SELECT count(*) FROM syncd.event_log")
    effects = service.effects()
    await asyncio.sleep(0.5)
    await pipe.drain()
    assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log") == logged
    assert service.effects() == effects
    assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0


async def test_a_remote_record_matches_by_e_mail_and_a_queued_create_is_not_doubled(
        remote_crm: Pipeline, service: RecordService) -> None:
    """A desk contact whose e-mail a remote record holds links to it (found through the
    remote store's search); two desk contacts with one new e-mail make one remote
    record: the second finds the first's create still queued, or landed."""
    pipe = remote_crm
    service.records["contacts"] = {"77": {
        "id": "77", "last_name": "Held", "email": "held@x.example", "custom": {},
        "deleted": False, "created_time": "2026-01-01T00:00:00+00:00",
        "modified_time": "2026-01-01T00:00:00+00:00"}}
    held = await pipe.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Held', 'HELD@x.example')"
        " RETURNING id")
    await pipe.drain()
    assert await crm_twin(pipe, "contacts", held) == "77"
    assert len(service.records["contacts"]) == 1

    await pipe.execute("INSERT INTO desk.contacts (last_name, email)"
                       " VALUES ('One', 'same@x.example')")
    await pipe.execute("INSERT INTO desk.contacts (last_name, email)"
                       " VALUES ('Two', 'same@x.example')")
    await pipe.drain()
    same = [r for r in service.records["contacts"].values() if r["email"] == "same@x.example"]
    assert len(same) == 1
    assert SYNC_KEY_FIELD in same[0]
    # The second desk contact cannot link to a record the first one holds already.
    assert [r["reason"] for r in await pipe.fetch(
        "SELECT reason FROM sync.failures WHERE status = 'open'")] == [REASON_ALREADY_MAPPED]


async def test_a_refused_write_fails_with_its_reason_and_its_retry_lands(
        remote_crm: Pipeline, service: RecordService) -> None:
    pipe = remote_crm
    contact = await pipe.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Bad', 'bad@x.example')"
        " RETURNING id")
    await pipe.drain()
    remote_id = only(service, "contacts")["id"]
    service.refuse[remote_id] = (400, {"code": "MANDATORY_NOT_FOUND",
                                       "details": {"api_name": "Last_Name"}})
    await pipe.execute("UPDATE desk.contacts SET phone = '1' WHERE id = $1", contact)
    await pipe.drain()
    row = await pipe.fetchrow("SELECT source, record_id, reason FROM sync.failures"
                              " WHERE status = 'open'")
    assert row is not None and (row["source"], row["record_id"]) == ("desk", str(contact))
    assert row["reason"] == "mandatory field missing"
    assert only(service, "contacts").get("phone") is None
    # The link no longer claims to know what the remote holds: a retry writes again.
    assert await pipe.fetchval("SELECT crm_fp FROM sync.links WHERE desk_id = $1",
                               str(contact)) is None
    del service.refuse[remote_id]
    await pipe.execute("UPDATE desk.contacts SET phone = '2' WHERE id = $1", contact)
    await pipe.drain()
    assert only(service, "contacts")["phone"] == "2"


async def test_a_stale_write_gives_way_to_the_newer_remote_change(
        remote_crm: Pipeline, service: RecordService) -> None:
    """The remote record changed after the change the sync decided on (its capture not
    in yet): the conditional write is refused (412), nothing is overwritten, and when
    the change's event comes the pair converges with the newest values."""
    pipe = remote_crm
    contact = await pipe.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Old', 'st@x.example')"
        " RETURNING id")
    await pipe.drain()
    remote_id = only(service, "contacts")["id"]
    await asyncio.sleep(0.01)
    late = service.edit("contacts", remote_id, {"mobile": "555"})  # not captured yet
    stale_before = stale_writes()
    await pipe.execute("UPDATE desk.contacts SET last_name = 'New' WHERE id = $1", contact)
    await pipe.drain()
    assert only(service, "contacts")["last_name"] == "Old"  # the guard held
    assert stale_writes() == stale_before + 1
    assert only(service, "contacts")["mobile"] == "555"
    await pipe.captured("crm", late)
    await pipe.drain()
    assert only(service, "contacts")["last_name"] == "New"
    assert await pipe.fetchval("SELECT mobile FROM desk.contacts WHERE id = $1",
                               contact) == "555"
    assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0


def start_daemon(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                 data_dir: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url,
           "SYNCD_KAFKA_BOOTSTRAP": kafka_bootstrap, "SYNCD_TOPIC_PREFIX": topic_prefix,
           "SYNCD_GROUP_ID": f"{topic_prefix}-g", "SYNCD_PARTITIONS": "3",
           "SYNCD_HTTP_LISTEN": "127.0.0.1:0", "SYNCD_DATA_DIR": str(data_dir),
           "SYNCD_CONSUMER_SESSION_TIMEOUT_MS": "2000", "SYNCD_RELAY_POLL_INTERVAL": "0.2"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.run_remote_daemon", url], cwd=ROOT, env=env)


async def test_daemon_sigkilled_between_the_remote_write_and_its_acknowledgement(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
        service: RecordService) -> None:
    """The daemon (its writer a root task) is SIGKILLed after the remote CRM applied a
    create and before its answer came; restarted, it delivers the command again under
    its idempotency key and sync key: the remote holds the record once, its landing is
    recorded once, and the link holds the remote id."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    service.faults.append(Fault("apply_then_hang", seconds=120))
    proc = start_daemon(database_url, kafka_bootstrap, topic_prefix, tmp_path, service.url)
    try:
        contact = await pool.fetchval(
            "INSERT INTO desk.contacts (last_name, email) VALUES ('Kill', 'kill@x.example')"
            " RETURNING id")
        await asyncio.wait_for(service.applied.wait(), 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        service.release.set()
        assert await pool.fetchval("SELECT count(*) FROM sync.commands") == 1  # not settled
        assert len(service.records["contacts"]) == 1

        proc = start_daemon(database_url, kafka_bootstrap, topic_prefix, tmp_path,
                            service.url)

        async def settled() -> bool:
            twin = await pool.fetchval("SELECT crm_id FROM sync.links WHERE desk_id = $1",
                                       str(contact))
            return bool(twin) and not twin.startswith("new:") and not await pool.fetchval(
                "SELECT count(*) FROM sync.commands")

        await until(settled, timeout=60)
        (record,) = service.records["contacts"].values()
        assert await pool.fetchval("SELECT crm_id FROM sync.links WHERE desk_id = $1",
                                   str(contact)) == record["id"]
        assert len([r for r in service.received if r.answered == 200]) == 2  # twice
        assert service.effects() == 1
        assert await pool.fetchval(
            "SELECT count(*) FROM sync.outcomes WHERE source = 'crm'") == 1  # one landing
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        await pool.close()
