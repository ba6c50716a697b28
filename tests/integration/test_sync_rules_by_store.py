"""The SYNC rules with each kind of store, one test matrix: both stores embedded;
Zoho CRM as the CRM (its adapter against its emulator, captured by its poll); Zoho
Desk as the desk (captured by its webhook, served here, and its poll). Each case
is written from one side (the *near* store, always embedded, written with SQL) to
the other (the *far* one, of the kind under test, used as a person would). The
same cases, the same expectations: what a rule says does not depend on where the
stores are. (tests/integration/test_sync_rules.py has every rule on the embedded
stores.)"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from adapters.command_writer import Backoff
from adapters.zoho.crm_fields import from_zoho, to_zoho
from adapters.zoho.crm_store import zoho_crm_store
from adapters.zoho.desk_capture import DeskWebhookIntake, Webhooks
from adapters.zoho.desk_fields import from_desk, to_desk
from adapters.zoho.desk_store import zoho_desk_store
from ops.emulators.zoho_crm import ZohoCrmEmulator
from ops.emulators.zoho_crm import running_emulator as crm_emulator
from ops.emulators.zoho_desk import ZohoDeskEmulator
from ops.emulators.zoho_desk import running_emulator as desk_emulator
from projections.mapping import REASON_MANDATORY, build_mapping
from projections.sync_plan import REASON_ALREADY_MAPPED, REASON_AMBIGUOUS
from tests.support.pipeline import Pipeline


class Far(Protocol):
    """The far store as a person uses it, and as a test reads it (the sync's names)."""

    async def creates(self, module: str, values: dict[str, Any]) -> str: ...

    async def edits(self, module: str, record_id: str, values: dict[str, Any]) -> None: ...

    async def deletes(self, module: str, record_id: str) -> None: ...

    async def touches(self, module: str, record_id: str) -> None:
        """A person changes the record in nothing the sync maps: only its modification
        time moves, as far as the sync can see."""
        ...

    async def live(self, module: str) -> dict[str, dict[str, Any]]:
        """The live records by id."""
        ...

    async def captured(self) -> None:
        """Until what a person did is in the far store's outbox."""
        ...


class EmbeddedFar:
    def __init__(self, pipe: Pipeline, side: str) -> None:
        self.pipe = pipe
        self.side = side

    async def creates(self, module: str, values: dict[str, Any]) -> str:
        names = sorted(values)
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        return str(await self.pipe.fetchval(
            f"INSERT INTO {self.side}.{module} ({', '.join(names)}) VALUES ({marks}) RETURNING id",
            *(values[n] for n in names)))

    async def edits(self, module: str, record_id: str, values: dict[str, Any]) -> None:
        names = sorted(values)
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
        await self.pipe.execute(f"UPDATE {self.side}.{module} SET {sets} WHERE id = $1",
                                int(record_id), *(values[n] for n in names))

    async def deletes(self, module: str, record_id: str) -> None:
        await self.pipe.execute(f"DELETE FROM {self.side}.{module} WHERE id = $1", int(record_id))

    async def touches(self, module: str, record_id: str) -> None:
        await self.pipe.execute(f"UPDATE {self.side}.{module} SET deleted = deleted"
                                " WHERE id = $1", int(record_id))

    async def live(self, module: str) -> dict[str, dict[str, Any]]:
        rows = await self.pipe.fetch(f"SELECT * FROM {self.side}.{module} WHERE NOT deleted")
        return {str(r["id"]): dict(r) for r in rows}

    async def captured(self) -> None:
        return  # the embedded store's capture is its trigger, in the same transaction


async def _rounds_after(calls: list[tuple[str, str, int]], products: tuple[str, str]) -> None:
    """Until two more polls of products (the last module of a round) than now: one
    whole round began after the person's change."""
    def rounds() -> int:
        return sum(1 for c in calls if c[:2] == products)

    wanted = rounds() + 2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while rounds() < wanted:
        assert loop.time() < deadline, "the poll stopped"
        await asyncio.sleep(0.05)


class HostedCrm:
    def __init__(self, emulator: ZohoCrmEmulator) -> None:
        self.emulator = emulator

    async def creates(self, module: str, values: dict[str, Any]) -> str:
        return self.emulator.person_creates(module, to_zoho(module, values,
                                                            sync_key_field="Syncd_Key"))

    async def edits(self, module: str, record_id: str, values: dict[str, Any]) -> None:
        self.emulator.edit(module, record_id, to_zoho(module, values,
                                                      sync_key_field="Syncd_Key"))

    async def deletes(self, module: str, record_id: str) -> None:
        self.emulator.person_deletes(module, record_id, permanently=True)

    async def touches(self, module: str, record_id: str) -> None:
        self.emulator.edit(module, record_id, {"Description": "touched"})

    async def live(self, module: str) -> dict[str, dict[str, Any]]:
        return {i: from_zoho(module, r, sync_key_field="Syncd_Key")
                for i, r in self.emulator.module(module).items()}

    async def captured(self) -> None:
        await _rounds_after(self.emulator.calls, ("GET", "/crm/v8/Products"))


class HostedDesk:
    def __init__(self, emulator: ZohoDeskEmulator) -> None:
        self.emulator = emulator

    async def creates(self, module: str, values: dict[str, Any]) -> str:
        return self.emulator.person_creates(module, to_desk(module, values,
                                                            sync_key_field="cf_syncd_key"))

    async def edits(self, module: str, record_id: str, values: dict[str, Any]) -> None:
        self.emulator.person_edits(module, record_id, to_desk(module, values,
                                                              sync_key_field="cf_syncd_key"))

    async def deletes(self, module: str, record_id: str) -> None:
        self.emulator.person_deletes(module, record_id)

    async def touches(self, module: str, record_id: str) -> None:
        self.emulator.person_edits(module, record_id, {"description": "touched"})

    async def live(self, module: str) -> dict[str, dict[str, Any]]:
        return {i: from_desk(module, r, sync_key_field="cf_syncd_key")
                for i, r in self.emulator.records[module].items()}

    async def captured(self) -> None:
        await self.emulator.delivered()
        await _rounds_after(self.emulator.calls, ("GET", "/api/v1/products/search"))


World = tuple[Pipeline, str, Far]
"""The pipeline, the near side's name, the far store."""


@pytest.fixture(params=["embedded", "zoho-crm", "zoho-desk"])
async def world(request: pytest.FixtureRequest, database_url: str, kafka_bootstrap: str,
                topic_prefix: str) -> AsyncIterator[World]:
    backoff = Backoff(base=0.05, cap=0.2)
    window = dt.timedelta(hours=1)
    if request.param == "embedded":
        pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix)
        await pipe.start()
        try:
            yield pipe, "desk", EmbeddedFar(pipe, "crm")
        finally:
            await pipe.close()
    elif request.param == "zoho-crm":
        async with crm_emulator() as crm:
            store, client = zoho_crm_store(crm.options(), backoff=backoff, poll_interval=0.1,
                                           first_window=window)
            pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"crm": store})
            await pipe.start()
            try:
                yield pipe, "desk", HostedCrm(crm)
            finally:
                await pipe.close()
                await client.close()
    else:
        async with desk_emulator() as desk, webhook_intake(database_url) as url:
            store, desk_client = zoho_desk_store(
                desk.options(), backoff=backoff, poll_interval=0.1, first_window=window,
                webhooks=Webhooks(url=url, token=SecretStr(INTAKE_TOKEN)))
            pipe = Pipeline(database_url, kafka_bootstrap, topic_prefix, remote={"desk": store})
            await pipe.start()
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while not desk.webhooks:  # the poller subscribes it first
                    assert loop.time() < deadline, "no webhook subscribed"
                    await asyncio.sleep(0.05)
                yield pipe, "crm", HostedDesk(desk)
            finally:
                await pipe.close()
                await desk_client.close()


