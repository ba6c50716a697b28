"""The store port's contract (projections/stores/port.py), written once and run on
every adapter: the in-memory fake (tests/support/fake_store.py) and the embedded
PostgreSQL stores (projections/stores/embedded.py), each case on the desk and on the
CRM. The remote stores' adapters (the hosted desk and CRM) have their own contract,
what the deferred adapter asks of them: tests/integration/test_remote_store_contract.py."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import pytest

from projections.catalog import Side
from projections.keys import email_key
from projections.stores.embedded import EmbeddedStore
from projections.stores.port import Store
from tests.support.fake_store import FakeStore

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
COLUMNS = ["first_name", "last_name", "email", "secondary_email", "phone", "mobile",
           "account_id"]


class Person(Protocol):
    """Edits a store as a person would (captured), outside the batch under test."""

    async def writes(self, module: str, values: dict[str, Any],
                     record_id: int | None = None, *, at: dt.datetime = T0) -> int: ...

    async def deletes(self, module: str, record_id: int, *, at: dt.datetime = T0) -> None: ...


@dataclass
class FakePerson:
    store: FakeStore

    async def writes(self, module: str, values: dict[str, Any],
                     record_id: int | None = None, *, at: dt.datetime = T0) -> int:
        return self.store.person_writes(module, values, record_id, at=at)

    async def deletes(self, module: str, record_id: int, *, at: dt.datetime = T0) -> None:
        self.store.person_deletes(module, record_id, at=at)


@dataclass
class SqlPerson:
    conn: asyncpg.Connection
    side: Side

    async def writes(self, module: str, values: dict[str, Any],
                     record_id: int | None = None, *, at: dt.datetime = T0) -> int:
        names = sorted(values)
        args = [json.dumps(values[n]) if n == "custom" else values[n] for n in names]
        casts = ["::jsonb" if n == "custom" else "" for n in names]
        if record_id is None:
            cols = ", ".join([*names, "created_time", "modified_time"])
            marks = ", ".join([*(f"${i}{c}" for i, c in enumerate(casts, start=1)),
                               f"${len(names) + 1}", f"${len(names) + 2}"])
            return int(await self.conn.fetchval(
                f"INSERT INTO {self.side}.{module} ({cols}) VALUES ({marks}) RETURNING id",
                *args, at, at))
        sets = ", ".join(f"{n} = ${i}{c}"
                         for i, (n, c) in enumerate(zip(names, casts, strict=True), start=2))
        await self.conn.execute(
            f"UPDATE {self.side}.{module} SET {sets}, modified_time = ${len(names) + 2}"
            " WHERE id = $1", record_id, *args, at)
        return record_id

    async def deletes(self, module: str, record_id: int, *, at: dt.datetime = T0) -> None:
        await self.conn.execute(
            f"UPDATE {self.side}.{module} SET deleted = true, modified_time = $2 WHERE id = $1",
            record_id, at)


@dataclass
class Subject:
    store: Store
    person: Person


@pytest.fixture(params=["fake", "embedded"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["desk", "crm"])
def side(request: pytest.FixtureRequest) -> Side:
    value: Side = request.param
    return value


@pytest.fixture
def database(kind: str, request: pytest.FixtureRequest) -> str | None:
    """A database for the embedded adapter's cases only."""
    return str(request.getfixturevalue("database_url")) if kind == "embedded" else None


@pytest.fixture
async def subject(side: Side, database: str | None) -> AsyncIterator[Subject]:
    if database is None:
        fake = FakeStore(side)
        yield Subject(fake, FakePerson(fake))
        return
    person_conn = await asyncpg.connect(database)
    batch_conn = await asyncpg.connect(database)
    transaction = batch_conn.transaction()
    await transaction.start()
    try:
        yield Subject(EmbeddedStore(batch_conn, side), SqlPerson(person_conn, side))
    finally:
        await transaction.rollback()
        await batch_conn.close()
        await person_conn.close()


def contact(last: str, email: str | None = None, **more: Any) -> dict[str, Any]:
    return {"last_name": last, "email": email, **more}


def row(record_id: str, values: dict[str, Any], *, at: dt.datetime = T0,
        custom: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": int(record_id), **{c: values.get(c) for c in COLUMNS},
            "custom": custom or {}, "created_time": at.isoformat(),
            "modified_time": at.isoformat()}


async def test_find_matches_normalised_keys_of_live_records(subject: Subject) -> None:
    person, store = subject.person, subject.store
    ann = await person.writes("contacts", contact("Ann", "  Ann@Example.COM "))
    await person.writes("contacts", contact("Bob", "bob@example.com"))
    gone = await person.writes("contacts", contact("Old", "ann@example.com"))
    await person.deletes("contacts", gone)
    found = await store.find("contacts", [email_key("ann@example.com") or ""], secondary=False)
    assert [(f.id, f.key, f.via_secondary) for f in found] == [
        (str(ann), "ann@example.com", False)]
    assert found[0].values["last_name"] == "Ann"
    assert await store.find("contacts", ["nobody@example.com"], secondary=False) == []
    assert await store.find("products", ["x"], secondary=False) == []


