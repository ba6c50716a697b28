"""Per-field newest-wins merge of a linked pair's values (SYNC-15).

The merged state maps each field pair to ``[value, time_us, source]``. A
change from one side offers a value for every field it touched, stamped with
the source's modification time. The offer wins when
``(time, source rank, canonical value)`` is greater than the held one, with
the CRM ranked above the desk. That order is total, so the final state is the
maximum over every offer ever made: it does not depend on the order in which
changes arrive, which is what makes replicas, redeliveries and replays agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from projections.catalog import Side
from projections.mapping import FieldPair, ModuleMapping, read_field

SOURCE_RANK: dict[str, int] = {"desk": 0, "crm": 1}
State = dict[str, list[Any]]


def micros(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _order(value: Any, stamp: int, source: str) -> tuple[int, int, str]:
    return (stamp, SOURCE_RANK[source], canonical(value))


def touched(pair: FieldPair, side: Side, changed: list[str] | None) -> bool:
    if changed is None:
        return True
    return pair.on(side).name in changed


def offer(state: State, key: str, value: Any, stamp: int, source: str) -> bool:
    """Offer one field value; return True when it wins."""
    held = state.get(key)
    if held is not None and _order(value, stamp, source) <= _order(held[0], held[1], held[2]):
        return False
    state[key] = [value, stamp, source]
    return True


def merge_change(
    state: State,
    mapping: ModuleMapping,
    *,
    side: Side,
    values: dict[str, Any],
    changed: list[str] | None,
    modified_at: dt.datetime,
    created_at: dt.datetime,
) -> State:
    """Return a new state with one side's change merged in (the input is not modified).

    Fields the change touched carry its modification time; fields it did not
    touch are only filled in when the state has none yet, stamped with the
    record's creation time (they are at least that old).
    """
    merged = {key: list(item) for key, item in state.items()}
    changed_at, born_at = micros(modified_at), micros(created_at)
    for pair in mapping.pairs:
        value = read_field(values, pair.on(side))
        if touched(pair, side, changed):
            offer(merged, pair.key, value, changed_at, side)
        elif pair.key not in merged:
            offer(merged, pair.key, value, born_at, side)
    return merged


def project(state: State, mapping: ModuleMapping, side: Side) -> dict[str, Any]:
    """The values one side should hold, by that side's field names."""
    return {pair.on(side).name: state[pair.key][0] for pair in mapping.pairs if pair.key in state}


def side_values(values: dict[str, Any], mapping: ModuleMapping, side: Side) -> dict[str, Any]:
    """The mapped values a side's record holds, by that side's field names."""
    return {pair.on(side).name: read_field(values, pair.on(side)) for pair in mapping.pairs}


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.blake2b(canonical(values).encode(), digest_size=16).hexdigest()


def newest(state: State) -> int:
    return max((item[1] for item in state.values()), default=0)
