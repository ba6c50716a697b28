"""An in-memory store behind the store port (``projections.stores.port``), for unit
tests of the sync's logic and for the contract tests, which run the same cases on it
and on every real adapter (tests/integration/test_store_contract.py)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from projections.catalog import Side
from projections.keys import account_key, email_key
from projections.ledger import Outcome
from projections.stores.port import Found, Held, Values

_KEYS = {"contacts": ("email", "secondary_email"), "accounts": ("account_name", None)}
_NORMALISE = {"contacts": email_key, "accounts": account_key}


@dataclass
class Captured:
    """A change the store's capture recorded and the event log does not hold yet."""

    module: str
    record_id: str
    op: str
    origin: str


@dataclass
class FakeStore:
    side: Side
    records: dict[str, dict[int, Values]] = field(default_factory=dict)
    captured: list[Captured] = field(default_factory=list)
    next_id: int = 1
    own_writes: bool = False
    deferred: bool = False

    # -- what a person (or the store's own UI) does: captured ----------------------

    def person_writes(self, module: str, values: Values, record_id: int | None = None,
                      *, at: dt.datetime) -> int:
        """Create or change a record as a person would; the change is captured."""
        table = self.records.setdefault(module, {})
        if record_id is None:
            record_id, self.next_id = self.next_id, self.next_id + 1
            table[record_id] = {"id": record_id, "custom": {}, "deleted": False,
                                "created_time": at, "modified_time": at}
            op = "create"
        else:
            op = "update"
        table[record_id].update(copy.deepcopy(values), modified_time=at)
        self._capture(module, record_id, op)
        return record_id

    def person_deletes(self, module: str, record_id: int, *, at: dt.datetime) -> None:
        self.records[module][record_id].update(deleted=True, modified_time=at)
        self._capture(module, record_id, "delete")

    def _capture(self, module: str, record_id: int, op: str) -> None:
        self.captured.append(Captured(module, str(record_id), op,
                                      "sync" if self.own_writes else "user"))

    # -- the port ------------------------------------------------------------------

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        if module not in _KEYS:
            return []
        wanted = set(keys)
        primary, other = _KEYS[module]
        normalise = _NORMALISE[module]
        found: list[Found] = []
        for record_id, row in sorted(self.records.get(module, {}).items()):
            if row["deleted"]:
                continue
            k1 = normalise(row.get(primary))
            k2 = normalise(row.get(other)) if other and secondary else None
            if k1 in wanted:
                found.append(Found(str(record_id), self._values(row), k1, via_secondary=False))
            if k2 is not None and k2 in wanted and k2 != k1:
                found.append(Found(str(record_id), self._values(row), k2, via_secondary=True))
        return found

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        table = self.records.get(module, {})
        return {i: Held(self._values(table[int(i)]), table[int(i)]["modified_time"])
                for i in ids if i.isdigit() and int(i) in table}

    async def existing(self, module: str, ids: Sequence[str]) -> set[str]:
        table = self.records.get(module, {})
        return {i for i in ids if i.isdigit() and int(i) in table}

    async def allocate_ids(self, module: str, count: int) -> list[str]:
        first, self.next_id = self.next_id, self.next_id + count
        return [str(i) for i in range(first, first + count)]

    async def create(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     *, causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        table = self.records.setdefault(module, {})
        for row in rows:
            record_id = int(row["id"])
            table[record_id] = {
                "id": record_id, **{c: row.get(c) for c in columns},
                "custom": {k: v for k, v in (row.get("custom") or {}).items()
                           if v is not None},
                "deleted": False, "created_time": _time(row["created_time"]),
                "modified_time": _time(row["modified_time"])}
            self._capture(module, record_id, "create")
        return {str(row["id"]): _time(row["modified_time"]) for row in rows}

    async def update(self, module: str, columns: Sequence[str], rows: Sequence[Values],
                     seen: Sequence[dt.datetime | None], *,
                     causes: Sequence[Outcome | None] = ()
                     ) -> dict[str, dt.datetime | None]:
        table = self.records.get(module, {})
        written: dict[str, dt.datetime | None] = {}
        for row, limit in zip(rows, seen, strict=True):
            record = table.get(int(row["id"]))
            if record is None or limit is None or record["modified_time"] > limit:
                continue
            record.update({c: row.get(c) for c in columns}, deleted=False)
            custom = {**record["custom"], **(row.get("custom") or {})}
            record["custom"] = {k: v for k, v in custom.items() if v is not None}
            record["modified_time"] = max(record["modified_time"], _time(row["modified_time"]))
            written[str(record["id"])] = record["modified_time"]
            self._capture(module, int(row["id"]), "update")
        return written

    async def changes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        wanted = set(ids)
        return {c.record_id for c in self.captured
                if c.module == module and c.record_id in wanted and c.origin != "sync"}

    async def deletes_in_flight(self, module: str, ids: Sequence[str]) -> set[str]:
        wanted = set(ids)
        return {c.record_id for c in self.captured
                if c.module == module and c.record_id in wanted and c.op == "delete"}

    async def mark_own_writes(self) -> None:
        self.own_writes = True

    @staticmethod
    def _values(row: Values) -> Values:
        values: dict[str, Any] = copy.deepcopy(row)
        for stamp in ("created_time", "modified_time"):
            values[stamp] = row[stamp].isoformat()
        return values


def _time(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
