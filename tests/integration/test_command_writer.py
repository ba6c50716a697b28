"""The durable write path for stores outside the batch transaction (issue 15 part 3):
the command outbox and its writer, against a fake HTTP record service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from adapters import metrics
from adapters.command_writer import Backoff, CommandWriter, Landed
from adapters.write_errors import REASON_TARGET_UNREACHABLE
from projections.db import loads_json
from projections.mapping import REASON_MANDATORY
from projections.stores import commands
from projections.stores.commands import Cause, Command
from tests.support.record_service import Fault, RecordService, RecordServiceTarget, running_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def service() -> AsyncIterator[RecordService]:
    async with running_service() as svc:
        yield svc


@contextlib.asynccontextmanager
async def writing(pool: asyncpg.Pool, url: str, **options: object) -> AsyncIterator[
        CommandWriter]:
    target = RecordServiceTarget(url)
    writer = CommandWriter(pool, target, **options)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield writer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await target.close()


def command(record: str, n: int, *, op: str = "create", record_id: str | None = None
            ) -> Command:
    return Command(store="crm", module="contacts", record_key=record, op=op,
                   record_id=record_id, payload={"Last_Name": f"{record}-{n}"},
                   cause=Cause(uuid.uuid4(), "desk", "contacts", record))


async def until_empty(pool: asyncpg.Pool, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pool.fetchval("SELECT count(*) FROM sync.commands"):
        assert loop.time() < deadline, await pool.fetch("SELECT * FROM sync.commands")
        await asyncio.sleep(0.05)


def counted(result: str) -> float:
    return metrics.COMMAND_ATTEMPTS.labels("crm", result)._value.get()  # type: ignore[no-any-return]


async def test_rate_limits_outages_and_timeouts_delay_but_lose_nothing(
        pool: asyncpg.Pool, service: RecordService) -> None:
    """429 with Retry-After, then 503, then a timeout: every write arrives, each
    record's in the order decided, no failure is logged, and the metrics count the
    retries; the Retry-After is honoured for the whole target (nothing is sent to it
    before then)."""
    first = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM crm.outbox")
    async with pool.acquire() as conn:
        # One record created, then updated twice; two more records created.
        await commands.enqueue(conn, [command("a", 0), command("b", 0), command("c", 0)])
    service.faults.extend([
        Fault("status", 429, headers={"Retry-After": "1"}, body={"code": "TOO_MANY_REQUESTS"}),
        Fault("status", 503), Fault("hang", seconds=0.8)])
    transient_before, landed_before = counted("transient"), counted("landed")
    async with writing(pool, service.url, backoff=Backoff(base=0.05, cap=0.2),
                       attempt_timeout=0.5, concurrency=1):
        await until_empty(pool)
        ids = {loads_json(r["values"])["Last_Name"]: r["record_id"] for r in await pool.fetch(
            "SELECT record_id, \"values\" FROM crm.outbox WHERE seq > $1", first)}
        async with pool.acquire() as conn:
            await commands.enqueue(conn, [
                command("a", n, op="update", record_id=ids["a-0"]) for n in (1, 2)])
        await until_empty(pool)
    assert service.effects() == 5
    table = service.records["contacts"]
    assert sorted(r["Last_Name"] for r in table.values()) == ["a-2", "b-0", "c-0"]
    # Order per record: a's three writes arrived in the order they were decided.
    a_writes = [r for r in service.received if r.record_key == "a" and r.answered == 200]
    assert len(a_writes) == 3
    # The 429 asked for a second: the next attempt waited at least that long.
    rate_limited = next(r for r in service.received if r.answered == 429)
    after = [r for r in service.received if r.at > rate_limited.at]
    assert after and after[0].at - rate_limited.at >= 0.95
    assert await pool.fetchval("SELECT count(*) FROM sync.failures") == 0
    assert counted("transient") - transient_before >= 3
    assert counted("landed") - landed_before == 5
    # What landed comes back as the CRM's changes of origin sync, one per write.
    landed = await pool.fetch(
        "SELECT origin, op FROM crm.outbox WHERE seq > $1 ORDER BY seq", first)
    assert [(r["origin"], r["op"]) for r in landed] == [("sync", "create")] * 3 + [
        ("sync", "update")] * 2


async def test_a_refused_write_fails_with_its_reason_and_the_rest_flows(
        pool: asyncpg.Pool, service: RecordService) -> None:
    """A record whose write the target refuses is in the failure log with the
    reason; its own later write and the other records' writes still go."""
    service.refuse["bad"] = (400, {"data": [{"code": "MANDATORY_NOT_FOUND", "status": "error",
                                             "message": "required field not found",
                                             "details": {"api_name": "Last_Name"}}]})
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [command("bad", 0), command("good", 0),
                                      command("other", 0)])
    async with writing(pool, service.url, backoff=Backoff(base=0.05, cap=0.2)):
        await until_empty(pool)
        service.refuse.clear()  # fixed at the source: the record's next write lands
        async with pool.acquire() as conn:
            await commands.enqueue(conn, [command("bad", 1)])
        await until_empty(pool)
    failures = await pool.fetch("SELECT record_id, reason, detail FROM sync.failures")
    assert [(f["record_id"], f["reason"]) for f in failures] == [("bad", REASON_MANDATORY)]
    assert "MANDATORY_NOT_FOUND" in failures[0]["detail"]
    assert sorted(r["Last_Name"] for r in service.records["contacts"].values()) == [
        "bad-1", "good-0", "other-0"]