INTAKE_TOKEN = "intake-token-0123456789"


@contextlib.asynccontextmanager
async def webhook_intake(database_url: str) -> AsyncIterator[str]:
    """The daemon's ``/webhooks/zoho-desk`` for a pipeline (which has no HTTP
    listener): Zoho's check answered, each callback captured by the adapter's intake."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    intake = DeskWebhookIntake(SecretStr(INTAKE_TOKEN), sync_key_field="cf_syncd_key")

    async def check(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def callback(request: web.Request) -> web.Response:
        if not intake.authentic(request.query):
            return web.json_response({}, status=401)
        return web.json_response({"captured": await intake.accept(pool, await request.read())})

    app = web.Application()
    app.router.add_get("/webhooks/zoho-desk", check)
    app.router.add_post("/webhooks/zoho-desk", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/webhooks/zoho-desk"
    finally:
        await runner.cleanup()
        await pool.close()


async def settle(pipe: Pipeline, far: Far) -> None:
    await far.captured()
    await pipe.drain()


async def far_of(pipe: Pipeline, near: str, module: str, near_id: int) -> str | None:
    """The far record linked to the near one."""
    other = "crm" if near == "desk" else "desk"
    value = await pipe.fetchval(f"SELECT {other}_id FROM sync.links WHERE module = $1"
                                f" AND {near}_id = $2", module, str(near_id))
    return None if value is None else str(value)


async def linked_contact(pipe: Pipeline, near: str, far: Far,
                         **values: str) -> tuple[int, str]:
    """A near contact with ``values``, synced: its id and its far twin's."""
    names = sorted(values)
    marks = ", ".join(f"${n}" for n in range(1, len(names) + 1))
    near_id: int = await pipe.fetchval(
        f"INSERT INTO {near}.contacts ({', '.join(names)}) VALUES ({marks}) RETURNING id",
        *(values[n] for n in names))
    await settle(pipe, far)
    far_id = await far_of(pipe, near, "contacts", near_id)
    assert far_id is not None
    return near_id, far_id


