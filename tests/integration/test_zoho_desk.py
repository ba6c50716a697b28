"""The Zoho Desk adapter (issue 16, part 2) against the emulator of the documented v1
API (ops/emulators/zoho_desk.py): its reads and writes alone; its capture
(the search's modified-time range, the webhook and its intake); and as the desk
side of the sync, with the embedded CRM, in a pipeline and in the daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from adapters.command_writer import Backoff
from adapters.remote_capture import RemoteCapture
from adapters.write_errors import Refused, Stale, Unavailable
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_capture import ZohoDeskPoll
from adapters.zoho.desk_store import zoho_desk_store
from daemon.runtime.embedded import free_port
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from ops.emulators.zoho_desk import ORG_ID, ZohoDeskEmulator, running_emulator
from projections.mapping import REASON_MANDATORY, build_mapping
from projections.stores.commands import Command
from projections.stores.port import SYNC_KEY_FIELD
from tests.support.daemon import running_daemon
from tests.support.pipeline import Pipeline


@pytest.fixture
async def emulator() -> AsyncIterator[ZohoDeskEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
async def desk(emulator: ZohoDeskEmulator) -> AsyncIterator[ZohoDesk]:
    client = ZohoDesk(emulator.options())
    try:
        yield client
    finally:
        await client.close()


def create(module: str, values: dict[str, object], key: str | None = None) -> Command:
    return Command(store="desk", module=module, record_key=key or f"new:{uuid.uuid4()}",
                   op="create", payload=values)


async def test_reads_find_by_normalised_keys_and_read_by_id(
        desk: ZohoDesk, emulator: ZohoDeskEmulator) -> None:
    ann = await desk.write(create("contacts", {
        "last_name": "Ann", "email": " Ann@Example.com", "secondary_email": "ann@home.example"}))
    await desk.write(create("contacts", {"last_name": "Bob", "email": "bob@example.com"}))
    acme = await desk.write(create("accounts", {"account_name": "ACME (EU), Ltd"}))
    (found,) = await desk.find("contacts", ["ann@example.com"], secondary=False)
    assert (found.id, found.key, found.via_secondary) == (ann.record_id, "ann@example.com",
                                                          False)
    assert found.values["last_name"] == "Ann" and found.values[SYNC_KEY_FIELD].startswith("new:")
    assert await desk.find("contacts", ["ann@home.example"], secondary=False) == []
    (by_secondary,) = await desk.find("contacts", ["ann@home.example"], secondary=True)
    assert by_secondary.via_secondary and by_secondary.id == ann.record_id
    (account,) = await desk.find("accounts", ["acme (eu), ltd"], secondary=False)
    assert account.id == acme.record_id
    held = await desk.read("contacts", [ann.record_id, "999"])
    assert list(held) == [ann.record_id]  # an unknown id is absent, not an error
    assert held[ann.record_id].modified_time == ann.modified_time
    # Every call named the organisation (the emulator refuses one that does not).
    assert all(status != 422 for *_, status in emulator.calls)


async def test_a_create_delivered_twice_is_one_record_and_an_update_is_guarded(
        desk: ZohoDesk, emulator: ZohoDeskEmulator) -> None:
    acme = await desk.write(create("accounts", {"account_name": "Acme"}, key="new:acme"))
    command = create("contacts", {"last_name": "Once", "email": "once@example.com",
                                  "account_id": "new:acme", "custom": {"cf_region": "EU"}})
    first = await desk.write(command)
    again = await desk.write(command)  # the writer's crash-and-retry
    assert first.record_id == again.record_id and len(emulator.records["contacts"]) == 1
    record = emulator.only("contacts")
    assert record["cf"] == {"cf_region": "EU", "cf_syncd_key": command.record_key}
    assert record["accountId"] == acme.record_id  # the placeholder, resolved
    assert first.values["account_id"] == int(acme.record_id)
    landed = await desk.write(Command(
        store="desk", module="contacts", record_key=first.record_id, op="update",
        record_id=first.record_id, payload={"last_name": "Twice"}, seen=first.modified_time))
    assert emulator.only("contacts")["lastName"] == "Twice"
    assert landed.values["last_name"] == "Twice" and landed.modified_time > first.modified_time
    emulator.person_edits("contacts", first.record_id, {"phone": "1"})
    with pytest.raises(Stale, match="was modified at"):
        await desk.write(Command(
            store="desk", module="contacts", record_key=first.record_id, op="update",
            record_id=first.record_id, payload={"last_name": "Lost"},
            seen=landed.modified_time))
    assert emulator.only("contacts")["lastName"] == "Twice"


async def test_refusals_carry_the_failure_logs_reasons(
        desk: ZohoDesk, emulator: ZohoDeskEmulator) -> None:
    with pytest.raises(Refused) as refused:
        await desk.write(create("contacts", {"last_name": None, "email": "x@example.com"}))
    assert refused.value.reason == REASON_MANDATORY and "/lastName" in refused.value.detail
    with pytest.raises(Refused) as refused:
        await desk.write(create("products", {"product_name": "No department"}))
    assert "/departmentIds" in refused.value.detail
    product = await desk.write(create("products", {"product_name": "P", "department_id": 7}))
    assert emulator.records["products"][product.record_id]["departmentIds"] == ["7"]
    emulator.refresh_refused = True
    emulator.revoke_tokens()
    with pytest.raises(Unavailable, match="refused the refresh token"):
        await desk.write(create("accounts", {"account_name": "A"}))


async def test_the_capture_pages_past_the_searchs_reach_and_takes_echoes_for_old_news(
        pool: asyncpg.Pool, emulator: ZohoDeskEmulator, desk: ZohoDesk) -> None:
    for n in range(1150):
        emulator.person_creates("products", {"productName": f"P{n}", "departmentIds": ["1"]})
    poll = ZohoDeskPoll(desk, RemoteCapture(pool, "desk"), interval=0.2)
    assert await poll.poll("products") == 1150  # 1,000 by ``from``, then a new range
    assert await pool.fetchval("SELECT count(DISTINCT record_id) FROM desk.outbox") == 1150
    assert await poll.poll("products") == 0  # the overlap's copies: old news
    person = emulator.person_creates("contacts", {"lastName": "Ann", "cf": {"cf_tier": "1"}})
    assert await poll.poll("contacts") == 1
    emulator.person_edits("contacts", person, {"phone": "42"})
    assert await poll.poll("contacts") == 1
    row = await pool.fetchrow("SELECT op, changed, origin FROM desk.outbox"
                              " WHERE record_id = $1 ORDER BY seq DESC LIMIT 1", person)
    assert row is not None
    assert (row["op"], row["changed"], row["origin"]) == ("update", ["phone"], "user")


async def test_a_contact_created_in_the_desk_reaches_the_crm_and_back_quietly(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    store, client = zoho_desk_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                    poll_interval=0.2, first_window=dt.timedelta(hours=1))
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
    await pipe.start()
    try:
        acme = emulator.person_creates("accounts", {"accountName": "Acme"})
        emulator.person_creates("contacts", {"lastName": "Zed", "email": "zed@acme.example",
                                             "accountId": acme})
        await pipe.wait_for_count(
            "SELECT count(*) FROM crm.contacts WHERE email = 'zed@acme.example'", 1)
        await pipe.drain()
        crm = await pipe.fetchrow("SELECT id, account_id FROM crm.contacts")
        assert crm is not None
        assert await pipe.fetchval(
            "SELECT crm_id FROM sync.links WHERE module = 'accounts' AND desk_id = $1",
            acme) == str(crm["account_id"])
        # The CRM's edit goes to the desk; the poll's copy of it is old news: quiet.
        await pipe.execute("UPDATE crm.contacts SET phone = '42' WHERE id = $1", crm["id"])
        await pipe.drain()
        (contact,) = [r for r in emulator.records["contacts"].values()]
        assert contact["phone"] == "42"
        # A contact created in the CRM is created in the desk, its account with it.
        await pipe.execute("INSERT INTO crm.accounts (account_name) VALUES ('Beta')")
        await pipe.execute("INSERT INTO crm.contacts (last_name, email, account_id) SELECT"
                           " 'Crm', 'c@beta.example', id FROM crm.accounts"
                           " WHERE account_name = 'Beta'")
        await pipe.drain()
        (beta,) = [r for r in emulator.records["accounts"].values()
                   if r["accountName"] == "Beta"]
        (made,) = [r for r in emulator.records["contacts"].values()
                   if r.get("email") == "c@beta.example"]
        assert made["accountId"] == beta["id"]
        logged = await pipe.fetchval("SELECT count(*) FROM syncd.event_log")
        await asyncio.sleep(1.0)  # about five more poll rounds
        await pipe.drain()
        assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log") == logged
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()


async def test_the_daemon_configured_for_zoho_desk_with_its_webhook(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, data_dir: Path,
        emulator: ZohoDeskEmulator) -> None:
    """``SYNCD_DESK_STORE=zoho`` with a webhook URL: the daemon subscribes the webhook
    (Zoho's check of the URL answered), a person's change in the desk arrives by its
    callback long before the 60 s poll, the sync's own writes raise no callback
    (``ignoreSourceId``), a callback with another token is a 401, a ticket reaches the
    board by its callback and the board's close reaches the desk, and no secret is in
    the logs."""
    port = free_port()
    token = "webhook-token-0123456789"
    with capture_logs() as logs:
        async with running_daemon(
                database_url, kafka_bootstrap, topic_prefix, data_dir, desk_store="zoho",
                http_listen=f"127.0.0.1:{port}", zoho_desk_client_id=CLIENT_ID,
                zoho_desk_client_secret=SecretStr(CLIENT_SECRET),
                zoho_desk_refresh_token=SecretStr(REFRESH_TOKEN), zoho_desk_org_id=ORG_ID,
                zoho_desk_accounts_url=emulator.url, zoho_desk_api_url=emulator.url,
                zoho_desk_poll_interval=60,
                zoho_desk_webhook_url=f"http://127.0.0.1:{port}/webhooks/zoho-desk",
                zoho_desk_webhook_token=SecretStr(token)) as daemon:
            await daemon.enable_sync()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not emulator.webhooks:
                assert loop.time() < deadline, "no webhook subscribed"
                await asyncio.sleep(0.05)
            (hook,) = emulator.webhooks.values()
            assert hook["ignoreSourceId"] == "5f1c2a7e-8d3b-4c6a-9e0f-73736e636400"
            assert {"Contact_Add", "Contact_Update", "Account_Add"} <= set(hook["subscriptions"])
            await asyncio.sleep(1.5)  # the first poll round is over: the next is 60 s away
            status, answer = await daemon.call(
                "POST", "/webhooks/zoho-desk?token=another-token-00000", role=None,
                body=[{"eventType": "Contact_Add", "payload": {}}])
            assert status == 401 and answer["error"]["code"] == "bad_webhook_token"
            started = loop.time()
            emulator.person_creates("contacts", {"lastName": "Hooked", "email": "h@x.example"})
            await daemon.wait_until(
                "SELECT count(*) FROM crm.contacts WHERE email = 'h@x.example'", 1, timeout=20)
            assert loop.time() - started < 20
            await emulator.delivered()
            assert [d[1:] for d in emulator.deliveries] == [(["Contact_Add"], 200)]
            # The CRM's contact goes to the desk by the sync: no callback comes of it.
            await daemon.pool.execute(
                "INSERT INTO crm.contacts (last_name, email) VALUES ('Crm', 'c@x.example')")
            deadline = loop.time() + 30
            while not any(r.get("email") == "c@x.example"
                          for r in emulator.records["contacts"].values()):
                assert loop.time() < deadline, "the CRM's contact never reached the desk"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            await emulator.delivered()
            assert len(emulator.deliveries) == 1
            # A person deletes the desk's contact: the callback brings the delete,
            # recorded on the link; the CRM's contact stays (SYNC-11).
            (hooked,) = [i for i, r in emulator.records["contacts"].items()
                         if r.get("email") == "h@x.example"]
            emulator.person_deletes("contacts", hooked)
            await daemon.wait_until("SELECT count(*) FROM sync.links WHERE module = 'contacts'"
                                    " AND desk_gone = 'hard'", 1, timeout=20)
            assert await daemon.pool.fetchval(
                "SELECT count(*) FROM crm.contacts WHERE email = 'h@x.example'") == 1
            # A person's ticket arrives by its callback and is on the board; the board's
            # close goes to Zoho Desk (the daemon composes the hosted desk's actions)
            # and raises no callback; the ticket leaves the board.
            support = emulator.person_creates("departments", {"name": "Support"})
            ticket = emulator.person_creates("tickets", {
                "subject": "Hooked", "departmentId": support, "email": "t@x.example"})
            await daemon.wait_until("SELECT count(*) FROM handshake.board"
                                    f" WHERE ticket_id = '{ticket}'", 1, timeout=20)
            await emulator.delivered()
            hooks = len(emulator.deliveries)
            status, closed = await daemon.call(
                "POST", f"/api/v1/handshake/{support}/tickets/{ticket}/close", role="operator")
            assert status == 202 and closed["changed"] is True
            assert emulator.records["tickets"][ticket]["statusType"] == "Closed"
            await daemon.wait_until("SELECT count(*) FROM handshake.board", 0, timeout=20)
            await emulator.delivered()
            assert len(emulator.deliveries) == hooks
    text = repr(logs)
    assert CLIENT_SECRET not in text and REFRESH_TOKEN not in text and token not in text
    assert not any(t in text for t in emulator.tokens)


def check_command(emulator: ZohoDeskEmulator, secret: str = CLIENT_SECRET,
                  **env: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from daemon.cli import cli

    result = CliRunner().invoke(cli, ["integration", "check"], env={
        "SYNCD_DESK_STORE": "zoho", "SYNCD_ZOHO_DESK_CLIENT_ID": CLIENT_ID,
        "SYNCD_ZOHO_DESK_CLIENT_SECRET": secret, "SYNCD_ZOHO_DESK_REFRESH_TOKEN": REFRESH_TOKEN,
        "SYNCD_ZOHO_DESK_ORG_ID": ORG_ID, "SYNCD_ZOHO_DESK_ACCOUNTS_URL": emulator.url,
        "SYNCD_ZOHO_DESK_API_URL": emulator.url, **env})
    return result.exit_code, result.output


async def test_integration_check_says_what_is_wrong_with_the_desk(
        emulator: ZohoDeskEmulator) -> None:
    """``syncd integration check`` with a Zoho Desk: all well, exit 0; a module without
    the sync key's custom field, another organisation's id, an unreachable webhook URL
    and refused credentials each said with what to do, exit 1, no secret printed."""
    status, output = await asyncio.to_thread(check_command, emulator)
    assert status == 0, output
    assert "contacts.cf_syncd_key" in output and "PROBLEM" not in output
    assert "read departments" in output and "read tickets" in output
    assert "the CRM is the embedded store" in output

    emulator.without_sync_key.add("products")
    status, output = await asyncio.to_thread(check_command, emulator)
    assert status == 1 and "add to products a single-line custom field" in output
    emulator.without_sync_key.clear()

    status, output = await asyncio.to_thread(check_command, emulator,
                                             SYNCD_ZOHO_DESK_ORG_ID="999")
    assert status == 1 and "OAUTH_ORG_MISMATCH" in output and "SYNCD_ZOHO_DESK_ORG_ID" in output

    status, output = await asyncio.to_thread(
        check_command, emulator,
        SYNCD_ZOHO_DESK_WEBHOOK_URL="http://127.0.0.1:9/webhooks/zoho-desk",
        SYNCD_ZOHO_DESK_WEBHOOK_TOKEN="webhook-token-0123456789")
    assert status == 1 and "is not reachable" in output
    assert "webhook-token-0123456789" not in output

    status, output = await asyncio.to_thread(check_command, emulator, secret="wrong-secret")
    assert status == 1 and "invalid_client" in output
    assert "wrong-secret" not in output and REFRESH_TOKEN not in output


async def test_a_custom_field_edited_in_the_desk_reaches_the_crm(
        database_url: str, kafka_bootstrap: str, topic_prefix: str,
        emulator: ZohoDeskEmulator) -> None:
    """A custom field of the desk (``cf_region``) mapped to one of the CRM: created,
    then edited alone in the desk, each value reaches the CRM (the capture names the
    custom field that changed, as the embedded stores' capture does)."""
    store, client = zoho_desk_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                    poll_interval=0.2, first_window=dt.timedelta(hours=1))
    pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
    pipe.configure(mappings={**pipe.config.mappings, "contacts": build_mapping("contacts", [
        {"desk": "last_name", "crm": "last_name"}, {"desk": "email", "crm": "email"},
        {"desk": "custom.cf_region", "desk_type": "text",
         "crm": "custom.region", "crm_type": "text"}])})
    await pipe.start()
    try:
        desk_id = emulator.person_creates("contacts", {
            "lastName": "Cf", "email": "cf@x.example", "cf": {"cf_region": "EU"}})
        await pipe.wait_for_count("SELECT count(*) FROM crm.contacts"
                                  " WHERE custom->>'region' = 'EU'", 1)
        emulator.person_edits("contacts", desk_id, {"cf": {"cf_region": "US"}})
        await pipe.wait_for_count("SELECT count(*) FROM crm.contacts"
                                  " WHERE custom->>'region' = 'US'", 1)
        assert await pipe.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await pipe.close()
        await client.close()


async def test_a_scope_missing_at_start_holds_the_desk_until_it_is_granted(
        database_url: str, kafka_bootstrap: str, topic_prefix: str, data_dir: Path,
        emulator: ZohoDeskEmulator) -> None:
    """The daemon starts with a refresh token lacking ``Desk.search.READ``: its start-up
    checks find it; ``/readyz`` names ``desk-store`` and the scope, nothing fails; the
    scope granted, the desk comes back without a restart and the CRM's contact lands."""
    emulator.scopes.discard("Desk.search.READ")
    async with running_daemon(
            database_url, kafka_bootstrap, topic_prefix, data_dir, ready=False,
            desk_store="zoho", zoho_desk_client_id=CLIENT_ID,
            zoho_desk_client_secret=SecretStr(CLIENT_SECRET),
            zoho_desk_refresh_token=SecretStr(REFRESH_TOKEN), zoho_desk_org_id=ORG_ID,
            zoho_desk_accounts_url=emulator.url, zoho_desk_api_url=emulator.url,
            zoho_desk_poll_interval=0.2) as daemon:
        await daemon.enable_sync()
        await daemon.pool.execute("INSERT INTO crm.contacts (last_name, email)"
                                  " VALUES ('Held', 'held@x.example')")
        await asyncio.sleep(1.0)
        status, ready = await daemon.call("GET", "/readyz", role=None)
        assert status == 503 and "desk-store" in ready["failing"], ready
        assert ready["failing"]["desk-store"].startswith(
            "unavailable: accounts.cf_syncd_key: Zoho Desk: SCOPE_MISMATCH")
        assert "add the scope Desk.search.READ" in ready["failing"]["desk-store"]
        assert emulator.writes == 0
        assert await daemon.pool.fetchval("SELECT count(*) FROM sync.failures") == 0

        emulator.scopes.add("Desk.search.READ")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not emulator.records["contacts"]:
            assert loop.time() < deadline, "the CRM's contact never reached the desk"
            await asyncio.sleep(0.1)
        assert [r["lastName"] for r in emulator.records["contacts"].values()] == ["Held"]
        status, ready = await daemon.call("GET", "/readyz", role=None)
        assert status == 200, ready
        assert await daemon.pool.fetchval("SELECT count(*) FROM sync.failures") == 0
