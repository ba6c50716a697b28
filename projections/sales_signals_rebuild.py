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
   takes each person once; a desk busy with tickets, about once an event.)
3. **Written once.** The state the walk leaves (``write_state``), its signals numbered
   from 1 (``write_signals``) and the clock row, into the tables the caller emptied.

The result is the per-event rebuild's (``tests/integration/test_sales_signals_rebuild.py``
compares them on generated logs), with one difference in a corner: a logged event that
no longer decodes (logged under older rules) is skipped by the per-event path
entirely, while here, when the signals do not read its module, its logged capture time
still moves the clock, as it did when the live projection applied it.

It runs inside the caller's transaction, which holds the projector's apply lock
(``projections.replay.rebuild_from_events``), so the log does not grow meanwhile.
"""

from __future__ import annotations

from projections.db import Conn
from projections.events import ChangeEvent, InvalidEvent, decode_event
from projections.last_states import Rebuilt
from projections.sales_signals import (
    MODULES_READ,
    SignalRow,
    State,
    about_person,
    fire_overdue,
    take,
    write_signals,
    write_state,
)

_SIGNAL_MODULES = " OR ".join(f"(source = '{source}' AND module = '{module}')"
                              for source, module in MODULES_READ)

_WALK = ("SELECT seq, captured_at, event_id, CASE WHEN " + _SIGNAL_MODULES
         + " THEN payload::text END AS payload FROM syncd.event_log"
         " WHERE seq > $1 ORDER BY seq LIMIT $2")


async def rebuild(conn: Conn, *, chunk: int = 20_000) -> Rebuilt:
    """The signals' tables from one walk of the event log (emptied by the caller)."""
    state = State()
    signals: list[SignalRow] = []
    people: dict[tuple[str, str], ChangeEvent] = {}
    """Each person's newest event not taken yet (see the module docstring, 2)."""

    def take_people() -> None:
        for event in people.values():
            take(state, event, signals)
        people.clear()

    after, walked, bad = 0, 0, 0
    while rows := await conn.fetch(_WALK, after, chunk):
        for row in rows:
            payload = row["payload"]
            if payload is None:  # a tick: only the event's time counts
                if state.move_clock(row["captured_at"]) and state.may_fire():
                    take_people()
                    fire_overdue(state, row["event_id"], signals)
                continue
            try:
                event = decode_event(payload.encode())
            except InvalidEvent:
                bad += 1  # skipped, as the per-event path skips it
                continue
            state.move_clock(event.captured_at)
            if about_person(event):
                people[(event.module, event.record_id)] = event
            else:
                take_people()
                take(state, event, signals)
            if state.may_fire():
                take_people()
                fire_overdue(state, event.event_id, signals)
        after, walked = rows[-1]["seq"], walked + len(rows)
    take_people()
    if walked:
        await write_state(conn, state)
        last_seq = await write_signals(conn, signals, after=0)
        await conn.execute("INSERT INTO sales_signals.clock (one, at, last_seq)"
                           " VALUES (true, $1, $2)", state.clock, last_seq)
    return Rebuilt(walked, bad, unit="events (the signals' modules decoded)")