async def open_failures(pipe: Pipeline) -> list[tuple[str, str, str]]:
    rows = await pipe.fetch("SELECT source, record_id, reason FROM sync.failures"
                            " WHERE status = 'open' ORDER BY id")
    return [(r["source"], r["record_id"], r["reason"]) for r in rows]


async def test_contacts_match_on_email_and_a_second_claim_fails(
        world: World) -> None:
    """SYNC-06, SYNC-10: a far contact whose e-mail differs by case and spaces is
    linked, not doubled; a second near contact with it is 'already mapped'."""
    pipe, near, far = world
    pipe.configure(active=False)
    far_id = await far.creates("contacts", {"last_name": "Dupont",
                                            "email": "  Marie@Example.COM "})
    await settle(pipe, far)
    pipe.configure(active=True)
    near_id = await pipe.fetchval(f"INSERT INTO {near}.contacts (first_name, last_name, email)"
                                  " VALUES ('Marie', 'Dupont', 'marie@example.com')"
                                  " RETURNING id")
    await settle(pipe, far)
    assert await far_of(pipe, near, "contacts", near_id) == far_id
    assert list(await far.live("contacts")) == [far_id]
    assert (await far.live("contacts"))[far_id]["first_name"] == "Marie"
    other = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, email)"
                                " VALUES ('Dupont', 'MARIE@example.com') RETURNING id")
    await settle(pipe, far)
    assert await open_failures(pipe) == [(near, str(other), REASON_ALREADY_MAPPED)]
    assert len(await far.live("contacts")) == 1


async def test_accounts_match_on_their_folded_name(world: World) -> None:
    """SYNC-06: accounts match on the name, case and spaces folded."""
    pipe, near, far = world
    pipe.configure(active=False)
    far_id = await far.creates("accounts", {"account_name": "Acme Corp"})
    await settle(pipe, far)
    pipe.configure(active=True)
    near_id = await pipe.fetchval(f"INSERT INTO {near}.accounts (account_name, website)"
                                  " VALUES (' ACME corp', 'acme.io') RETURNING id")
    await settle(pipe, far)
    assert await far_of(pipe, near, "accounts", near_id) == far_id
    assert (await far.live("accounts"))[far_id]["website"] == "acme.io"


async def test_more_than_one_candidate_is_a_failure_not_a_guess(
        world: World) -> None:
    """SYNC-06: two far contacts hold the e-mail: a failure, nothing linked."""
    pipe, near, far = world
    pipe.configure(active=False)
    await far.creates("contacts", {"last_name": "A", "email": "twin@x.com"})
    await far.creates("contacts", {"last_name": "B", "email": "TWIN@x.com"})
    await settle(pipe, far)
    pipe.configure(active=True)
    near_id = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, email)"
                                  " VALUES ('C', 'twin@x.com') RETURNING id")
    await settle(pipe, far)
    assert (near, str(near_id), REASON_AMBIGUOUS) in await open_failures(pipe)
    assert await far_of(pipe, near, "contacts", near_id) is None
    assert len(await far.live("contacts")) == 2