async def test_a_target_down_past_the_budget_is_a_failure_not_a_stuck_queue(
        pool: asyncpg.Pool, service: RecordService) -> None:
    """Transient errors past the retry budget end as "target unreachable" in the
    failure log (retryable), and the queue is empty again."""
    service.faults.extend(Fault("status", 503) for _ in range(1000))
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [command("x", 0)])
    async with writing(pool, service.url, backoff=Backoff(base=0.05, cap=0.1, budget=0.5)):
        await until_empty(pool)
    failures = await pool.fetch("SELECT record_id, reason, detail FROM sync.failures")
    assert [(f["record_id"], f["reason"]) for f in failures] == [("x", REASON_TARGET_UNREACHABLE)]
    assert "HTTP 503" in failures[0]["detail"]


async def test_one_writer_per_store_across_replicas(pool: asyncpg.Pool,
                                                    service: RecordService) -> None:
    """Two replicas' writers: one delivers, the other waits as a standby."""
    async with writing(pool, service.url) as one, writing(pool, service.url) as two:
        await asyncio.sleep(1.5)
        assert one.active.is_set() != two.active.is_set()


async def test_sigkill_between_the_remote_write_and_its_acknowledgement(
        pool: asyncpg.Pool, database_url: str, service: RecordService) -> None:
    """The writer's process is SIGKILLed after the target applied a create and before
    the answer reached it; after a restart the command is delivered again under the
    same idempotency key: the target holds the record once, and its landing is
    recorded once."""
    first = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM crm.outbox")
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [command("k", 0)])
    service.faults.append(Fault("apply_then_hang", seconds=60))
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
        [sys.executable, "-m", "tests.support.run_writer", database_url, service.url],
        cwd=ROOT, env=os.environ.copy())
    try:
        await asyncio.wait_for(service.applied.wait(), 30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        service.release.set()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert await pool.fetchval("SELECT count(*) FROM sync.commands") == 1  # not settled
    async with writing(pool, service.url):
        await until_empty(pool)
    assert service.effects() == 1
    assert len(service.records["contacts"]) == 1
    assert len([r for r in service.received if r.answered == 200]) == 2  # delivered twice
    assert await pool.fetchval("SELECT count(*) FROM crm.outbox WHERE seq > $1", first) == 1


class BrokenTarget(RecordServiceTarget):
    """A target adapter with a defect for one record: it raises a KeyError."""

    async def write(self, command: Command) -> Landed:
        if command.record_key == "broken":
            raise KeyError("id")
        return await super().write(command)


async def test_a_target_adapters_own_error_holds_back_only_its_record(
        pool: asyncpg.Pool, service: RecordService) -> None:
    """An unexpected exception from the target adapter is logged and retried like a
    transient error; the other records' writes land meanwhile, and past the budget
    the broken one fails as target unreachable."""
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [command("broken", 0), command("fine", 0)])
    target = BrokenTarget(service.url)
    writer = CommandWriter(pool, target, backoff=Backoff(base=0.05, cap=0.1, budget=0.5))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(writer.run(stop))
        try:
            await until_empty(pool)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await target.close()
    assert [r["Last_Name"] for r in service.records["contacts"].values()] == ["fine-0"]
    failures = await pool.fetch("SELECT record_id, reason FROM sync.failures")
    assert [(f["record_id"], f["reason"]) for f in failures] == [
        ("broken", REASON_TARGET_UNREACHABLE)]
    assert any(e["event"] == "write_failed_unexpectedly" for e in logs)


async def test_database_connections_cut_mid_delivery_lose_and_double_nothing(
        pool: asyncpg.Pool, database_url: str, service: RecordService) -> None:
    """Every connection of the writer is terminated three times while it delivers:
    it starts over each time (the lock taken again), and every command has landed
    once, each record's in order, with one landing each."""
    first = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM crm.outbox")
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [command(f"r{r}", n) for n in range(4) for r in range(8)])
    service.faults.extend(Fault("hang", seconds=0.05) for _ in range(32))
    killer = await asyncpg.connect(database_url)
    try:
        async with writing(pool, service.url, backoff=Backoff(base=0.05, cap=0.2)):
            for _ in range(3):
                await asyncio.sleep(0.15)
                await killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while await killer.fetchval("SELECT count(*) FROM sync.commands"):
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
        landings = await killer.fetchval(
            "SELECT count(*) FROM crm.outbox WHERE seq > $1", first)
    finally:
        await killer.close()
    assert service.effects() == 32
    for r in range(8):
        names = [r_["Last_Name"] for r_ in service.records["contacts"].values()
                 if r_["Last_Name"].startswith(f"r{r}-")]
        assert names == [f"r{r}-{n}" for n in range(4)]
    assert landings == 32
