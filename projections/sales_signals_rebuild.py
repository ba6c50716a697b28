"""The sales signals rebuilt in one walk of the log, decoding only what they read
(issue 19).

Why: the signals are decided in log order by design (each origin as of its event, the
overdue clock moved by every event, sequence numbers without gaps), so unlike the
board they are not a function of each record's last state. But of most events they
read nothing except the time: an event of a module they do not follow (desk contacts,
accounts, the CRM's notes…) only moves the clock, and may fire overdue signals. Feeding
every event to the live projection decoded every payload and, chunk by chunk, read the
state its chunk could touch and wrote it back. Here:

1. **One walk, in memory.** The log is read in ``seq`` order, the payload only of the
   modules ``sales_signals.take`` reads (``MODULES_READ``); every other event is its
   capture time and id, a tick of the clock (``State.move_clock``, then
   ``fire_overdue``, the live projection's own steps), skipped outright when it does
   not move the clock (then nothing can fire). One ``State`` holds every ticket,
   person and deal; no rule is written a second time.
2. **A person's keys when a signal reads them.** An event of a CRM contact or lead only
   sets that person's e-mail and phone keys, which only the origin of a signal reads,
   and a person's last event decides them. So such an event is kept as its person's
   newest, and the people kept are taken (``take``, the live rule) just before anything
   that may emit a signal: an event of another module the signals read, or the clock
   passing a due date. Their keys are worked out once for each person between two such
   moments, not once an event. (A log of CRM people and no tickets, the benchmark's,
   takes each person once; a desk busy with tickets, about once an event.) While no due
   date is watched, nothing can fire, so such an event is kept as logged and decoded
   only if it is the one taken, its time moving the clock then; one that no longer
   decodes gives way to the person's event before it (``_person``), as the per-event
   path, which skips it, leaves the person.
3. **Written once.** The state the walk leaves (``write_state``), its signals numbered
   from 1 (``write_signals``) and the clock row, into the tables the caller emptied.

The result is the per-event rebuild's (``tests/integration/test_sales_signals_rebuild.py``
compares them on generated logs), with one difference in a corner: a logged event that
no longer decodes (logged under older rules) is skipped by the per-event path
entirely, while here, when the signals do not read its module, its logged capture time
still moves the clock, as it did when the live projection applied it. (And a person's
event replaced before it was taken still moves the clock when it no longer decodes.)

It runs inside the caller's transaction, which holds the projector's apply lock
(``projections.replay.rebuild_from_events``), so the log does not grow meanwhile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from projections.db import Conn
from projections.events import ChangeEvent, InvalidEvent, decode_event
from projections.last_states import Rebuilt
from projections.sales_signals import (
    MODULES_READ,
    PEOPLE_MODULES,
    SignalRow,
    State,
    fire_overdue,
    take,
    write_signals,
    write_state,
)


def _any_of(modules: tuple[tuple[str, str], ...]) -> str:
    """A condition on an event-log row: its (source, module) is one of ``modules``."""
    return "(" + " OR ".join(f"(source = '{source}' AND module = '{module}')"
                             for source, module in modules) + ")"


_SIGNAL_MODULES = _any_of(MODULES_READ)
_PEOPLE = _any_of(PEOPLE_MODULES)
"""The events ``about_person`` is true of, in SQL."""

_WALK = ("SELECT seq, captured_at, event_id, CASE WHEN " + _SIGNAL_MODULES
         + " THEN payload::text END AS payload, CASE WHEN " + _PEOPLE
         + " THEN module END AS person_module, CASE WHEN " + _PEOPLE
         + " THEN record_id END AS person_id FROM syncd.event_log"
         " WHERE seq > $1 ORDER BY seq LIMIT $2")

_OLDER = ("SELECT payload::text AS payload FROM syncd.event_log WHERE " + _PEOPLE
          + " AND module = $1 AND record_id = $2 AND seq > $3 AND seq < $4 ORDER BY seq DESC")
"""A person's earlier events since the people were last taken, newest first."""