async def test_a_mandatory_field_left_empty_is_a_failure(world: World) -> None:
    """SYNC-05: a near contact without the last name the far store requires fails
    with that reason, and nothing is created; fixed, it syncs."""
    pipe, near, far = world
    near_id = await pipe.fetchval(f"INSERT INTO {near}.contacts (first_name, email)"
                                  " VALUES ('Only', 'only@x.com') RETURNING id")
    await settle(pipe, far)
    assert await open_failures(pipe) == [(near, str(near_id), REASON_MANDATORY)]
    assert await far.live("contacts") == {}
    await pipe.execute(f"UPDATE {near}.contacts SET last_name = 'Fixed' WHERE id = $1", near_id)
    await settle(pipe, far)
    assert await open_failures(pipe) == []
    assert [r["last_name"] for r in (await far.live("contacts")).values()] == ["Fixed"]


async def test_deletes_do_not_propagate_and_a_change_brings_the_record_back(
        world: World) -> None:
    """SYNC-11: a far delete leaves the near record; the near record's next change
    creates it again in the far store, linked."""
    pipe, near, far = world
    near_id, far_id = await linked_contact(pipe, near, far, last_name="Kept",
                                           email="kept@x.com")
    await asyncio.sleep(0.3)  # a hosted CRM's poll has started its deletes' cursor
    await far.deletes("contacts", far_id)
    await settle(pipe, far)
    assert await pipe.fetchval(f"SELECT NOT deleted FROM {near}.contacts WHERE id = $1", near_id)
    assert await far.live("contacts") == {}
    await pipe.execute(f"UPDATE {near}.contacts SET phone = '5' WHERE id = $1", near_id)
    await settle(pipe, far)
    again = await far_of(pipe, near, "contacts", near_id)
    assert again is not None and again != far_id
    assert (await far.live("contacts"))[again]["phone"] == "5"
    assert await open_failures(pipe) == []


async def test_concurrent_edits_converge_per_field(world: World) -> None:
    """SYNC-15: edits of one pair on both sides converge per field, newest wins."""
    pipe, near, far = world
    near_id, far_id = await linked_contact(pipe, near, far, last_name="C", phone="p0",
                                           mobile="m0")
    await pipe.execute(f"UPDATE {near}.contacts SET phone = 'desk-phone' WHERE id = $1", near_id)
    await far.edits("contacts", far_id, {"mobile": "crm-mobile"})
    await asyncio.sleep(0.01)
    await far.edits("contacts", far_id, {"phone": "crm-phone"})
    await pipe.execute(f"UPDATE {near}.contacts SET first_name = 'desk-first' WHERE id = $1",
                       near_id)
    await settle(pipe, far)
    await settle(pipe, far)  # the writes each way have landed and been seen
    desk = await pipe.fetchrow(f"SELECT * FROM {near}.contacts WHERE id = $1", near_id)
    remote = (await far.live("contacts"))[far_id]
    assert desk is not None
    expected = {"first_name": "desk-first", "last_name": "C", "phone": "crm-phone",
                "mobile": "crm-mobile"}
    assert {f: desk[f] for f in expected} == expected
    assert {f: remote[f] for f in expected} == expected


@pytest.mark.parametrize("captured_first", [True, False], ids=["captured", "in-flight"])
async def test_a_far_record_touched_outside_the_mapping_still_takes_a_near_edit(
        world: World, captured_first: bool) -> None:
    """SYNC-15, invariant 5: the far record changed in nothing the sync maps, so only
    its modification time moved and no change of it is captured; a near edit decided
    against the time the sync last saw is refused by the guard as stale, and must
    still land (on a hosted store it was dropped, waiting for a change that never
    comes), whether the far store's capture fetched the touched record before the
    write was refused or only after."""
    pipe, near, far = world
    near_id, far_id = await linked_contact(pipe, near, far, first_name="before",
                                           last_name="T")
    await asyncio.sleep(0.01)  # the stores' clocks: milliseconds at Zoho's emulators
    await far.touches("contacts", far_id)
    if captured_first:
        await settle(pipe, far)
    await pipe.execute(f"UPDATE {near}.contacts SET first_name = 'after' WHERE id = $1",
                       near_id)
    await settle(pipe, far)
    await settle(pipe, far)
    assert (await far.live("contacts"))[far_id]["first_name"] == "after"
    assert await open_failures(pipe) == []