async def test_find_by_secondary_email_only_when_asked(subject: Subject) -> None:
    person, store = subject.person, subject.store
    both = await person.writes("contacts", contact("Cy", "cy@work.example",
                                                   secondary_email="cy@home.example"))
    keys = ["cy@home.example", "cy@work.example"]
    assert [f.key for f in await store.find("contacts", keys, secondary=False)] == [
        "cy@work.example"]
    found = await store.find("contacts", keys, secondary=True)
    assert [(f.id, f.key, f.via_secondary) for f in found] == [
        (str(both), "cy@work.example", False), (str(both), "cy@home.example", True)]


async def test_find_accounts_by_name_key(subject: Subject) -> None:
    person, store = subject.person, subject.store
    acme = await subject.person.writes("accounts", {"account_name": "ACME  Corp"})
    found = await store.find("accounts", ["acme corp"], secondary=True)
    assert [(f.id, f.via_secondary) for f in found] == [(str(acme), False)]
    del person


async def test_read_and_existing(subject: Subject) -> None:
    person, store = subject.person, subject.store
    one = await person.writes("contacts", contact("One"), at=T0)
    two = await person.writes("contacts", contact("Two"), at=T0 + dt.timedelta(seconds=1))
    await person.deletes("contacts", two, at=T0 + dt.timedelta(seconds=2))
    held = await store.read("contacts", [str(one), str(two), "999999", "not-an-id"])
    assert set(held) == {str(one), str(two)}
    assert held[str(one)].values["last_name"] == "One" and not held[str(one)].values["deleted"]
    assert held[str(two)].values["deleted"] is True
    assert held[str(two)].modified_time == T0 + dt.timedelta(seconds=2)
    assert await store.existing("contacts", [str(one), str(two), "999999", "x"]) == {
        str(one), str(two)}


async def test_allocated_ids_are_never_handed_out_twice(subject: Subject) -> None:
    store = subject.store
    first = await store.allocate_ids("contacts", 3)
    second = await store.allocate_ids("contacts", 2)
    assert len(set(first + second)) == 5
    taken = await subject.person.writes("contacts", contact("Later"))
    assert str(taken) not in first + second


async def test_create_writes_under_the_given_id(subject: Subject) -> None:
    store = subject.store
    [new_id] = await store.allocate_ids("contacts", 1)
    await store.mark_own_writes()
    await store.create("contacts", COLUMNS, [row(new_id, contact("New", "new@example.com"),
                                                 custom={"size": 3, "gone": None})])
    held = (await store.read("contacts", [new_id]))[new_id]
    assert held.values["email"] == "new@example.com"
    assert held.values["custom"] == {"size": 3}  # null custom fields are left out
    assert held.modified_time == T0
    # The sync's own write is not a change in flight: nothing will come for it.
    assert await store.changes_in_flight("contacts", [new_id]) == set()


async def test_update_is_guarded_by_the_newest_change_seen(subject: Subject) -> None:
    person, store = subject.person, subject.store
    kept = await person.writes("contacts", contact("Kept", custom={"a": 1, "b": 2}), at=T0)
    newer = await person.writes("contacts", contact("Newer"), at=T0 + dt.timedelta(hours=1))
    await store.mark_own_writes()
    later = T0 + dt.timedelta(minutes=5)
    written = await store.update(
        "contacts", COLUMNS,
        [row(str(kept), contact("Written"), at=later, custom={"a": None, "c": 3}),
         row(str(newer), contact("Refused"), at=later)],
        [T0, T0])  # the sync saw each record as of T0
    assert written == {str(kept): later}
    held = await store.read("contacts", [str(kept), str(newer)])
    assert held[str(kept)].values["last_name"] == "Written"
    assert held[str(kept)].values["custom"] == {"b": 2, "c": 3}  # null removes a key
    assert held[str(newer)].values["last_name"] == "Newer"  # changed since: kept


async def test_update_brings_a_record_back_from_the_recycle_bin(subject: Subject) -> None:
    person, store = subject.person, subject.store
    binned = await person.writes("contacts", contact("Binned"), at=T0)
    await person.deletes("contacts", binned, at=T0 + dt.timedelta(seconds=1))
    await store.mark_own_writes()
    seen = T0 + dt.timedelta(seconds=1)
    written = await store.update("contacts", COLUMNS,
                                 [row(str(binned), contact("Back"), at=T0)], [seen])
    assert written == {str(binned): seen}  # the later of the record's and the row's
    assert (await store.read("contacts", [str(binned)]))[str(binned)].values["deleted"] is False


async def test_changes_and_deletes_in_flight(subject: Subject) -> None:
    person, store = subject.person, subject.store
    changed = await person.writes("contacts", contact("Changed"))
    deleted = await person.writes("contacts", contact("Deleted"))
    await person.deletes("contacts", deleted)
    ids = [str(changed), str(deleted), "424242"]
    assert await store.changes_in_flight("contacts", ids) == {str(changed), str(deleted)}
    assert await store.deletes_in_flight("contacts", ids) == {str(deleted)}
    assert await store.changes_in_flight("accounts", ids) == set()
