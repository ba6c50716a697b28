"""Zoho CRM's first sync by the bulk read (issue 16, SYNC-08): each module read as
jobs of a page each, captured in chunks, resumable where it stood; a job Zoho no
longer keeps asked for again; and 100,000 contacts read, SIGKILLed mid-way, read on
from where they stood and linked with the desk's."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from adapters.command_writer import Backoff
from adapters.remote_bulk import BulkFirstRead
from adapters.remote_capture import RemoteCapture
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_bulk import CrmBulkRead
from adapters.zoho.crm_poll import ZohoCrmPoll
from adapters.zoho.crm_store import zoho_crm_store
from ops.emulators.zoho_crm import ZohoCrmEmulator, running_emulator
from tests.support.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
WINDOW = dt.timedelta(days=1)


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoCrmEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
async def crm(emulator: ZohoCrmEmulator) -> AsyncIterator[ZohoCrm]:
    client = ZohoCrm(emulator.options())
    try:
        yield client
    finally:
        await client.close()


def contacts(emulator: ZohoCrmEmulator, count: int) -> list[str]:
    return [emulator.person_creates("contacts", {
        "Last_Name": f"Person {n}", "Email": f"p{n}@bulk.example", "Phone": f"+1 555 {n:07d}"})
        for n in range(count)]


def list_calls(emulator: ZohoCrmEmulator, module: str) -> int:
    return sum(1 for method, path, _ in emulator.calls if (method, path) == (
        "GET", f"/crm/v8/{module}"))


class Interrupted(Exception):
    """The daemon stopped mid-way (a kill, as far as the read can tell)."""


class CrashAfter(RemoteCapture):
    """A capture whose process dies after ``chunks`` chunks were captured."""

    def __init__(self, pool: asyncpg.Pool, chunks: int) -> None:
        super().__init__(pool, "crm")
        self.chunks = chunks

    async def observed(self, module, records, *, origin="user"):  # type: ignore[no-untyped-def]
        if self.chunks == 0:
            raise Interrupted
        self.chunks -= 1
        return await super().observed(module, records, origin=origin)


async def test_a_module_is_read_by_jobs_a_page_each_and_the_poll_goes_on_from_then(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, crm: ZohoCrm) -> None:
    emulator.bulk_per_page = 4
    emulator.bulk_seconds = 0.3  # each job runs a moment: its state is asked for again
    ids = contacts(emulator, 10)
    old = emulator.person_creates("contacts", {"Last_Name": "Old", "Email": "o@bulk.example"})
    emulator.backdate("contacts", old, dt.datetime.now(dt.UTC) - 2 * WINDOW)
    poll = ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), first_window=WINDOW,
                       modules=("contacts",), bulk=CrmBulkRead(crm))

    assert await poll.poll("contacts") == 10
    rows = await pool.fetch("SELECT record_id, op, origin, \"values\" FROM crm.outbox"
                            " ORDER BY seq")
    assert [(r["record_id"], r["op"], r["origin"]) for r in rows] == [
        (i, "create", "import") for i in ids]  # the one modified before the window: not
    assert len(emulator.bulk_jobs) == 3  # 11 records, 4 a page
    assert list_calls(emulator, "Contacts") == 0  # no list call: the jobs read them
    assert await pool.fetchval("SELECT count(*) FROM syncd.remote_bulk_reads") == 0
    cursor = await RemoteCapture(pool, "crm").cursor("contacts")
    assert cursor is not None and cursor < dt.datetime.now(dt.UTC)

    # What a list call gives later is what the bulk read gave: no change, no event.
    await pool.execute("DELETE FROM crm.outbox")
    assert await poll.poll("contacts") == 0
    emulator.edit("contacts", ids[3], {"Phone": "+1 555 9999"})
    assert await poll.poll("contacts") == 1
    assert await pool.fetchval("SELECT changed FROM crm.outbox") == ["phone"]


async def test_a_read_stopped_mid_way_goes_on_where_it_stood(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, crm: ZohoCrm) -> None:
    contacts(emulator, 10)
    with pytest.raises(Interrupted):
        await BulkFirstRead(CrmBulkRead(crm), CrashAfter(pool, chunks=2), chunk=3).run(
            "contacts", dt.datetime.now(dt.UTC) - WINDOW)
    state = await pool.fetchrow("SELECT page, job_id, captured FROM syncd.remote_bulk_reads")
    assert state is not None and (state["page"], state["captured"]) == (1, 6)

    resumed = await BulkFirstRead(CrmBulkRead(crm), RemoteCapture(pool, "crm"), chunk=3).run(
        "contacts", dt.datetime.now(dt.UTC) - WINDOW)
    assert resumed == 4  # the rest only
    assert list(emulator.bulk_jobs) == [state["job_id"]]  # the same job's file
    assert await pool.fetchval("SELECT count(*), count(DISTINCT record_id) FROM crm.outbox"
                               ) == 10


async def test_a_job_zoho_no_longer_keeps_is_asked_for_again_and_nothing_doubles(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, crm: ZohoCrm) -> None:
    contacts(emulator, 10)
    with pytest.raises(Interrupted):
        await BulkFirstRead(CrmBulkRead(crm), CrashAfter(pool, chunks=1), chunk=3).run(
            "contacts", dt.datetime.now(dt.UTC) - WINDOW)
    emulator.expire_bulk_jobs()  # a day later, say
    resumed = await BulkFirstRead(CrmBulkRead(crm), RemoteCapture(pool, "crm"), chunk=3).run(
        "contacts", dt.datetime.now(dt.UTC) - WINDOW)
    assert resumed == 7
    assert len(emulator.bulk_jobs) == 1  # the new job
    rows = await pool.fetch("SELECT record_id FROM crm.outbox")
    assert len(rows) == len({r["record_id"] for r in rows}) == 10


def start_capture(database_url: str, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.run_bulk_capture",
                             database_url, url], cwd=ROOT, env=dict(os.environ))


async def until(check, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.2)


COUNT = 100_000


async def test_a_hundred_thousand_contacts_survive_a_sigkill_and_are_linked_with_the_desks(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, pool: asyncpg.Pool,
        emulator: ZohoCrmEmulator) -> None:
    """The first sync's read of 100,000 CRM contacts is SIGKILLed mid-way; restarted,
    it goes on where it stood (the same job, no contact captured twice); then the
    pipeline links each with the desk's contact of the same e-mail."""
    crm_ids = contacts(emulator, COUNT)
    # The desk's contacts were there before: not captured (the sync is one-way here).
    await pool.execute(
        "INSERT INTO desk.contacts (last_name, email, phone) SELECT 'Person ' || n,"
        " 'P' || n || '@Bulk.example', '+1 555 ' || lpad(n::text, 7, '0')"
        " FROM generate_series(0, $1 - 1) AS n", COUNT)
    await pool.execute("DELETE FROM desk.outbox")
    await pool.execute("ANALYZE desk.contacts")  # as a table that was there would be

    async def captured() -> int:
        return int(await pool.fetchval(
            "SELECT coalesce(max(captured), 0) FROM syncd.remote_bulk_reads"))

    proc = start_capture(database_url, emulator.url)
    try:
        await until(lambda: _at_least(captured, 20_000), "the read never got going", 120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stood = await captured()
        assert 20_000 <= stood < COUNT
        assert len(emulator.bulk_jobs) == 1

        proc = start_capture(database_url, emulator.url)

        async def read_all() -> bool:
            return await RemoteCapture(pool, "crm").cursor("contacts") is not None

        await until(read_all, "the resumed read did not finish", 240)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(emulator.bulk_jobs) == 1  # the same job's file, read again from where it stood
    row = await pool.fetchrow("SELECT count(*) AS n, count(DISTINCT record_id) AS ids"
                              " FROM crm.outbox WHERE origin = 'import'")
    assert row is not None and (row["n"], row["ids"]) == (COUNT, COUNT)

    store, client = zoho_crm_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                   poll_interval=1.0, first_window=WINDOW)
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
    pipe.configure(direction="crm_to_desk")
    await pipe.start()
    try:
        await pipe.drain(timeout=600)
    finally:
        await pipe.close()
        await client.close()
    links = await pool.fetch("SELECT l.crm_id, c.email FROM sync.links l JOIN desk.contacts c"
                             " ON c.id::text = l.desk_id WHERE l.module = 'contacts'")
    assert len(links) == COUNT
    by_id = {r["crm_id"]: r["email"].lower() for r in links}
    assert set(by_id) == set(crm_ids)
    assert all(by_id[i] == emulator.module("contacts")[i]["Email"] for i in crm_ids)
    assert await pool.fetchval("SELECT count(*) FROM desk.contacts") == COUNT  # none doubled
    assert await pool.fetchval("SELECT count(*) FROM sync.failures") == 0


async def _at_least(check, wanted: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await check() >= wanted)