EDITED = ("first_name", "phone", "mobile")


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(["near", "far"]), st.sampled_from(EDITED),
                                st.booleans()), min_size=1, max_size=8))
async def test_concurrent_edits_converge_whatever_their_interleaving(
        world: World, edits: list[tuple[str, str, bool]]) -> None:
    """SYNC-15 as a property, on each kind of store: whatever the interleaving of edits
    on both sides (each a new value; ``True``: the far store's capture runs before the
    next edit), both end with the same values, each one an edit made, no duplicate
    record or link; a field whose edits were each captured before the next ends with
    its newest.

    A hosted store reports a record's changes by record with one time (its
    ``Modified_Time``): two of its edits captured together carry the later one's time,
    so the earlier field's edit may beat a near edit made between them; what holds
    there is convergence, not newest-wins per field."""
    pipe, near, far = world
    name = f"P-{uuid.uuid4().hex[:8]}"  # the examples share the stores
    near_id, far_id = await linked_contact(pipe, near, far, last_name=name)
    made: dict[str, set[str]] = {f: set() for f in EDITED}
    newest: dict[str, str] = {}
    coalesced: set[str] = set()  # fields with a far edit captured with a later one
    uncaptured: set[str] = set()
    for n, (side, field, captured) in enumerate(edits):
        value = f"{side}-{n}"
        if side == "near":
            await pipe.execute(f"UPDATE {near}.contacts SET {field} = $1 WHERE id = $2",
                               value, near_id)
        else:
            await far.edits("contacts", far_id, {field: value})
            coalesced |= uncaptured
            uncaptured.add(field)
        made[field].add(value)
        newest[field] = value
        if captured:
            await far.captured()
            uncaptured.clear()
        await asyncio.sleep(0.01)  # the stores' clocks: milliseconds at Zoho's emulators
    await settle(pipe, far)
    await settle(pipe, far)  # the writes each way have landed and been seen
    mine = await pipe.fetchrow(f"SELECT * FROM {near}.contacts WHERE id = $1", near_id)
    theirs = (await far.live("contacts"))[far_id]
    assert mine is not None
    for field in EDITED:
        assert mine[field] == theirs[field], field
        if field in newest:
            assert mine[field] in made[field], field
            if field not in coalesced:
                assert mine[field] == newest[field], field
    assert await pipe.fetchval("SELECT count(*) FROM sync.links WHERE module = 'contacts'"
                               f" AND {near}_id = $1", str(near_id)) == 1
    assert [i for i, r in (await far.live("contacts")).items()
            if r.get("last_name") == name] == [far_id]
    assert await open_failures(pipe) == []


def store_of(world: World, side: str) -> Far:
    """The store of ``side`` (``desk`` or ``crm``) in this world, near or far."""
    pipe, near, far = world
    return EmbeddedFar(pipe, near) if side == near else far


async def test_contacts_without_an_email_are_each_created_and_linked(world: World) -> None:
    """SYNC-07: every contact syncs; no e-mail means no match, so each near contact
    without one gets a far twin of its own, and a far one a near twin."""
    pipe, near, far = world
    near_ids = [await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name) VALUES ($1)"
                                    " RETURNING id", name) for name in ("NoMail1", "NoMail2")]
    far_id = await far.creates("contacts", {"last_name": "NoMail3"})
    await settle(pipe, far)
    await settle(pipe, far)
    twins = [await far_of(pipe, near, "contacts", i) for i in near_ids]
    live = await far.live("contacts")
    assert None not in twins and len(set(twins)) == 2
    assert sorted(live[t]["last_name"] for t in twins if t is not None) == [
        "NoMail1", "NoMail2"]
    assert sorted(r["last_name"] for r in live.values()) == ["NoMail1", "NoMail2", "NoMail3"]
    mine = await pipe.fetchval(
        f"SELECT n.last_name FROM {near}.contacts n JOIN sync.links l ON l.{near}_id ="
        f" n.id::text WHERE l.module = 'contacts' AND l.{'crm' if near == 'desk' else 'desk'}"
        "_id = $1", far_id)
    assert mine == "NoMail3"
    assert await open_failures(pipe) == []


