"""A hosted store's limits (issue 16, part 3): the daemon's own credit budget parks
its writes before the service would refuse them and resumes when credits return;
a service that answers 429 with ``Retry-After`` slows the sync down. Either way,
every change lands once and nothing fails."""

from __future__ import annotations

import dataclasses
import time

import asyncpg
import pytest
from structlog.testing import capture_logs

from adapters.call_budget import ApiLimits, CallBudget
from adapters.command_writer import Backoff
from adapters.credit_ledger import CreditLedger
from adapters.write_errors import Parked
from adapters.zoho.desk import ZohoDesk, ZohoDeskOptions
from adapters.zoho.desk_store import zoho_desk_store
from ops.emulators.zoho_desk import ZohoDeskEmulator, running_emulator
from projections.stores.commands import Command
from tests.support.pipeline import Pipeline

CONTACTS = 12


async def test_the_budget_parks_reads_and_writes_apart() -> None:
    budget = CallBudget("desk", credits=10, window=0.5, reserve=0.2)
    for _ in range(8):
        async with budget.call(write=True):
            pass
    with pytest.raises(Parked) as parked:
        async with budget.call(write=True):
            pass
    assert 0 < parked.value.retry_after <= 0.5 and "8 of 10 API credits" in parked.value.detail
    for _ in range(2):  # the reserve is the reads'
        async with budget.call(write=False):
            pass
    assert budget.spent == 10
    started = time.monotonic()
    async with budget.call(write=False):  # past all of it: waits for credits to return
        pass
    assert time.monotonic() - started >= 0.3
    held = CallBudget("desk", credits=10, window=3600, reserve=0.2)  # writes: 8
    for _ in range(6):
        async with held.call(write=True):
            pass
    with pytest.raises(Parked), held.held(3):  # a write's look-up and itself: not there
        pass
    assert held.spent == 6  # and nothing spent for it
    with held.held(2):  # there: charged at once, then spent by the calls within
        assert held.spent == 8
        for write in (False, True):
            async with held.call(write=write):
                pass
        assert held.spent == 8
        with pytest.raises(Parked):  # a third call is charged as any, past the writes'
            async with held.call(write=True):
                pass
    daily = CallBudget("desk", credits=1, window=3600)
    async with daily.call(write=False):
        pass
    with pytest.raises(Parked):  # a day away: said, not waited for
        async with daily.call(write=False):
            pass


async def sync_crm_contacts_to(emulator: ZohoDeskEmulator, options: ZohoDeskOptions, *,
                               database_url: str, kafka_bootstrap: str, topic_prefix: str,
                               poll_interval: float) -> int:
    """Create CONTACTS contacts in the embedded CRM and sync them to the emulated desk;
    return how many the desk holds, and the failures logged."""
    store, client = zoho_desk_store(options, backoff=Backoff(base=0.05, cap=0.5),
                                    poll_interval=poll_interval)
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
    await pipe.start()
    try:
        await pipe.execute(
            "INSERT INTO crm.contacts (last_name, email) SELECT 'C' || n, 'c' || n ||"
            " '@limits.example' FROM generate_series(1, $1) AS n", CONTACTS)
        await pipe.drain(timeout=90)
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()
    return len([r for r in emulator.records["contacts"].values()
                if str(r.get("email", "")).endswith("@limits.example")])


