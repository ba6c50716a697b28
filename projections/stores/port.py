"""The store port: what the sync needs of a store (the desk or the CRM), one
operation per need, each with its contract.

An adapter is bound to one store and, for a batch, to that batch's transaction
(``EmbeddedStore``) or to a queue of commands outside it (the hosted stores, to
come). Record ids are text on the port, whatever the store uses. A record's
values are its columns by name, the custom fields under ``custom`` (a mapping),
``deleted`` whether it is in the recycle bin, and ``modified_time`` /
``created_time``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from projections.catalog import Side
from projections.ledger import Outcome

Values = dict[str, Any]

SYNC_KEY_FIELD = "syncd_key"
"""The field of a remote store's record that holds the sync's key of it (its
external-id field): the placeholder it was created under (``projections.stores.
deferred``). The store's adapter reports it in the values of every change."""


def is_placeholder(record_id: str) -> bool:
    """A record the sync is creating in a remote store, before the store gave it an id."""
    return record_id.startswith("new:")


@dataclass(frozen=True, slots=True)
class Found:
    """A live record holding a match key: its id, its values, and whether it holds the
    key in its secondary e-mail (``via_secondary``) rather than its primary key."""

    id: str
    values: Values
    key: str
    via_secondary: bool


@dataclass(frozen=True, slots=True)
class Held:
    """What a store holds of a record now: its values (``deleted`` included) and its
    modification time."""

    values: Values
    modified_time: dt.datetime


class Store(Protocol):
    """One store, for one batch.

    ``deferred``: its writes are not made in the batch transaction but recorded there
    as commands for its writer (``projections.stores.deferred``); what ``create`` and
    ``update`` accepted lands later, and its landing comes back as an event of origin
    ``sync``. Such a store's capture must report every change of it (a reconciliation
    poll behind its notifications): a write its guard refuses when delivered is dropped
    for the newer change, whose event brings the sync's decision again.
    """

    side: Side
    deferred: bool

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        """The live (not deleted) records of ``module`` whose normalised match key
        (``projections.keys``: the e-mail's for contacts, the name's for accounts) is
        one of ``keys``; with ``secondary``, contacts whose secondary e-mail's key is
        too (a record holding two of the keys is found once per key). Ordered by id;
        an empty list when nothing holds them. Products have no match keys."""
        ...

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        """The records of ``ids`` that exist (deleted ones included), by id."""
        ...

    async def existing(self, module: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are records of ``module`` (in the recycle bin or not)."""
        ...

    async def allocate_ids(self, module: str, count: int) -> list[str]:
        """``count`` new record ids, each unique and never handed out again, for
        records ``create`` will write."""
        ...

    async def create(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     *, causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        """Create one record per row, under the row's ``id`` (from ``allocate_ids``,
        or the id a record had before it was lost): ``columns`` of the row, its
        ``custom`` fields (null ones left out), ``created_time`` and
        ``modified_time``. Created as the sync (``mark_own_writes``). ``causes``: the
        event each row is written for (what fails if a deferred write cannot land).
        Returns each created id with the record's modification time, or None where
        the write lands later (a deferred store)."""
        ...

    async def update(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     seen: Sequence[dt.datetime | None], *,
                     causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        """Write ``columns`` and the ``custom`` fields of each row to the record of its
        ``id``, only if that record is not newer than ``seen`` (the newest change of it
        the sync has seen, one per row): a record changed since keeps its values.
        A custom field set to null is removed; the record leaves the recycle bin; its
        modification time becomes the later of its own and the row's. Returns the
        records written, with their new modification times (None: accepted, it lands
        later, guarded then); the others were refused."""
        ...

    async def changes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a change captured that the event log does not hold yet
        (a person's or an import's, not the sync's own): its event will come."""
        ...

    async def deletes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a captured delete the event log does not hold yet."""
        ...

    async def mark_own_writes(self) -> None:
        """From now on in this batch, writes are the sync's own: the store's capture
        records them as the sync's (``origin = 'sync'``), so that they are not synced
        back (SYNC-14)."""
        ...


class WindowCapture(Protocol):
    """A store's change feed for the first sync (SYNC-08): its existing records put
    into its outbox, so that the ordinary pipeline matches, links and writes them."""

    side: Side

    async def window(self, module: str, cutoff: dt.datetime) -> tuple[int, int]:
        """How many live records of ``module`` were created at or after ``cutoff``, and
        the highest record id now: the plan of the first sync, from one snapshot
        (records created later are captured live)."""
        ...

    async def capture(self, module: str, *, after_id: int, cutoff: dt.datetime,
                      until_id: int | None, limit: int) -> list[int]:
        """Append to the outbox, in the caller's transaction, the next ``limit`` live
        records of the window (ids above ``after_id``, at most ``until_id``, created at
        or after ``cutoff``), in id order, as ``create`` events of origin ``import``;
        return their ids (none: the window is done)."""
        ...