async def test_the_syncs_own_writes_never_come_back(world: World) -> None:
    """SYNC-14: a near create and a near edit reach the far store once each; the far
    store's capture of those writes changes nothing near, and nothing loops."""
    pipe, near, far = world
    near_id = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, email)"
                                  " VALUES ('Echo', 'echo@x.example') RETURNING id")
    await settle(pipe, far)
    await pipe.execute(f"UPDATE {near}.contacts SET phone = '7' WHERE id = $1", near_id)
    await settle(pipe, far)
    await settle(pipe, far)
    before = await pipe.fetchrow(f"SELECT modified_time, phone FROM {near}.contacts"
                                 " WHERE id = $1", near_id)
    events = await pipe.fetchval("SELECT count(*) FROM syncd.event_log")
    await settle(pipe, far)
    await settle(pipe, far)
    after = await pipe.fetchrow(f"SELECT modified_time, phone FROM {near}.contacts"
                                " WHERE id = $1", near_id)
    assert before == after and after is not None and after["phone"] == "7"
    assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log") == events  # quiet
    far_id = await far_of(pipe, near, "contacts", near_id)
    assert far_id is not None and list(await far.live("contacts")) == [far_id]
    assert (await far.live("contacts"))[far_id]["phone"] == "7"


async def test_one_way_takes_the_crms_changes_only(world: World) -> None:
    """SYNC-02: one-way CRM to desk: a CRM contact reaches the desk, linked; a desk
    contact and a desk edit never reach the CRM (they are still logged)."""
    pipe, _near, far = world
    pipe.configure(direction="crm_to_desk")
    desk, crm = store_of(world, "desk"), store_of(world, "crm")
    await desk.creates("contacts", {"last_name": "DeskOnly"})
    crm_id = await crm.creates("contacts", {"last_name": "CrmSide"})
    await settle(pipe, far)
    await settle(pipe, far)
    assert [r["last_name"] for r in (await crm.live("contacts")).values()] == ["CrmSide"]
    desk_id = await pipe.fetchval("SELECT desk_id FROM sync.links WHERE module = 'contacts'"
                                  " AND crm_id = $1", crm_id)
    assert desk_id is not None
    assert (await desk.live("contacts"))[desk_id]["last_name"] == "CrmSide"
    await desk.edits("contacts", desk_id, {"last_name": "Edited"})
    await settle(pipe, far)
    assert (await crm.live("contacts"))[crm_id]["last_name"] == "CrmSide"
    assert await pipe.fetchval("SELECT count(*) FROM syncd.event_log WHERE source = 'desk'"
                               " AND origin = 'user'") >= 2
    assert await open_failures(pipe) == []


async def test_a_contacts_account_is_its_linked_twin_on_the_other_side(world: World) -> None:
    """The account a contact names reaches the other side as the twin of that
    account, both ways: twenty near contacts with new accounts in one batch (the
    far store creates the accounts first, the contacts name them), and a far contact
    with a far account."""
    pipe, near, far = world
    pairs = []
    for n in range(20):
        account = await pipe.fetchval(f"INSERT INTO {near}.accounts (account_name)"
                                      " VALUES ($1) RETURNING id", f"Refco {n}")
        contact = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, account_id)"
                                      " VALUES ($1, $2) RETURNING id", f"Ref {n}", account)
        pairs.append((account, contact))
    far_account = await far.creates("accounts", {"account_name": "Farco"})
    await settle(pipe, far)
    far_contact = await far.creates("contacts", {"last_name": "Far",
                                                 "account_id": int(far_account)})
    await settle(pipe, far)
    await settle(pipe, far)
    live = await far.live("contacts")
    for account, contact in pairs:
        twin_account = await far_of(pipe, near, "accounts", account)
        twin = await far_of(pipe, near, "contacts", contact)
        assert twin_account is not None and twin is not None
        assert str(live[twin]["account_id"]) == twin_account
    other = "crm" if near == "desk" else "desk"
    row = await pipe.fetchrow(
        f"SELECT c.account_id, a.account_name FROM {near}.contacts c JOIN sync.links l ON"
        f" l.{near}_id = c.id::text AND l.module = 'contacts' JOIN {near}.accounts a ON"
        f" a.id = c.account_id WHERE l.{other}_id = $1", far_contact)
    assert row is not None and row["account_name"] == "Farco"
    assert await open_failures(pipe) == []


