"""The CRM view decided in SQL (issue 19): its two rules read a value from the event's
JSON text the way the Python rules read the decoded value, and on a generated log the
live projection, its rebuild and a model built from the decoded events agree row for
row."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from projections.crm_view import ACTIVITIES, BOOKKEEPING, VIEWED_MODULES, CrmViewProjection
from projections.events import ChangeEvent, Op
from projections.handshake import is_live, record_ref
from projections.key_tables import WHITESPACE
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from tests.integration.test_handshake_set_rebuild import apply_live

# JSON texts as an event may carry them: integers however written, fractions and
# exponents (floats to Python), blank and padded strings (every character str.strip()
# strips: ``WHITESPACE``), the 200-character bound on either side, and what is never
# an id.
VALUES = [
    "1", "-7", "-0", "0", "12345678901234567890123", "5.0", "-0.0", "5e2", "1E2", "0e0",
    "1e-400", "true", "false", "null", '""', '"0"', '"  "', '" 12 "', '"no"',
    json.dumps(WHITESPACE + "id" + WHITESPACE),
    json.dumps(WHITESPACE), json.dumps("\u200b"), json.dumps("x" * 200),
    json.dumps("x" * 201), json.dumps(" " + "x" * 199), json.dumps(" " + "x" * 200),
    "[]", "[0]", '["a"]', "{}", '{"id": 1}', '{ }',
]


async def test_ref_and_truthy_read_json_as_python_reads_the_decoded_value(
        database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for text in VALUES:
            value = msgspec.json.decode(text)
            row = await conn.fetchrow(
                "SELECT crm_view.ref($1::json) AS ref, crm_view.truthy($1::json) AS truthy",
                text)
            assert row is not None
            assert row["ref"] == record_ref(value), text
            if text != "1e-400":  # Python reads it as 0.0 (said in migration 0031)
                assert row["truthy"] is bool(value), text
    finally:
        await conn.close()


DELETED: tuple[Any, ...] = (None, False, True, 0, 1, 0.0, "", "no", [], [0], {}, {"x": 1})
REFS: tuple[Any, ...] = (None, 3, "3", " 4 ", "", "  ", 5.0, True, [3], {"id": 3}, "x" * 201)


def generated(seed: int, steps: int) -> list[ChangeEvent]:
    rng = random.Random(seed)
    now = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)
    events: list[ChangeEvent] = []
    for _ in range(steps):
        now += dt.timedelta(seconds=rng.randint(1, 900))
        source = rng.choice(("crm", "crm", "crm", "desk"))
        module = rng.choice((*VIEWED_MODULES, "leads", "products"))
        values: dict[str, Any] = {"name": f"n{rng.randint(0, 9)}", "amount": rng.choice(
            (1, 1.5, 2.25, None))}
        if rng.random() < 0.5:
            values["deleted"] = rng.choice(DELETED)
        if rng.random() < 0.2:
            values["hard_deleted"] = rng.choice((True, False))
        for field in ("contact_id", "account_id", "parent_id"):
            if rng.random() < 0.7:
                values[field] = rng.choice(REFS)
        if module in ACTIVITIES or rng.random() < 0.1:
            values["parent_module"] = rng.choice(
                ("contacts", "accounts", "deals", "Contacts", None, 3))
        op = rng.choice(("create", "update", "update", "update", "delete", "restore"))
        events.append(ChangeEvent(
            event_id=uuid.uuid4(), source=source, module=module,  # type: ignore[arg-type]
            record_id=str(rng.randint(1, 25)), op=cast(Op, op), values=values,
            modified_at=now, created_at=now, origin="user", captured_at=now))
    return events


def model(events: list[ChangeEvent]) -> list[tuple[Any, ...]]:
    """The rows the rules give, computed from the decoded events in Python."""
    last: dict[tuple[str, str], ChangeEvent] = {}
    for event in events:
        if event.source == "crm" and event.module in VIEWED_MODULES:
            last[(event.module, event.record_id)] = event
    rows = []
    for (module, record_id), event in sorted(last.items()):
        if not is_live(event):
            continue
        values = {k: v for k, v in event.values.items() if k not in BOOKKEEPING}
        contact = account = None
        parent = values.get("parent_module")
        if module == "contacts":
            account = record_ref(values.get("account_id"))
        elif module == "deals":
            contact = record_ref(values.get("contact_id"))
            account = record_ref(values.get("account_id"))
        elif module in ACTIVITIES and parent == "contacts":
            contact = record_ref(values.get("parent_id"))
        elif module in ACTIVITIES and parent == "accounts":
            account = record_ref(values.get("parent_id"))
        rows.append((module, record_id, values, contact, account))
    return rows


async def rows(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [(r["module"], r["record_id"], json.loads(r["values"]), r["contact_id"],
             r["account_id"]) for r in await conn.fetch(
        'SELECT module, record_id, "values"::text AS "values", contact_id, account_id'
        " FROM crm_view.records ORDER BY module, record_id")]


@pytest.mark.parametrize(("seed", "steps"), [(1, 600), (2, 2000)])
async def test_live_rebuild_and_the_decoded_rules_agree(database_url: str, seed: int,
                                                         steps: int) -> None:
    events = generated(seed, steps)
    conn = await asyncpg.connect(database_url)
    try:
        await apply_live(conn, events, random.Random(seed), CrmViewProjection())
        live = await rows(conn)
        assert live == model(events)
        # The log reaches the cases it is meant to: rows kept and dropped, both refs.
        assert len(live) > 40 and any(r[3] for r in live) and any(r[4] for r in live)
        assert any(r[3] is None and r[0] == "deals" for r in live)

        # The rebuild empties the table and fills it again from each record's last
        # event: nothing differs from what the live projection left.
        report = await rebuild_from_events(conn, spec("crm_view"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 0, report.as_dict()
        assert report.events == len(live) and await rows(conn) == live
    finally:
        await conn.close()