async def test_a_credit_budget_parks_the_writes_and_resumes_when_credits_return(
        database_url: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_emulator() as emulator:
        # 16 credits in 3 s, seven of the first window's spent by the start-up checks
        # (of a day's, in Zoho). Before a write held its look-up's credit with its
        # own, each attempt spent the look-up and parked the create, the five writes
        # retried in step, and the creates starved (this test timed out).
        options = dataclasses.replace(emulator.options(), limits=ApiLimits(
            credits=16, credit_window=3.0))
        with capture_logs() as logs:
            # A poll every 10 s: the poll's own reads (three a round) stay a small
            # part of the budget, as a minute's interval is of a day's credits.
            made = await sync_crm_contacts_to(
                emulator, options, database_url=database_url,
                kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, poll_interval=10)
        assert made == CONTACTS  # each once, none failed
        events = [e["event"] for e in logs]
        assert "store_writes_parked" in events and "store_writes_resumed" in events
        assert emulator.refused_for_credits == 0  # the daemon parked before Zoho refused


async def test_a_service_answering_429_slows_the_sync_without_a_failure(
        database_url: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_emulator() as emulator:
        emulator.credits = (10, 1.0)  # ten calls a second, then 429 with Retry-After
        made = await sync_crm_contacts_to(
            emulator, emulator.options(), database_url=database_url,
            kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, poll_interval=0.5)
        assert made == CONTACTS  # each once, none failed
        assert emulator.refused_for_credits > 0  # it was rate-limited, and waited


async def test_spending_is_recorded_for_a_restart_and_the_other_replicas(
        pool: asyncpg.Pool) -> None:
    """What a daemon spent is counted by the one that starts after it (it does not
    start from nought) and by a replica beside it; spending older than the window is
    neither counted nor kept."""
    await pool.execute("DELETE FROM syncd.api_credits")
    first = CallBudget("crm", credits=10, window=3600, reserve=0.1)
    for _ in range(7):
        async with first.call(write=True):
            pass
    await CreditLedger(pool, "crm", first).record()

    restarted = CallBudget("crm", credits=10, window=3600, reserve=0.1)
    ledger = CreditLedger(pool, "crm", restarted)
    await ledger.record()
    assert restarted.spent == 7
    for _ in range(2):  # nine tenths of ten: the writes' share
        async with restarted.call(write=True):
            pass
    with pytest.raises(Parked) as parked:
        async with restarted.call(write=True):
            pass
    assert "9 of 10 API credits" in parked.value.detail
    assert parked.value.retry_after > 3000  # the oldest spending is an hour from aging out

    replica = CallBudget("crm", credits=10, window=3600, reserve=0.1)
    await CreditLedger(pool, "crm", replica).record()
    assert replica.spent == 7  # the restarted one's two are not recorded yet
    await ledger.record()
    await CreditLedger(pool, "crm", replica).record()
    assert replica.spent == 9
    assert await pool.fetchval("SELECT sum(spent) FROM syncd.api_credits") == 9

    await pool.execute("INSERT INTO syncd.api_credits (store, minute, spent) VALUES"
                       " ('crm', date_trunc('minute', now()) - interval '90 minutes', 5),"
                       " ('crm', date_trunc('minute', now()) - interval '3 hours', 5)")
    await ledger.record()
    assert restarted.spent == 9  # 90 minutes ago is out of the window
    assert await pool.fetchval("SELECT count(*) FROM syncd.api_credits WHERE minute"
                               " < now() - interval '2 hours'") == 0  # removed


async def test_the_daemon_records_a_counted_stores_spending(
        database_url: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    """With credits counted, the pipeline runs the store's ledger (``credits-desk``)
    and what the sync spent is in the database when it stops."""
    async with running_emulator() as emulator:
        options = dataclasses.replace(emulator.options(), limits=ApiLimits(credits=10_000))
        store, client = zoho_desk_store(options, backoff=Backoff(base=0.05, cap=0.5))
        pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
        await pipe.start()
        try:
            assert "credits-desk" in pipe.parts.roots()
            await pipe.execute("INSERT INTO crm.contacts (last_name) VALUES ('Counted')")
            await pipe.drain(timeout=60)
        finally:
            await pipe.close()
            await client.close()
        assert await pipe_spent(database_url) == client.client.calls > 0


async def pipe_spent(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(spent), 0) FROM syncd.api_credits WHERE store = 'desk'"))
    finally:
        await conn.close()


async def test_a_write_that_must_park_spends_nothing_first() -> None:
    """A write's look-ups are charged with it, at once: when the budget holds the
    look-up's credit but not the write's, the write parks before it looks anything up
    (it spent the look-up and then parked, again at every retry, before)."""
    async with running_emulator() as emulator:
        desk = ZohoDesk(dataclasses.replace(emulator.options(), limits=ApiLimits(
            credits=10, credit_window=3600)))  # the writes' share: 9
        try:
            budget = desk.client.budget
            for _ in range(8):
                async with budget.call(write=True):
                    pass
            emulator.calls.clear()
            create = Command(store="desk", module="contacts", record_key="new:1",
                             op="create", payload={"last_name": "Later"})
            with pytest.raises(Parked):
                await desk.write(create)
            assert budget.spent == 8 and emulator.calls == []
        finally:
            await desk.close()
