"""Issue 19: the board rebuilt set-based from each record's last state is, row for row,
what the per-event rebuild (every logged event through the live projection) gives.

The event log is generated: a few departments, people and deals, and many tickets,
each changed many times at random (so every ticket walks the columns), with e-mail
and phone keys written in every form that folds to one key, converted leads, deals
won, open and lost and moved between contacts, custom statuses with and without a
mapping, the recycle bin and hard deletes, restores, tickets closed and reopened,
changes of department, and a record whose newest logged event no longer decodes.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any, cast

import asyncpg
import pytest

from projections.batch import Message, Projection, apply_batch, reset_offset
from projections.events import ChangeEvent, Op, Origin, Source, encode_event
from projections.handshake import HandshakeProjection
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events

STATE = {"board": "ticket_id", "crm_keys": "key_kind, key, kind, record_id",
         "deals": "deal_id", "departments": "department_id"}

EMAILS = ("ann@x.org", " ANN@X.org ", "bob@x.org", "carl@x.org", "dora@x.org", "", None)
PHONES = ("+33 6 12 34 56 78", "0033 612345678", "06.12.34.56.78 ext. 4", 612345678,
          "+1 (555) 123-4567", "555-123-4567", "0612;ext=2", "07 77 77 77 77", None)
STATUSES: tuple[tuple[str, str | None], ...] = (
    ("Open", None), ("Closed", None), ("On Hold", None), ("Escalated", None),
    ("Waiting on us", "Open"), ("Parked", "On Hold"), ("Nobody defined this", None))
STAGES = ("Open", " won ", "Lost", "closed-won", None)


class Log:
    """Full-value change events of a small world, with rising capture times."""

    def __init__(self, seed: int, scale: int) -> None:
        self.rng = random.Random(seed)
        self.scale = scale  # records per kind: more of them share the same few keys
        self.now = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)
        self.events: list[ChangeEvent] = []
        self.records: dict[tuple[str, str, str], tuple[dict[str, Any], dt.datetime]] = {}

    def emit(self, source: str, module: str, record_id: str, values: dict[str, Any], *,
             op: str | None = None) -> None:
        key = (source, module, record_id)
        self.now += dt.timedelta(seconds=self.rng.randint(1, 40))
        created = self.records.get(key, (None, self.now))[1]
        self.records[key] = (values, created)
        origins: tuple[Origin, ...] = ("user", "sync", "import")  # the board reads them all
        self.events.append(ChangeEvent(
            event_id=uuid.uuid4(), source=cast(Source, source), module=module,
            record_id=record_id,
            op=cast(Op, op or ("update" if len(self.events) % 3 else "create")),
            values=dict(values), modified_at=self.now, created_at=created,
            origin=self.rng.choice(origins), captured_at=self.now))

    def values(self, source: str, module: str, record_id: str) -> dict[str, Any]:
        return dict(self.records.get((source, module, record_id), ({}, None))[0])

    def change(self, source: str, module: str, record_id: str, **fields: Any) -> None:
        values = self.values(source, module, record_id)
        values.update(fields)
        if self.rng.random() < 0.08:  # a hard delete carries the last values
            self.emit(source, module, record_id, values, op="delete")
        else:
            self.emit(source, module, record_id, values)

    def step(self) -> None:
        r = self.rng
        kind = r.choice(("ticket", "ticket", "ticket", "contact", "lead", "deal", "department",
                         "noise"))
        if kind == "ticket":
            status, maps_to = r.choice(STATUSES)
            fields: dict[str, Any] = {
                "status": status, "subject": f"s{r.randint(0, 3)}",
                "department_id": r.choice(("d1", "d2", "d3", 2, None)),
                "requester_email": r.choice((*EMAILS, "stranger@y.org")),
                "requester_phone": r.choice((*PHONES, "+44 20 7946 0000")),
                "priority": r.choice(("High", None)), "deleted": r.random() < 0.1}
            if maps_to is not None or status == "Nobody defined this":
                fields["status_type"] = maps_to
            self.change("desk", "tickets", f"t{r.randint(1, 14 * self.scale)}", **fields)
        elif kind == "contact":
            self.change("crm", "contacts", f"c{r.randint(1, 6 * self.scale)}",
                        email=r.choice(EMAILS), secondary_email=r.choice(EMAILS),
                        phone=r.choice(PHONES), mobile=r.choice(PHONES),
                        deleted=r.random() < 0.15)
        elif kind == "lead":
            self.change("crm", "leads", f"l{r.randint(1, 4 * self.scale)}", email=r.choice(EMAILS),
                        phone=r.choice(PHONES), converted=r.random() < 0.3,
                        deleted=r.random() < 0.1)
        elif kind == "deal":
            contact = r.randint(1, 6 * self.scale)
            self.change("crm", "deals", f"x{r.randint(1, 6 * self.scale)}", stage=r.choice(STAGES),
                        contact_id=r.choice((f"c{contact}", contact, None)),
                        deleted=r.random() < 0.1)
        elif kind == "department":
            self.change("desk", "departments", r.choice(("d1", "d2", "d3", "2")),
                        name=r.choice(("Support", "Billing", None)), deleted=r.random() < 0.1)
        else:  # modules the board does not read
            self.change(r.choice(("desk", "crm")), "contacts" if r.random() < 0.5 else "accounts",
                        f"n{r.randint(1, 3)}", email=r.choice(EMAILS), phone=r.choice(PHONES))


def generated(seed: int, steps: int, scale: int) -> list[ChangeEvent]:
    log = Log(seed, scale)
    # Every column is reachable from the start: an e-mail contact with a won deal, a
    # phone contact with an open deal, a lead, and tickets for each of them.
    log.change("desk", "departments", "d1", name="Support", deleted=False)
    log.change("crm", "contacts", "c1", email="ann@x.org", phone=None, deleted=False)
    log.change("crm", "deals", "x1", stage="Won", contact_id="c1", deleted=False)
    log.change("crm", "contacts", "c2", email=None, phone="+1 (555) 123-4567", deleted=False)
    log.change("crm", "deals", "x2", stage="Open", contact_id=2, deleted=False)
    for _ in range(steps):
        log.step()
    # And it ends with a deal of each stage and a ticket in each column.
    log.emit("crm", "deals", "x1", {"stage": "won", "contact_id": "c1"})
    log.emit("crm", "deals", "x2", {"stage": "open", "contact_id": "c2"})
    log.emit("crm", "deals", "x3", {"stage": "lost", "contact_id": "c1"})
    log.emit("crm", "contacts", "c1", {"email": "carl@x.org"})
    log.emit("crm", "contacts", "c2", {"phone": "+1 (555) 123-4567"})
    log.emit("crm", "leads", "l1", {"email": "lead@y.org", "converted": False})
    for ticket, email, phone in (("t11", "carl@x.org", None), ("t12", None, "555-123-4567"),
                                 ("t13", "lead@y.org", None), ("t14", "stranger@y.org", None)):
        log.emit("desk", "tickets", ticket, {"department_id": "d2", "status": "Open",
                                             "requester_email": email, "requester_phone": phone})
    return log.events


async def apply_live(conn: asyncpg.Connection, events: list[ChangeEvent], rng: random.Random,
                     projection: Projection | None = None) -> None:
    """Through the projector's batch, in random cuts, as the live board (or another
    projection) is kept."""
    await reset_offset(conn, "g", ("t", 0), 0)
    projection = projection or HandshakeProjection()
    offset = 0
    while offset < len(events):
        cut = events[offset:offset + rng.randint(1, 60)]
        messages = [Message("t", 0, offset + i, encode_event(e)) for i, e in enumerate(cut)]
        outcome = await apply_batch(conn, group_id="g", messages=messages,
                                    starts={("t", 0): offset}, projections=[projection])
        assert outcome.fenced is None and not outcome.rejected
        offset += len(cut)


async def log_undecodable(conn: asyncpg.Connection, source: str, module: str,
                          record_id: str) -> None:
    """A newest event logged under older rules: the per-event path skips it."""
    await conn.execute(
        "INSERT INTO syncd.event_log (event_id, source, module, record_id, op, origin,"
        " modified_at, captured_at, payload, kafka_topic, kafka_partition, kafka_offset)"
        " VALUES ($1, $2, $3, $4, 'update', 'user', now(), now(),"
        " '{\"v\": 0, \"values\": {\"deleted\": true}}', 't', 0, -1)",
        uuid.uuid4(), source, module, record_id)


async def state(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(row) for row in await conn.fetch(
                f"SELECT * FROM handshake.{table} ORDER BY {key}")]
            for table, key in STATE.items()}


@pytest.mark.parametrize(("seed", "steps", "scale"), [(1, 900, 1), (2, 900, 1), (3, 900, 1),
                                                      (4, 6000, 15)])
async def test_set_based_rebuild_equals_the_per_event_rebuild(
        database_url: str, seed: int, steps: int, scale: int) -> None:
    """The set-based rebuild gives every state table row for row as the per-event one."""
    events = generated(seed, steps, scale)
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    try:
        await apply_live(conn, events, random.Random(seed))
        await log_undecodable(conn, "desk", "tickets", "t1")
        await log_undecodable(conn, "crm", "contacts", "c1")
        per_event = await rebuild_from_events(conn, spec("handshake"), EventLogSource(),
                                              dry_run=False, per_event=True)
        assert per_event.changes == 0, per_event.as_dict()  # the live board is its rebuild
        expected = await state(conn)
        # The generated log reaches every case it is meant to.
        moves = await conn.fetch("SELECT from_column, to_column FROM handshake.moves")
        assert {m["to_column"] for m in moves} == {
            None, "new", "contacts_leads", "opportunities", "customers"}
        assert {m["from_column"] for m in moves if m["from_column"] and m["to_column"]}
        assert len({r[1] for r in expected["board"]}) >= 2  # departments
        assert {r[3] for r in expected["board"]} == {"email", "phone", None}
        assert {r[2] for r in expected["deals"]} == {"open", "won", "lost"}
        last_move = await conn.fetchval("SELECT max(seq) FROM handshake.moves")

        for table in STATE:
            await conn.execute(f"DELETE FROM handshake.{table}")
        source = EventLogSource()
        report = await rebuild_from_events(conn, spec("handshake"), source, dry_run=False)
        assert await state(conn) == expected
        assert report.unit == "records' last events" and source.undecodable == 2
        # The board changed: its stream was cleared, readers reload it past the old moves.
        assert await conn.fetchval("SELECT count(*) FROM handshake.moves") == 0
        assert await conn.fetchval(
            "SELECT pruned_through FROM handshake.stream_state") > last_move
        again = await rebuild_from_events(conn, spec("handshake"), EventLogSource(),
                                          dry_run=True)
        assert again.changes == 0, again.as_dict()
    finally:
        await conn.close()
