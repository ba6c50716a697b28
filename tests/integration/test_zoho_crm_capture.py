"""Zoho CRM's change capture by polling (issue 16): records modified since a cursor
become change events naming only the fields that changed, once each; paging past
2,000 records goes by token; the sync's own writes fetched back are old news; and
end to end, a contact a person creates in the CRM reaches the desk."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from adapters.command_writer import Backoff, CommandWriter
from adapters.remote_capture import RemoteCapture
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_poll import Notifications, ZohoCrmPoll
from adapters.zoho.crm_store import zoho_crm_store
from daemon.runtime.embedded import free_port
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from ops.emulators.zoho_crm import ZohoCrmEmulator, running_emulator
from projections.db import loads_json
from projections.mapping import build_mapping
from projections.stores import commands
from projections.stores.commands import Command
from tests.support.daemon import running_daemon
from tests.support.pipeline import Pipeline


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoCrmEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
async def poll(pool: asyncpg.Pool, emulator: ZohoCrmEmulator) -> AsyncIterator[ZohoCrmPoll]:
    crm = ZohoCrm(emulator.options())
    try:
        yield ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), interval=0.2)
    finally:
        await crm.close()


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, str, list[str] | None, str]]:
    rows = await pool.fetch("SELECT record_id, op, changed, origin FROM crm.outbox"
                            " ORDER BY seq")
    return [(r["record_id"], r["op"], r["changed"], r["origin"]) for r in rows]


async def test_each_change_is_captured_once_with_the_fields_it_touched(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, poll: ZohoCrmPoll) -> None:
    ann = emulator.person_creates("contacts", {"Last_Name": "Ann", "Email": "ann@x.example"})
    assert await poll.poll("contacts") == 1
    assert await outbox(pool) == [(ann, "create", None, "import")]  # the first window's
    assert await poll.poll("contacts") == 0  # fetched again (the overlap): old news
    await pool.execute("DELETE FROM crm.outbox")
    emulator.edit("contacts", ann, {"Phone": "+1 555"})
    assert await poll.poll("contacts") == 1
    assert await outbox(pool) == [(ann, "update", ["phone"], "user")]
    values = loads_json(await pool.fetchval('SELECT "values" FROM crm.outbox'))
    assert values["phone"] == "+1 555" and values["last_name"] == "Ann"
    # A write that moved only the record's time (a field the sync does not read).
    await pool.execute("DELETE FROM crm.outbox")
    emulator.edit("contacts", ann, {"Description": "not synced"})
    assert await poll.poll("contacts") == 0
    assert await outbox(pool) == []


async def test_more_than_two_thousand_changes_are_paged_by_token(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, poll: ZohoCrmPoll) -> None:
    for n in range(2150):
        emulator.person_creates("products", {"Product_Name": f"P{n}"})
    assert await poll.poll("products") == 2150
    lists = [c for c in emulator.calls if c[:2] == ("GET", "/crm/v8/Products")]
    assert len(lists) == 11 and all(status == 200 for *_, status in lists)
    assert await pool.fetchval("SELECT count(DISTINCT record_id) FROM crm.outbox") == 2150


async def test_the_syncs_own_write_fetched_back_is_old_news(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, poll: ZohoCrmPoll) -> None:
    async with pool.acquire() as conn:
        await commands.enqueue(conn, [Command(
            store="crm", module="accounts", record_key="new:acme", op="create",
            payload={"account_name": "Acme", "website": None, "phone": None,
                     "industry": None, "custom": {}})])
    writer = CommandWriter(pool, poll.crm, backoff=Backoff(base=0.05, cap=0.2))
    assert await writer.deliver_once() == 1
    assert [r[1:] for r in await outbox(pool)] == [("create", None, "sync")]  # the landing
    assert await poll.poll("accounts") == 0


async def test_a_contact_created_in_zoho_reaches_the_desk(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoCrmEmulator) -> None:
    store, client = zoho_crm_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                   poll_interval=0.2, first_window=dt.timedelta(hours=1))
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
    await pipe.start()
    try:
        acme = emulator.person_creates("accounts", {"Account_Name": "Acme"})
        emulator.person_creates("contacts", {
            "Last_Name": "Zed", "Email": "zed@acme.example",
            "Account_Name": {"id": acme, "name": "Acme"}})
        await pipe.wait_for_count(
            "SELECT count(*) FROM desk.contacts WHERE email = 'zed@acme.example'", 1)
        await pipe.drain()
        desk = await pipe.fetchrow("SELECT id, account_id FROM desk.contacts")
        assert desk is not None
        assert await pipe.fetchval(
            "SELECT desk_id FROM sync.links WHERE module = 'accounts' AND crm_id = $1",
            acme) == str(desk["account_id"])
        # The desk's edit goes to Zoho; the poll's copy of it is old news: quiet.
        await pipe.execute("UPDATE desk.contacts SET phone = '42' WHERE id = $1",
                           desk["id"])
        await pipe.drain()
        (contact,) = [r for r in emulator.module("contacts").values()]
        assert contact["Phone"] == "42"
        logged = await pipe.fetchval("SELECT count(*) FROM syncd.event_log")
        await asyncio.sleep(1.0)  # about five more poll rounds
        await pipe.drain()
        assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log") == logged
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()


async def test_a_custom_field_edited_alone_in_zoho_reaches_the_desk_and_back(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoCrmEmulator) -> None:
    """A Zoho CRM custom field named by its API name (``custom.Customer_Tier``) mapped
    to a desk custom field: read by the first sync's bulk read, then edited alone in
    Zoho (the poll asks for the mapped custom fields; the capture names the one that
    changed), each value reaches the desk; edited alone on the desk, it lands in Zoho
    under its API name."""
    emulator.custom_fields["Contacts"].add("Customer_Tier")
    zid = emulator.person_creates("contacts", {
        "Last_Name": "Tier", "Email": "tier@x.example", "Customer_Tier": "Gold"})
    store, client = zoho_crm_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                   poll_interval=0.2, first_window=dt.timedelta(hours=1),
                                   config=lambda: pipe.config)
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
    pipe.configure(mappings={**pipe.config.mappings, "contacts": build_mapping("contacts", [
        {"desk": "last_name", "crm": "last_name"}, {"desk": "email", "crm": "email"},
        {"desk": "custom.region", "desk_type": "text",
         "crm": "custom.Customer_Tier", "crm_type": "text"}])})
    await pipe.start()
    try:
        await pipe.wait_for_count("SELECT count(*) FROM desk.contacts"
                                  " WHERE custom->>'region' = 'Gold'", 1)
        emulator.edit("contacts", zid, {"Customer_Tier": "Platinum"})
        await pipe.wait_for_count("SELECT count(*) FROM desk.contacts"
                                  " WHERE custom->>'region' = 'Platinum'", 1)
        await pipe.execute("UPDATE desk.contacts SET custom = custom || '{\"region\": \"Silver\"}'")
        await pipe.drain()
        assert emulator.module("contacts")[zid]["Customer_Tier"] == "Silver"
        assert emulator.module("contacts")[zid]["Last_Name"] == "Tier"
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()


async def test_the_daemon_configured_for_zoho_crm(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, data_dir: Path,
        emulator: ZohoCrmEmulator) -> None:
    """``SYNCD_CRM_STORE=zoho`` and its credentials: the daemon runs its writer and its
    poll for the CRM; a contact created in Zoho reaches the desk and one created on
    the desk reaches Zoho; no secret is in the logs."""
    with capture_logs() as logs:
        async with running_daemon(
                database_url, kafka_bootstrap, topic_prefix, data_dir, crm_store="zoho",
                zoho_crm_client_id=CLIENT_ID, zoho_crm_client_secret=SecretStr(CLIENT_SECRET),
                zoho_crm_refresh_token=SecretStr(REFRESH_TOKEN),
                zoho_crm_accounts_url=emulator.url, zoho_crm_poll_interval=0.2) as daemon:
            await daemon.enable_sync()
            # A mapping's custom fields are checked against the CRM's: a name Zoho does
            # not have is refused, saying what it is called; its own name is taken.
            emulator.custom_fields["Contacts"].add("Customer_Tier")
            tier = {"desk": "custom.tier", "desk_type": "text", "crm_type": "text"}
            standard = [{"desk": "last_name", "crm": "last_name"},
                        {"desk": "email", "crm": "email"}]
            status, answer = await daemon.call(
                "PUT", "/api/v1/integration/mapping/contacts",
                body={"entries": [*standard, {**tier, "crm": "custom.customer_tier"}]})
            assert status == 409, answer
            assert answer["error"]["message"] == (
                "contacts mapping: crm custom.customer_tier: Contacts has no field the"
                " sync can map with the API name customer_tier (API names are"
                " case-sensitive: custom.Customer_Tier) (Setup > Developer Space > APIs >"
                " API names)")
            status, answer = await daemon.call(
                "PUT", "/api/v1/integration/mapping/contacts",
                body={"entries": [*standard, {**tier, "crm": "custom.Customer_Tier"}]})
            assert status == 200, answer
            emulator.person_creates("contacts", {"Last_Name": "Crm", "Email": "c@x.example"})
            await daemon.wait_until(
                "SELECT count(*) FROM desk.contacts WHERE email = 'c@x.example'", 1)
            await daemon.pool.execute(
                "INSERT INTO desk.contacts (last_name, email) VALUES ('Desk', 'd@x.example')")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not any(r.get("Email") == "d@x.example"
                          for r in emulator.module("contacts").values()):
                assert loop.time() < deadline, "the desk's contact never reached Zoho"
                await asyncio.sleep(0.1)
    text = repr(logs)
    assert CLIENT_SECRET not in text and REFRESH_TOKEN not in text
    assert not any(token in text for token in emulator.tokens)


async def test_a_notification_wakes_the_poll_and_a_wrong_token_is_refused(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, data_dir: Path,
        emulator: ZohoCrmEmulator) -> None:
    """With a notify URL the daemon subscribes a channel; Zoho's notification of a
    person's edit (its token checked) wakes the poll at once: the desk has the edit
    long before the 60 s poll interval. A notification with another token is a 401
    and captures nothing."""
    port = free_port()
    token = "channel-token-0123456789"
    async with running_daemon(
            database_url, kafka_bootstrap, topic_prefix, data_dir, crm_store="zoho",
            http_listen=f"127.0.0.1:{port}", zoho_crm_client_id=CLIENT_ID,
            zoho_crm_client_secret=SecretStr(CLIENT_SECRET),
            zoho_crm_refresh_token=SecretStr(REFRESH_TOKEN),
            zoho_crm_accounts_url=emulator.url, zoho_crm_poll_interval=60,
            zoho_crm_notify_url=f"http://127.0.0.1:{port}/webhooks/zoho-crm",
            zoho_crm_channel_token=SecretStr(token)) as daemon:
        await daemon.enable_sync()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not emulator.channels:
            assert loop.time() < deadline, "no channel subscribed"
            await asyncio.sleep(0.05)
        (channel,) = emulator.channels.values()
        assert channel["events"] == ["Accounts.all", "Contacts.all", "Products.all",
                                     "Leads.all", "Deals.all"]
        assert channel["token"] == token
        await asyncio.sleep(1.5)  # the first poll round is over: the next is 60 s away
        created = emulator.person_creates("contacts", {"Last_Name": "Woken",
                                                       "Email": "w@x.example"})
        status, answer = await daemon.call(
            "POST", "/webhooks/zoho-crm", role=None, body={
                "channel_id": channel["channel_id"], "module": "Contacts",
                "operation": "insert", "ids": [created], "token": "another-token-000000"})
        assert status == 401 and answer["error"]["code"] == "bad_channel_token"
        started = loop.time()
        assert await emulator.notify("contacts", [created], "insert") == 1
        await daemon.wait_until(
            "SELECT count(*) FROM desk.contacts WHERE email = 'w@x.example'", 1, timeout=20)
        assert loop.time() - started < 20


async def test_a_dropped_notification_is_caught_by_the_poll_within_its_interval(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator) -> None:
    """Zoho's notification of a change never arrives: the poll's next round, one
    interval later at most, captures the change all the same."""
    crm = ZohoCrm(emulator.options())
    poll = ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), interval=1.5, modules=("contacts",))
    stop = asyncio.Event()
    task = asyncio.create_task(poll.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await RemoteCapture(pool, "crm").cursor("contacts") is None:
            assert loop.time() < deadline, "the first round never ended"
            await asyncio.sleep(0.05)
        created = emulator.person_creates("contacts", {"Last_Name": "Unannounced"})
        emulator.drop_notifications = 1
        assert await emulator.notify("contacts", [created], "insert") == 0
        started = loop.time()
        while not await pool.fetchval("SELECT count(*) FROM crm.outbox WHERE record_id = $1",
                                      created):
            assert loop.time() - started < 1.5 + 1.0, "not captured within the interval"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await crm.close()


async def test_the_notification_channel_is_renewed_before_it_expires(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator) -> None:
    crm = ZohoCrm(emulator.options())
    poll = ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), interval=30, notifications=Notifications(
        notify_url="http://127.0.0.1:9/webhooks/zoho-crm", token=SecretStr("t" * 20),
        channel_id=7, span=dt.timedelta(seconds=4)))
    stop = asyncio.Event()
    task = asyncio.create_task(poll.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(emulator.subscriptions) < 3:
            assert loop.time() < deadline, emulator.subscriptions
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await crm.close()
    (first, *renewals) = emulator.subscriptions[:3]
    assert first[0] == "POST" and [r[0] for r in renewals] == ["PATCH", "PATCH"]
    # Each renewal came before the expiry it replaced: the channel never lapsed.
    for (_, _, expiry, _), (_, _, later, asked) in zip(
            emulator.subscriptions, renewals, strict=False):
        assert asked < expiry < later
    assert emulator.channels[7]["expires"] > dt.datetime.now(dt.UTC)


async def test_a_contact_deleted_in_zoho_stays_on_the_desk_and_comes_back_when_it_changes(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoCrmEmulator) -> None:
    """SYNC-11 with Zoho CRM: a delete (the recycle bin's ``/deleted``) is captured
    and recorded on the link, never propagated; a later change of the desk's record
    creates it again in Zoho (Zoho's API restores nothing from its bin), linked."""
    store, client = zoho_crm_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                   poll_interval=0.2, first_window=dt.timedelta(hours=1))
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
    await pipe.start()
    try:
        await pipe.execute("INSERT INTO desk.contacts (last_name, email)"
                           " VALUES ('Gone', 'gone@x.example')")
        await pipe.drain()
        (zoho_id,) = list(emulator.module("contacts"))
        await asyncio.sleep(0.5)  # the poll has started its deletes' cursor
        emulator.person_deletes("contacts", zoho_id)
        await pipe.wait_for_count(
            "SELECT count(*) FROM sync.links WHERE module = 'contacts' AND crm_gone = 'hard'", 1)
        await pipe.drain()
        assert await pipe.fetchval("SELECT count(*) FROM desk.contacts"
                                   " WHERE email = 'gone@x.example' AND NOT deleted") == 1
        assert emulator.module("contacts") == {}  # not re-created by the delete itself
        await pipe.execute("UPDATE desk.contacts SET phone = '7' WHERE email = 'gone@x.example'")
        await pipe.drain()
        (again,) = list(emulator.module("contacts").values())
        assert again["id"] != zoho_id and again["Phone"] == "7"
        assert await pipe.fetchval("SELECT crm_id FROM sync.links WHERE module = 'contacts'"
                                   ) == again["id"]
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()


async def test_notes_and_activities_are_captured_with_the_record_they_hang_off(
        pool: asyncpg.Pool, emulator: ZohoCrmEmulator, poll: ZohoCrmPoll) -> None:
    """PERM-03 on a hosted CRM: notes, calls, events and tasks become events named as
    the embedded CRM names them, each with its parent (a note's Parent_Id, an
    activity's contact, else its What_Id record); notes, whose API takes no
    If-Modified-Since, are listed newest first down to the cursor; a note's delete is
    not asked for (no documented list)."""
    ann = emulator.person_creates("contacts", {"Last_Name": "Ann", "Email": "ann@x.example"})
    acme = emulator.person_creates("accounts", {"Account_Name": "Acme"})
    note = emulator.person_creates("notes", {
        "Note_Content": "Prefers e-mail", "Note_Title": "Channel",
        "Parent_Id": {"module": {"api_name": "Accounts", "id": "1"}, "id": acme,
                      "name": "Acme"}})
    call = emulator.person_creates("calls", {
        "Subject": "Renewal", "Call_Duration_in_seconds": 300,
        "Who_Id": {"id": ann, "name": "Ann"},
        "What_Id": {"id": acme, "name": "Acme"}, "$se_module": "Accounts"})
    event = emulator.person_creates("events", {
        "Event_Title": "Visit", "Start_DateTime": "2026-12-10T10:00:00+05:30",
        "What_Id": {"id": acme, "name": "Acme"}, "$se_module": "Accounts"})
    task = emulator.person_creates("tasks", {
        "Subject": "Send quote", "Due_Date": "2026-12-12", "Status": "Not Started",
        "Who_Id": {"id": ann, "name": "Ann"}})
    for module in ("notes", "calls", "events", "tasks"):
        assert await poll.poll(module) == 1, module
    rows = {r["module"]: (r["record_id"], loads_json(r["values"])) for r in await pool.fetch(
        'SELECT module, record_id, "values" FROM crm.outbox ORDER BY seq')}

    def without_times(values: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in values.items() if k not in ("created_time", "modified_time")}

    assert rows["notes"][0] == note and without_times(rows["notes"][1]) == {
        "content": "Prefers e-mail", "parent_module": "accounts", "parent_id": int(acme),
        "custom": {}, "deleted": False}
    assert rows["calls"][0] == call and without_times(rows["calls"][1]) == {
        "subject": "Renewal", "duration_seconds": 300, "parent_module": "contacts",
        "parent_id": int(ann), "custom": {}, "deleted": False}
    assert rows["events"][0] == event and without_times(rows["events"][1]) == {
        "subject": "Visit", "starts_at": "2026-12-10T10:00:00+05:30",
        "parent_module": "accounts", "parent_id": int(acme), "custom": {}, "deleted": False}
    assert rows["tasks"][0] == task and without_times(rows["tasks"][1]) == {
        "subject": "Send quote", "due_date": "2026-12-12", "status": "Not Started",
        "parent_module": "contacts", "parent_id": int(ann), "custom": {}, "deleted": False}

    await pool.execute("DELETE FROM crm.outbox")
    emulator.edit("notes", note, {"Note_Content": "Prefers phone"})
    emulator.person_creates("notes", {"Note_Content": "New", "Parent_Id": {
        "module": {"api_name": "Contacts"}, "id": ann}})
    assert await poll.poll("notes") == 2
    changes = [(r["op"], r["changed"]) for r in await pool.fetch(
        "SELECT op, changed FROM crm.outbox ORDER BY seq")]
    assert changes == [("update", ["content"]), ("create", None)]
    notes_lists = [c for c in emulator.calls if c[:2] == ("GET", "/crm/v8/Notes")]
    assert notes_lists and not any(c[:2] == ("GET", "/crm/v8/Notes/deleted")
                                   for c in emulator.calls)
