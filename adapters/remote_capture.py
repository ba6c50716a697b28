"""A remote store's change capture: records fetched from it become change events in
its outbox, each naming only the fields that changed since the daemon last saw the
record.

A hosted store reports changes by record, not by field (a notification names the
record, the reconciliation poll returns records modified since a time), and a
change event must say which fields it touched: merged as touching every field, a
change would restamp the fields it did not touch and beat a newer edit of them on
the other side. So the daemon keeps the values it last saw of each remote record
(``syncd.remote_records``): a record fetched again is compared with them, and only
a newer copy that differs is a change. The sync's own writes are remembered when
they land (the writer's ``remember``), so their copy fetched back is not a change.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from projections.catalog import Side
from projections.db import REMOTE_CAPTURE, Conn, loads_json
from projections.events import ChangeEvent, Origin
from projections.stores.outbox import Outbox
from projections.stores.port import Values
from projections.sync import held_while_paused

_TIMES = ("modified_time", "created_time")

_REMEMBER = (
    "INSERT INTO syncd.remote_records (store, module, record_id, \"values\","
    " modified_time) VALUES ($1, $2, $3, $4::jsonb, $5)"
    " ON CONFLICT (store, module, record_id) DO UPDATE"
    " SET \"values\" = EXCLUDED.\"values\", modified_time = EXCLUDED.modified_time"
    " WHERE syncd.remote_records.modified_time < EXCLUDED.modified_time")

WAKE_CHANNEL = "syncd_capture"
"""Woken with the store as payload when it notified a change (its capture listens)."""


async def wake(conn: Conn, store: Side) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, store)


async def remember(conn: Conn, store: Side, module: str, record_id: str, values: Values,
                   modified_time: dt.datetime) -> None:
    """The store holds ``values`` of the record as of ``modified_time`` (kept only if
    newer than what is remembered)."""
    await conn.execute(_REMEMBER, store, module, record_id,
                       msgspec.json.encode(values).decode(), modified_time)


async def remember_many(conn: Conn, store: Side, module: str,
                        records: Sequence[tuple[str, Values, dt.datetime]]) -> None:
    """``remember`` of each ``(record_id, values, modified_time)``, in one round."""
    await conn.executemany(_REMEMBER, [
        (store, module, record_id, msgspec.json.encode(values).decode(), modified)
        for record_id, values, modified in records])


def changed_fields(before: Values, after: Values) -> list[str]:
    """The fields of ``after`` (what was fetched: a poll may not ask for every field)
    whose values differ from ``before``, times aside; custom fields by key
    (``custom.<key>``, one that appeared or went away too), as the embedded stores'
    capture names them, so that the merge sees which custom field a change touched."""
    changed = {n for n in set(after) - {*_TIMES, "id", "custom"}
               if before.get(n) != after.get(n)}
    if "custom" in after:
        old, new = before.get("custom") or {}, after.get("custom") or {}
        changed |= {f"custom.{k}" for k in set(old) | set(new) if old.get(k) != new.get(k)}
    return sorted(changed)


class RemoteCapture:
    """Turns fetched records of one remote store into change events, once each."""

    def __init__(self, pool: asyncpg.Pool, store: Side) -> None:
        self.pool = pool
        self.store: Side = store

    async def observed(self, module: str, records: Sequence[tuple[str, Values]], *,
                       origin: Origin = "user") -> int:
        """Capture ``records`` (``(id, values)``, the values with ``modified_time`` and
        ``created_time`` as the store gave them) in one transaction: a record not
        seen before is a ``create``, a newer copy that differs an ``update`` of the
        fields that differ; anything else is old news. Returns the events appended."""
        if not records:
            return 0
        events: list[ChangeEvent] = []
        seen_now: list[tuple[str, Values, dt.datetime]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            known = await self._known(conn, module, [r[0] for r in records])
            for record_id, values in records:
                modified = record_time(values["modified_time"])
                seen = known.get(record_id)
                if seen is not None and seen["modified_time"] >= modified:
                    continue  # this copy, or a newer one, was seen already
                before = {} if seen is None else loads_json(seen["values"])
                changed = None if seen is None else changed_fields(before, values)
                values = {**before, **values}  # what was not fetched is as it was
                values.pop("hard_deleted", None)
                values["deleted"] = False  # fetched, so live (back from a bin, say)
                seen_now.append((record_id, values, modified))
                if changed == []:
                    continue  # only its time moved (a field the sync does not read, say)
                events.append(ChangeEvent(
                    event_id=uuid.uuid4(), source=self.store, module=module,
                    record_id=record_id, op="create" if seen is None else "update",
                    values=values, changed=changed, modified_at=modified,
                    created_at=record_time(values.get("created_time") or modified),
                    origin=origin if seen is None else "user",
                    captured_at=dt.datetime.now(dt.UTC)))
            await Outbox(conn, self.store).append_many(events)
            await remember_many(conn, self.store, module, seen_now)
        return len(events)

    async def amended(self, module: str,
                      records: Sequence[tuple[str, Values, dt.datetime]], *,
                      origin: Origin = "user") -> int:
        """Capture fields a store keeps apart from its records (a Zoho Desk ticket's
        customer rating, read from its own list): each ``(id, fields, when)`` of a
        record the daemon has seen, live, whose ``fields`` differ from what it saw,
        is an ``update`` of those fields (its other values as they were), in one
        transaction; a record never seen (nothing of it captured: there is nothing to
        amend) or deleted, or fields as they were, is nothing. Returns the events
        appended.

        The record's remembered time is left as it was: the fields are not the
        record's, and its next copy (later than that time, whatever the fields' time)
        must still be a change. The event is stamped ``when``, or the record's
        remembered time if that is later, so a record's events keep their order."""
        if not records:
            return 0
        events: list[ChangeEvent] = []
        async with self.pool.acquire() as conn, conn.transaction():
            known = await self._known(conn, module, [r[0] for r in records])
            amended: dict[str, Values] = {}
            for record_id, fields, when in records:
                seen = known.get(record_id)
                if seen is None:
                    continue
                before = amended.get(record_id) or loads_json(seen["values"])
                changed = sorted(n for n in fields if before.get(n) != fields[n])
                if before.get("deleted") or not changed:
                    continue
                values = amended[record_id] = {**before, **fields}
                modified = max(when, seen["modified_time"])
                events.append(ChangeEvent(
                    event_id=uuid.uuid4(), source=self.store, module=module,
                    record_id=record_id, op="update", values=values, changed=changed,
                    modified_at=modified,
                    created_at=record_time(values.get("created_time") or modified),
                    origin=origin, captured_at=dt.datetime.now(dt.UTC)))
            await Outbox(conn, self.store).append_many(events)
            await conn.executemany(
                "UPDATE syncd.remote_records SET \"values\" = $4::jsonb WHERE store = $1"
                " AND module = $2 AND record_id = $3",
                [(self.store, module, record_id, msgspec.json.encode(values).decode())
                 for record_id, values in amended.items()])
        return len(events)

    async def deleted(self, module: str, records: Sequence[tuple[str, dt.datetime, bool]]
                      ) -> int:
        """Capture deletes (``(id, deleted_time, permanently)``) in one transaction: a
        record the daemon has seen and not seen deleted since becomes a ``delete``
        event (its last values, ``deleted`` and ``hard_deleted``); a record it never
        saw, or a delete it has seen, is old news. Returns the events appended.

        A record in a hosted store's recycle bin is reported as deleted for good
        (``hard_deleted``): the sync cannot bring it back through the API (SYNC-11's
        restore), so a later change of its counterpart creates it again."""
        if not records:
            return 0
        appended = 0
        async with self.pool.acquire() as conn, conn.transaction():
            known = await self._known(conn, module, [r[0] for r in records])
            outbox = Outbox(conn, self.store)
            for record_id, when, _permanently in records:
                seen = known.get(record_id)
                if seen is None:
                    continue  # never seen: nothing of it was synced
                before = loads_json(seen["values"])
                if before.get("deleted"):
                    continue  # its delete was captured already
                values = {**before, "deleted": True, "hard_deleted": True}
                when = max(when, seen["modified_time"])
                await outbox.append(ChangeEvent(
                    event_id=uuid.uuid4(), source=self.store, module=module,
                    record_id=record_id, op="delete", values=values, changed=None,
                    modified_at=when,
                    created_at=record_time(before.get("created_time") or when),
                    origin="user", captured_at=dt.datetime.now(dt.UTC)),
                    keep_id=False, origin="user")
                await remember(conn, self.store, module, record_id, values,
                               when + dt.timedelta(microseconds=1))
                appended += 1
        return appended

    async def _known(self, conn: Conn, module: str,
                     ids: list[str]) -> dict[str, asyncpg.Record]:
        """What the daemon last saw of ``ids``, locked for the caller's transaction.
        A webhook's callback and the poll may bring the same record at once: one of
        them at a time (a lock per module), so a new record is created once."""
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                           REMOTE_CAPTURE, f"{self.store}.{module}")
        return {row["record_id"]: row for row in await conn.fetch(
            "SELECT record_id, \"values\", modified_time FROM syncd.remote_records"
            " WHERE store = $1 AND module = $2 AND record_id = ANY($3::text[])"
            " FOR UPDATE", self.store, module, ids)}

    async def cursor(self, module: str) -> dt.datetime | None:
        async with self.pool.acquire() as conn:
            value: dt.datetime | None = await conn.fetchval(
                "SELECT modified_since FROM syncd.remote_cursors WHERE store = $1"
                " AND module = $2", self.store, module)
        return value

    async def advance(self, module: str, since: dt.datetime) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO syncd.remote_cursors (store, module, modified_since)"
                " VALUES ($1, $2, $3) ON CONFLICT (store, module) DO UPDATE"
                " SET modified_since = greatest(syncd.remote_cursors.modified_since,"
                " EXCLUDED.modified_since)", self.store, module, since)