async def rebuild(conn: Conn, *, chunk: int = 20_000) -> Rebuilt:
    """The signals' tables from one walk of the event log (emptied by the caller)."""
    state = State()
    signals: list[SignalRow] = []
    people: dict[tuple[str, str], ChangeEvent | _Kept] = {}
    """Each person's newest event not taken yet: decoded, or while no due date is
    watched as logged, decoded only if it is the one taken (see the module docstring,
    2)."""
    taken_through = 0
    """The ``seq`` the people were last taken at: each kept event is after it."""
    bad = 0

    async def take_people(at: int) -> None:
        nonlocal bad, taken_through
        for (module, record_id), kept in people.items():
            if isinstance(kept, _Kept):
                event, failed = await _person(conn, module, record_id, kept.seq,
                                              kept.payload, taken_through)
                bad += failed
                if event is None:
                    continue
                # Its time, and the times of the person's events it replaced, move the
                # clock now: none could fire while they were kept.
                state.move_clock(event.captured_at)
                if kept.replaced_at is not None:
                    state.move_clock(kept.replaced_at)
            else:
                event = kept
            take(state, event, signals)
        people.clear()
        taken_through = at

    after, walked = 0, 0
    while rows := await conn.fetch(_WALK, after, chunk):
        for row in rows:
            payload = row["payload"]
            if payload is None:  # a tick: only the event's time counts
                if state.move_clock(row["captured_at"]) and state.may_fire():
                    await take_people(row["seq"])
                    fire_overdue(state, row["event_id"], signals)
                continue
            person = row["person_module"], row["person_id"]
            if person[0] is not None and not state.watching():
                # Nothing can fire until a ticket is taken, which takes the people first:
                # kept undecoded, a later event of the person may replace it.
                people[person] = _Kept(row["seq"], payload, row["captured_at"],
                                       _latest(people.get(person)))
                continue
            try:
                event = decode_event(payload.encode())
            except InvalidEvent:
                bad += 1  # skipped, as the per-event path skips it
                continue
            state.move_clock(event.captured_at)
            if person[0] is not None:
                people[person] = event
            else:
                await take_people(row["seq"])
                take(state, event, signals)
            if state.may_fire():
                await take_people(row["seq"])
                fire_overdue(state, event.event_id, signals)
        after, walked = rows[-1]["seq"], walked + len(rows)
    await take_people(after)
    if walked:
        await write_state(conn, state)
        last_seq = await write_signals(conn, signals, after=0)
        await conn.execute("INSERT INTO sales_signals.clock (one, at, last_seq)"
                           " VALUES (true, $1, $2)", state.clock, last_seq)
    return Rebuilt(walked, bad, unit="events (the signals' modules decoded)")


@dataclass(frozen=True, slots=True)
class _Kept:
    """A person's newest event kept as logged, with the latest capture time of the
    person's events it replaced (which the per-event path moved the clock to: one
    record's capture times need not rise with the log, which orders their commits)."""

    seq: int
    payload: str
    at: dt.datetime
    replaced_at: dt.datetime | None


def _latest(kept: ChangeEvent | _Kept | None) -> dt.datetime | None:
    """The latest capture time of what ``kept`` stands for, as it is replaced (an event
    kept decoded moved the clock already: counting it again changes nothing)."""
    if kept is None:
        return None
    if isinstance(kept, ChangeEvent):
        return kept.captured_at
    return kept.at if kept.replaced_at is None else max(kept.at, kept.replaced_at)


async def _person(conn: Conn, module: str, record_id: str, seq: int, payload: str,
                  since: int) -> tuple[ChangeEvent | None, int]:
    """A person's newest event after ``since`` that decodes (``seq`` and ``payload`` its
    newest), and how many newer did not: the per-event path, which skips an event that
    does not decode, leaves the person as that one made it (None: none decodes, and the
    person stays as it was)."""
    try:
        return decode_event(payload.encode()), 0
    except InvalidEvent:
        pass
    failed = 1
    for row in await conn.fetch(_OLDER, module, record_id, since, seq):
        try:
            return decode_event(row["payload"].encode()), failed
        except InvalidEvent:
            failed += 1
    return None, failed
