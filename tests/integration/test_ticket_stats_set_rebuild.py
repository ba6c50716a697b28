"""Issue 19: the statistics projection rebuilt set-based (each record's last state,
each ticket's first close, the clock) is, row for row, what the per-event rebuild
(every logged event through the live projection) gives.

The log is generated: tickets changed many times at random (closed, reopened, closed
again; a custom status typed Closed; the recycle bin and hard deletes; contacts,
due dates, ratings and priorities changing), agents' replies, comments and the
customers' messages (moved between tickets, deleted), CRM contacts changing account,
events of modules the statistics do not read, and newest events that no longer
decode (a ticket's, a thread's, and the newest event of the whole log)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any, cast

import asyncpg
import pytest

from projections.events import ChangeEvent, Op, Source
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from projections.ticket_stats import StatisticsProjection
from tests.integration.test_handshake_set_rebuild import apply_live

TABLES = {"tickets": "ticket_id", "replies": "thread_id", "crm_contacts": "contact_id",
          "crm_leads": "lead_id", "clock": "one"}
STATUSES: tuple[tuple[str, str | None, bool], ...] = (
    # status, status_type (when the event carries one), whether it carries one
    ("Open", None, False), ("Closed", None, False), (" closed ", None, False),
    ("On Hold", None, False), ("Escalated", "Escalated", True),
    ("Done and dusted", "Closed", True), ("Nobody defined this", None, True),
    ("Closed", "Open", True))


def generated(seed: int, steps: int) -> list[ChangeEvent]:
    rng = random.Random(seed)
    now = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)
    records: dict[tuple[str, str, str], tuple[dict[str, Any], dt.datetime]] = {}
    events: list[ChangeEvent] = []

    def emit(source: str, module: str, record_id: str, **fields: Any) -> None:
        nonlocal now
        now += dt.timedelta(seconds=rng.randint(1, 900))
        key = (source, module, record_id)
        values, created = records.get(key, ({}, now))
        values = {**values, **fields}
        records[key] = (values, created)
        op = "delete" if rng.random() < 0.05 else ("create" if len(events) % 4 == 0
                                                   else "update")
        events.append(ChangeEvent(
            event_id=uuid.uuid4(), source=cast(Source, source), module=module,
            record_id=record_id, op=cast(Op, op), values=dict(values),
            modified_at=now - dt.timedelta(seconds=rng.randint(0, 30)), created_at=created,
            origin=rng.choice(("user", "sync", "import")), captured_at=now))

    for _ in range(steps):
        kind = rng.choice(("ticket", "ticket", "thread", "thread", "contact", "lead",
                           "noise"))
        if kind == "ticket":
            status, typed, carries = rng.choice(STATUSES)
            fields: dict[str, Any] = {
                "status": status, "contact_id": rng.choice((1, 2, "3", None)),
                "subject": f"s{rng.randint(0, 5)}",
                "due_date": rng.choice((None, (now + dt.timedelta(
                    hours=rng.randint(-48, 48))).isoformat(), "not a date")),
                "rating": rng.choice(("good", "okay", "bad", "meh", None)),
                "priority": rng.choice(("High", "Low", None)),
                "department_id": rng.choice((4, "5", None)),
                "requester_email": rng.choice(("a@x.org", None)),
                "deleted": rng.random() < 0.1}
            if carries:
                fields["status_type"] = typed
            emit("desk", "tickets", f"{rng.randint(1, 40)}", **fields)
        elif kind == "thread":
            emit("desk", "ticket_threads", f"{rng.randint(1, 80)}",
                 ticket_id=rng.choice((rng.randint(1, 40), None)),
                 direction=rng.choice(("in", "out", "out")),
                 kind=rng.choice(("reply", "reply", "comment")),
                 deleted=rng.random() < 0.1)
        elif kind == "contact":
            # Decided in SQL by the set-based rebuild: refs and "deleted" of every type.
            emit("crm", "contacts", f"{rng.randint(1, 10)}",
                 account_id=rng.choice((7, "8", None, " 9\n", "", 7.5, True, [7], "x" * 201)),
                 deleted=rng.choice((False, False, False, True, 0, 1, "", "no", [], None)))
        elif kind == "lead":
            emit("crm", "leads", f"{rng.randint(1, 10)}",
                 email=rng.choice(("a@x.org", " A@X.org", "b@x.org", "", None, " ", 5,
                                   ["a@x.org"], "\u00c9@x.org")),
                 deleted=rng.choice((False, False, False, True, 0, "", "yes")))
        else:
            emit(rng.choice(("desk", "crm")), rng.choice(("accounts", "products")),
                 f"{rng.randint(1, 5)}", name="x")
    return events


async def log_undecodable(conn: asyncpg.Connection, source: str, module: str,
                          record_id: str, captured_at: dt.datetime) -> None:
    """A newest event logged under older rules: the per-event path skips it."""
    await conn.execute(
        "INSERT INTO syncd.event_log (event_id, source, module, record_id, op, origin,"
        " modified_at, captured_at, payload, kafka_topic, kafka_partition, kafka_offset)"
        " VALUES ($1, $2, $3, $4, 'update', 'user', $5, $5,"
        " '{\"v\": 0, \"values\": {\"status\": \"Closed\", \"deleted\": true}}', 't', 0, -1)",
        uuid.uuid4(), source, module, record_id, captured_at)


async def state(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(row) for row in await conn.fetch(
                f"SELECT * FROM ticket_stats.{table} ORDER BY {key}")]
            for table, key in TABLES.items()}


@pytest.mark.parametrize(("seed", "steps"), [(1, 700), (2, 700), (3, 3000)])
async def test_set_based_rebuild_equals_the_per_event_rebuild(
        database_url: str, seed: int, steps: int) -> None:
    events = generated(seed, steps)
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    try:
        await apply_live(conn, events, random.Random(seed), StatisticsProjection())
        later = events[-1].captured_at + dt.timedelta(hours=1)
        await log_undecodable(conn, "desk", "tickets", "1", later)
        await log_undecodable(conn, "desk", "ticket_threads", "1", later)
        await log_undecodable(conn, "crm", "accounts", "1", later)  # the newest of all
        per_event = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                              dry_run=False, per_event=True)
        assert per_event.changes == 0, per_event.as_dict()  # the live state is its rebuild
        expected = await state(conn)
        # The generated log reaches the cases it is meant to.
        tickets = expected["tickets"]
        closed_first = [t for t in tickets if t[8] is not None]  # first_closed_at
        assert closed_first and any(t[4] != "Closed" for t in closed_first)  # reopened
        assert any(not t[2] for t in tickets) and any(t[2] for t in tickets)  # live or not
        assert expected["replies"] and expected["crm_contacts"] and expected["clock"]
        assert expected["crm_leads"]
        assert expected["clock"][0][1] < later

        for table in TABLES:
            await conn.execute(f"DELETE FROM ticket_stats.{table}")
        source = EventLogSource()
        report = await rebuild_from_events(conn, spec("statistics"), source, dry_run=False)
        assert report.unit == "records' last events" and source.undecodable == 2
        assert await state(conn) == expected
        # And over the live state, the set-based rebuild finds nothing to change.
        again = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                          dry_run=True)
        assert again.changes == 0, again.as_dict()
    finally:
        await conn.close()
