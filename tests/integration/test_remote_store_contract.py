"""The remote store's contract, written once and run on every remote store adapter:
the fake record service's (tests/support/record_service.py) and the hosted ones,
Zoho CRM's and Zoho Desk's, against their emulators. What the batch reads of a
remote store (``projections.stores.deferred.RemoteReads``: ``find``, ``read``) and
what its writer delivers (``adapters.command_writer.Target``: ``write``), with the
guarantees the port asks of them; and, for the hosted ones, their capture's
``modified_since`` (the fake service has no capture of its own)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.command_writer import Landed, Target
from adapters.remote_poll import Pollable
from adapters.write_errors import Refused, Stale
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_fields import to_zoho
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_fields import to_desk
from ops.emulators import zoho_crm as zoho_crm_emulator
from ops.emulators import zoho_desk as zoho_desk_emulator
from projections.catalog import Side
from projections.mapping import REASON_MANDATORY
from projections.stores.commands import Command
from projections.stores.deferred import RemoteReads
from projections.stores.port import SYNC_KEY_FIELD
from tests.support.record_service import RecordServiceReads, RecordServiceTarget, running_service


@dataclass
class Subject:
    kind: str
    side: Side
    reads: RemoteReads
    target: Target
    poll: Pollable | None
    creates: Callable[[str, dict[str, Any]], str]
    """A person creates a record (values in the sync's names): its id."""
    edits: Callable[[str, str, dict[str, Any]], None]


@pytest.fixture(params=["record-service", "zoho-crm", "zoho-desk"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    kind = request.param
    if kind == "record-service":
        async with running_service() as service:
            reads, target = RecordServiceReads(service.url), RecordServiceTarget(service.url)

            def service_edits(module: str, record_id: str, values: dict[str, Any]) -> None:
                service.edit(module, record_id, values)

            try:
                yield Subject(kind, "crm", reads, target, None, service.person_creates,
                              service_edits)
            finally:
                await reads.close()
                await target.close()
    elif kind == "zoho-crm":
        async with zoho_crm_emulator.running_emulator() as crm_emu:
            crm = ZohoCrm(crm_emu.options())

            def crm_creates(module: str, values: dict[str, Any]) -> str:
                return crm_emu.person_creates(module, to_zoho(
                    module, values, sync_key_field="Syncd_Key"))

            def crm_edits(module: str, record_id: str, values: dict[str, Any]) -> None:
                crm_emu.edit(module, record_id, to_zoho(module, values,
                                                        sync_key_field="Syncd_Key"))

            try:
                yield Subject(kind, "crm", crm, crm, crm, crm_creates, crm_edits)
            finally:
                await crm.close()
    else:
        async with zoho_desk_emulator.running_emulator() as desk_emu:
            desk = ZohoDesk(desk_emu.options())

            def desk_creates(module: str, values: dict[str, Any]) -> str:
                return desk_emu.person_creates(module, to_desk(
                    module, values, sync_key_field="cf_syncd_key"))

            def desk_edits(module: str, record_id: str, values: dict[str, Any]) -> None:
                desk_emu.person_edits(module, record_id, to_desk(
                    module, values, sync_key_field="cf_syncd_key"))

            try:
                yield Subject(kind, "desk", desk, desk, desk, desk_creates, desk_edits)
            finally:
                await desk.close()


def create(subject: Subject, module: str, values: dict[str, Any],
           key: str | None = None) -> Command:
    return Command(store=subject.side, module=module, record_key=key or f"new:{uuid.uuid4()}",
                   op="create", payload=values)


def update(subject: Subject, module: str, landed: Landed, values: dict[str, Any],
           seen: dt.datetime | None) -> Command:
    return Command(store=subject.side, module=module, record_key=landed.record_id,
                   op="update", record_id=landed.record_id, payload=values, seen=seen)


async def test_find_matches_the_syncs_normalised_keys(subject: Subject) -> None:
    ann = subject.creates("contacts", {"last_name": "Ann", "email": "  Ann@Example.COM "})
    subject.creates("contacts", {"last_name": "Bob", "email": "bob@example.com"})
    found = await subject.reads.find("contacts", ["ann@example.com"], secondary=False)
    assert [(f.id, f.key, f.via_secondary) for f in found] == [(ann, "ann@example.com", False)]
    assert found[0].values["last_name"] == "Ann"
    assert await subject.reads.find("contacts", ["nobody@example.com"], secondary=False) == []
    assert await subject.reads.find("products", ["x"], secondary=False) == []


async def test_find_by_secondary_email_only_when_asked(subject: Subject) -> None:
    both = subject.creates("contacts", {"last_name": "Cy", "email": "cy@work.example",
                                        "secondary_email": "cy@home.example"})
    keys = ["cy@home.example", "cy@work.example"]
    assert [f.key for f in await subject.reads.find("contacts", keys, secondary=False)] == [
        "cy@work.example"]
    found = await subject.reads.find("contacts", keys, secondary=True)
    assert sorted((f.id, f.key, f.via_secondary) for f in found) == [
        (both, "cy@home.example", True), (both, "cy@work.example", False)]


async def test_find_accounts_by_name_key(subject: Subject) -> None:
    acme = subject.creates("accounts", {"account_name": "ACME Corp"})
    (found,) = await subject.reads.find("accounts", ["acme corp"], secondary=True)
    assert (found.id, found.via_secondary) == (acme, False)


async def test_read_returns_the_records_that_exist(subject: Subject) -> None:
    one = subject.creates("contacts", {"last_name": "One"})
    held = await subject.reads.read("contacts", [one, "999999999"])
    assert list(held) == [one]
    assert held[one].values["last_name"] == "One"
    assert held[one].modified_time.tzinfo is not None


async def test_a_create_delivered_twice_is_one_record(subject: Subject) -> None:
    command = create(subject, "contacts", {"last_name": "Once", "email": "once@example.com"})
    first = await subject.target.write(command)
    again = await subject.target.write(command)  # the writer's crash-and-retry
    assert again.record_id == first.record_id
    assert first.values[SYNC_KEY_FIELD] == command.record_key
    found = await subject.reads.find("contacts", ["once@example.com"], secondary=False)
    assert [f.id for f in found] == [first.record_id]
    assert found[0].values[SYNC_KEY_FIELD] == command.record_key


async def test_an_update_decided_before_its_create_landed_is_applied_to_that_record(
        subject: Subject) -> None:
    """The batch decides a change of a record whose create it queued (its id still the
    placeholder): the update is delivered with no id, after the create has landed,
    and must change that record, not be taken for the create delivered again."""
    made = create(subject, "contacts", {"last_name": "Early", "email": "early@example.com"})
    first = await subject.target.write(made)
    later = Command(store=subject.side, module="contacts", record_key=made.record_key,
                    op="update", record_id=None, payload={"phone": "+1 555 0100"})
    landed = await subject.target.write(later)
    assert landed.record_id == first.record_id
    held = (await subject.reads.read("contacts", [first.record_id]))[first.record_id].values
    assert (held["last_name"], held["email"], held["phone"]) == (
        "Early", "early@example.com", "+1 555 0100")
    assert landed.values["phone"] == "+1 555 0100"
    found = await subject.reads.find("contacts", ["early@example.com"], secondary=False)
    assert [f.id for f in found] == [first.record_id]


async def test_an_update_is_guarded_by_the_newest_change_seen(subject: Subject) -> None:
    landed = await subject.target.write(create(subject, "contacts", {"last_name": "Kept"}))
    written = await subject.target.write(update(
        subject, "contacts", landed, {"last_name": "Written"}, landed.modified_time))
    assert written.record_id == landed.record_id
    assert written.modified_time >= landed.modified_time
    assert (await subject.reads.read("contacts", [landed.record_id]))[
        landed.record_id].values["last_name"] == "Written"
    subject.edits("contacts", landed.record_id, {"phone": "1"})  # a person, after
    with pytest.raises(Stale):
        await subject.target.write(update(subject, "contacts", landed,
                                          {"last_name": "Lost"}, written.modified_time))
    assert (await subject.reads.read("contacts", [landed.record_id]))[
        landed.record_id].values["last_name"] == "Written"


async def test_a_contact_names_the_account_the_sync_created_by_its_placeholder(
        subject: Subject) -> None:
    account = await subject.target.write(create(subject, "accounts",
                                                {"account_name": "Placeholder Inc"},
                                                key="new:account-1"))
    contact = await subject.target.write(create(subject, "contacts", {
        "last_name": "Named", "account_id": "new:account-1"}))
    held = (await subject.reads.read("contacts", [contact.record_id]))[contact.record_id]
    assert str(held.values["account_id"]) == account.record_id


HOSTED = pytest.mark.parametrize("subject", ["zoho-crm", "zoho-desk"], indirect=True)
"""The cases the fake record service does not model: it checks no field (its
refusals are scripted) and has no capture of its own."""


@HOSTED
async def test_a_missing_mandatory_field_is_refused_with_its_reason(subject: Subject) -> None:
    with pytest.raises(Refused) as refused:
        await subject.target.write(create(subject, "contacts",
                                          {"last_name": None, "email": "x@example.com"}))
    assert refused.value.reason == REASON_MANDATORY


@HOSTED
async def test_modified_since_brings_each_record_changed_after_a_time(
        subject: Subject) -> None:
    """Each record modified after the time, once, with its values; none modified more
    than a second before it (a store's times may have whole seconds: the capture
    takes a copy it has seen for old news)."""
    assert subject.poll is not None
    edited = subject.creates("accounts", {"account_name": "Edited"})
    untouched = subject.creates("accounts", {"account_name": "Untouched"})
    await asyncio.sleep(1.1)
    since = dt.datetime.now(dt.UTC)
    subject.edits("accounts", edited, {"website": "https://edited.example"})
    new = subject.creates("accounts", {"account_name": "New"})
    records = await subject.poll.modified_since("accounts", since)
    assert sorted(record_id for record_id, _ in records) == sorted([edited, new])
    values = dict(records)
    assert values[edited]["website"] == "https://edited.example"
    assert untouched not in values
    await asyncio.sleep(1.1)
    assert await subject.poll.modified_since("accounts", dt.datetime.now(dt.UTC)) == []
