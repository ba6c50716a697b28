"""SYNC-15 on the pure planner, as a property: whatever the batching of concurrent
edits of linked pairs on both sides, the stores end holding the same values, the
newest edit of each field. The executor here is a small in-memory one with the
port's guard (a record newer than the newest change the sync has seen keeps its
values: that change's event is still on its way and brings the write); the same
property runs end to end on the embedded stores in
tests/integration/test_convergence.py."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.batch import LoggedEvent
from projections.catalog import Side
from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.merge import fingerprint, merge_change
from projections.sync_plan import EPOCH, Link, Planner

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
FIELDS = ("first_name", "phone", "mobile")
PAIRS = 3
CRM_ID = 900

edit = st.tuples(st.sampled_from(["desk", "crm"]), st.integers(0, PAIRS - 1),
                 st.sampled_from(FIELDS), st.sampled_from(["a", "b", "c", None]))


class Memory:
    """Both stores' contacts, the links between them, the events not yet applied."""

    def __init__(self, cfg: SyncConfig) -> None:
        self.cfg = cfg
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.links: dict[tuple[str, Side, str], Link] = {}
        mapping = cfg.mappings["contacts"]
        for n in range(PAIRS):
            base = {"first_name": "x", "last_name": "L", "email": f"p{n}@example.com",
                    "phone": None, "mobile": None, "account_id": None}
            desk_id, crm_id = str(n + 1), str(CRM_ID + n)
            self.rows[("desk", desk_id)] = {**base, "modified_time": T0}
            self.rows[("crm", crm_id)] = {**base, "modified_time": T0}
            link = Link(module="contacts", desk_id=desk_id, crm_id=crm_id,
                        state=merge_change({}, mapping, side="desk", values=base,
                                           changed=None, modified_at=T0, created_at=T0),
                        linked_at=T0, updated_at=T0)
            sides: tuple[Side, Side] = ("desk", "crm")
            for side in sides:
                link.set_fp(side, fingerprint(Planner._held(base, mapping, side)))
                link.saw(side, T0)
            self.links[("contacts", "desk", desk_id)] = link
            self.links[("contacts", "crm", crm_id)] = link

    def person_edits(self, side: str, n: int, fld: str, value: str | None,
                     at: dt.datetime, seq: int) -> LoggedEvent:
        record_id = str(n + 1) if side == "desk" else str(CRM_ID + n)
        row = self.rows[(side, record_id)]
        row[fld] = value
        row["modified_time"] = at
        values = {k: v for k, v in row.items() if k != "modified_time"}
        return LoggedEvent(seq, ChangeEvent(
            event_id=uuid.uuid4(), source=side, module="contacts",  # type: ignore[arg-type]
            record_id=record_id, op="update", values=values, changed=[fld],
            modified_at=at, created_at=T0, origin="user", captured_at=at))

    def apply(self, batch: list[LoggedEvent]) -> None:
        plan = Planner(self.cfg)
        for link in self.links.values():  # as read again from sync.links
            link.pending.clear()
            link.dirty = False
        plan.links = dict(self.links)
        plan.decide(batch)
        for write in plan.writes.values():
            record_id = write.link.id_on(write.side) or ""
            row = self.rows[(write.side, record_id)]
            seen = write.link.seen(write.side) or EPOCH
            if row["modified_time"] > seen:
                # The guard: a newer edit's event is still to come, and brings it.
                write.link.set_fp(write.side, None)
                continue
            row.update(write.values)
            row["modified_time"] = max(row["modified_time"], write.modified_at)
            write.link.saw(write.side, row["modified_time"])
            write.link.set_fp(write.side, fingerprint(write.values))


@settings(max_examples=150, deadline=None)
@given(st.lists(edit, min_size=1, max_size=24), st.lists(st.integers(1, 8), max_size=6))
def test_stores_converge_to_the_newest_edit_whatever_the_batching(
        edits: list[tuple[str, int, str, str | None]], sizes: list[int]) -> None:
    memory = Memory(SyncConfig())
    newest: dict[tuple[int, str], str | None] = {}
    events = []
    for k, (side, n, fld, value) in enumerate(edits):
        at = T0 + dt.timedelta(milliseconds=k + 1)
        events.append(memory.person_edits(side, n, fld, value, at, k + 1))
        newest[(n, fld)] = value
    position = 0
    for size in itertools.chain(sizes, itertools.repeat(len(events))):
        if position >= len(events):
            break
        memory.apply(events[position:position + size])
        position += size
    for n in range(PAIRS):
        desk, crm = memory.rows[("desk", str(n + 1))], memory.rows[("crm", str(CRM_ID + n))]
        for fld in FIELDS:
            expected = newest.get((n, fld), "x" if fld == "first_name" else None)
            assert desk[fld] == crm[fld] == expected, (n, fld, desk, crm)