COMING, WAIT, REDECIDED = "coming", "wait", "redecided"


async def after_stale_write(conn: Conn, store: Side, module: str, record_id: str,
                            modified_time: dt.datetime) -> str:
    """The sync's write of a record was refused as stale: the store holds it as of
    ``modified_time``, newer than what the write was decided against. What brings the
    sync's decision again (in the caller's transaction, serialised with the capture):

    * ``COMING``: a change of the record captured since waits to be applied (in the
      store's outbox, or held while sync is paused): applying it decides the pair again.
    * ``WAIT``: the capture has not fetched that version yet. Whether it will be a change
      (then ``COMING``) or only a newer time (a field the sync does not read, which
      captures nothing) is not known yet: ask again later.
    * ``REDECIDED``: the capture has that version and nothing of it waits: its time
      moved with nothing the sync reads, or its change was applied before the write was
      refused. Nothing would bring the decision again, so a change of the record as the
      capture last saw it, touching no field, is appended to the outbox: applying it
      decides the pair against what the store holds (invariant 5: a write is never
      dropped for a change that will not come).
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                       REMOTE_CAPTURE, f"{store}.{module}")
    outbox = Outbox(conn, store)
    if (await outbox.changes_in_flight(module, [record_id])
            or await held_while_paused(conn, store, module, [record_id])):
        return COMING
    seen = await conn.fetchrow(
        "SELECT \"values\", modified_time FROM syncd.remote_records WHERE store = $1"
        " AND module = $2 AND record_id = $3", store, module, record_id)
    if seen is None or seen["modified_time"] < modified_time:
        return WAIT
    values = loads_json(seen["values"])
    await outbox.append_many([ChangeEvent(
        event_id=uuid.uuid4(), source=store, module=module, record_id=record_id,
        op="update", values=values, changed=[], modified_at=seen["modified_time"],
        created_at=record_time(values.get("created_time") or seen["modified_time"]),
        origin="user", captured_at=dt.datetime.now(dt.UTC))])
    return REDECIDED


def record_time(value: Any) -> dt.datetime:
    """A record's time as a store gave it (a datetime, or ISO 8601 text)."""
    if isinstance(value, dt.datetime):
        return value
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