async def test_a_match_by_the_secondary_email_gives_the_desk_the_crms_primary(
        world: World) -> None:
    """SYNC-06, matching by the secondary e-mail too: a desk contact whose e-mail is
    a CRM contact's secondary one is linked to it, and takes the CRM's primary."""
    pipe, _near, far = world
    desk, crm = store_of(world, "desk"), store_of(world, "crm")
    pipe.configure(active=False)
    crm_id = await crm.creates("contacts", {"last_name": "Roy", "email": "roy@work.example",
                                            "secondary_email": "roy@home.example"})
    await settle(pipe, far)
    pipe.configure(active=True, match_secondary_email=True)
    desk_id = await desk.creates("contacts", {"last_name": "Roy", "email": "Roy@Home.example"})
    await settle(pipe, far)
    await settle(pipe, far)
    assert await pipe.fetchval("SELECT crm_id FROM sync.links WHERE module = 'contacts'"
                               " AND desk_id = $1", desk_id) == crm_id
    assert (await desk.live("contacts"))[desk_id]["email"] == "roy@work.example"
    assert list(await crm.live("contacts")) == [crm_id]
    assert await open_failures(pipe) == []


async def test_products_sync_with_the_one_chosen_desk_department(world: World) -> None:
    """SYNC-12: a CRM product lands in the chosen desk department; a desk product of
    that department reaches the CRM, one of another department does not."""
    pipe, _near, far = world
    desk, crm = store_of(world, "desk"), store_of(world, "crm")
    support = await desk.creates("departments", {"name": "Support"})
    sales = await desk.creates("departments", {"name": "Sales"})
    pipe.configure(products_department_id=int(support))
    await crm.creates("products", {"product_name": "Widget", "unit_price": 9.5})
    await desk.creates("products", {"product_name": "Ours", "department_id": int(support)})
    await desk.creates("products", {"product_name": "Theirs", "department_id": int(sales)})
    await settle(pipe, far)
    await settle(pipe, far)
    placed = {r["product_name"]: r["department_id"]
              for r in (await desk.live("products")).values()}
    assert placed == {"Widget": int(support), "Ours": int(support), "Theirs": int(sales)}
    assert {r["product_name"] for r in (await crm.live("products")).values()} == {
        "Widget", "Ours"}
    assert await open_failures(pipe) == []


async def test_a_text_value_for_an_integer_field_is_a_failure_of_its_own(
        world: World) -> None:
    """SYNC-05: mapped custom fields typed integer: a text value fails with its own
    reason and nothing is written; a number reaches the other side."""
    pipe, near, far = world
    keys = {"desk": "cf_employees" if isinstance(far, HostedDesk) else "employees",
            "crm": "Headcount"}
    pipe.configure(mappings={**pipe.config.mappings, "contacts": build_mapping("contacts", [
        {"desk": "last_name", "crm": "last_name"}, {"desk": "email", "crm": "email"},
        {"desk": f"custom.{keys['desk']}", "desk_type": "integer",
         "crm": f"custom.{keys['crm']}", "crm_type": "integer"}])})
    other = "crm" if near == "desk" else "desk"
    clash = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, custom) VALUES"
                                " ('T', jsonb_build_object($1::text, 'many')) RETURNING id",
                                keys[near])
    good = await pipe.fetchval(f"INSERT INTO {near}.contacts (last_name, custom) VALUES"
                               " ('G', jsonb_build_object($1::text, 42)) RETURNING id",
                               keys[near])
    await settle(pipe, far)
    await settle(pipe, far)
    assert await open_failures(pipe) == [(near, str(clash), "text value given for an"
                                          " integer field")]
    twin = await far_of(pipe, near, "contacts", good)
    assert twin is not None
    custom = (await far.live("contacts"))[twin]["custom"]
    if isinstance(custom, str):  # an embedded store's jsonb, as asyncpg gives it
        custom = json.loads(custom)
    assert custom.get(keys[other]) == 42
    assert [r["last_name"] for r in (await far.live("contacts")).values()] == ["G"]
