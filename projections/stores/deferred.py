"""A store the batch cannot write in its transaction (a hosted desk or CRM, written
over its API): the adapter that turns the batch's writes into commands of the
command outbox (``projections.stores.commands``), delivered after the commit by
the store's writer (``adapters.command_writer``).

What it reads of the remote store (match candidates, records by id) it asks the
store's ``RemoteReads``; what the batch decided but the writer has not delivered
yet it answers from the command outbox, on the batch's connection: a record the
sync is still creating is found by its match keys, so a second record with the
same e-mail is not created twice.

A record the sync creates has no id of the store's before it lands, so the batch
links it under a placeholder (``new:`` and a UUID): the command's record key, sent
with the create in the store's external-id field (``SYNC_KEY_FIELD``). The store
keeps it, so a create delivered twice is one record (an upsert by that field),
and every change the store reports of the record carries it: the sync then moves
the link onto the store's own id (``projections.sync_plan``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Protocol

from projections.catalog import Side
from projections.db import Conn, loads_json
from projections.ledger import Outcome
from projections.stores import commands
from projections.stores.commands import Cause, Command
from projections.stores.outbox import Outbox
from projections.stores.port import SYNC_KEY_FIELD, Found, Held, Values, is_placeholder
from projections.sync_plan import held_keys


class RemoteReads(Protocol):
    """What the batch reads of a remote store, over its API."""

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        """As ``Store.find``, of the records the store holds."""
        ...

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        """As ``Store.read``."""
        ...


class DeferredStore:
    """One remote store, for one batch: reads through ``remote``, writes as commands
    on the batch's connection."""

    deferred = True

    def __init__(self, conn: Conn, side: Side, remote: RemoteReads) -> None:
        self.conn = conn
        self.side: Side = side
        self.remote = remote

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        found = await self.remote.find(module, keys, secondary=secondary)
        wanted = set(keys)
        for record_key, payload in await self._queued_creates(module):
            for key, via_secondary in held_keys(module, payload, secondary=secondary):
                if key in wanted:
                    found.append(Found(record_key, payload, key, via_secondary))
        return sorted(found, key=lambda f: f.id)

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        return await self.remote.read(module, [i for i in ids if not is_placeholder(i)])

    async def existing(self, module: str, ids: Sequence[str]) -> set[str]:
        queued = {key for key, _ in await self._queued_creates(module)}
        return set(await self.read(module, ids)) | (set(ids) & queued)

    async def allocate_ids(self, module: str, count: int) -> list[str]:
        return [f"new:{uuid.uuid4()}" for _ in range(count)]

    async def create(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     *, causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        await commands.enqueue(self.conn, [
            Command(store=self.side, module=module, record_key=row["id"], op="create",
                    payload={**_payload(row, columns), SYNC_KEY_FIELD: row["id"]},
                    cause=_cause(causes, n))
            for n, row in enumerate(rows)])
        return {row["id"]: None for row in rows}

    async def update(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     seen: Sequence[dt.datetime | None], *,
                     causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        await commands.enqueue(self.conn, [
            Command(store=self.side, module=module, record_key=row["id"], op="update",
                    record_id=None if is_placeholder(row["id"]) else row["id"],
                    payload=_payload(row, columns), seen=moment, cause=_cause(causes, n))
            for n, (row, moment) in enumerate(zip(rows, seen, strict=True))])
        return {row["id"]: None for row in rows}

    async def changes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        # Every write is accepted (``update`` refuses none), so the sync never asks.
        return set()

    async def deletes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        return await Outbox(self.conn, self.side).deletes_in_flight(module, ids)

    async def mark_own_writes(self) -> None:
        """Nothing to mark: the store's capture cannot tell the sync's writes from a
        person's, so their echoes are recognised by fingerprint and sync key."""

    async def _queued_creates(self, module: str) -> list[tuple[str, Values]]:
        rows = await self.conn.fetch(
            "SELECT record_key, payload FROM sync.commands"
            " WHERE store = $1 AND module = $2 AND op = 'create'", self.side, module)
        return [(row["record_key"], loads_json(row["payload"])) for row in rows]


def _payload(row: Values, columns: Sequence[str]) -> Values:
    """What a command writes: the columns, and the custom fields (a null one is
    removed), never the times (the store keeps its own)."""
    payload = {column: row.get(column) for column in columns}
    payload["custom"] = dict(row.get("custom") or {})
    return payload


def _cause(causes: Sequence[Outcome | None], n: int) -> Cause | None:
    outcome = causes[n] if n < len(causes) else None
    if outcome is None:
        return None
    return Cause(outcome.event_id, outcome.source, outcome.module, outcome.record_id)
