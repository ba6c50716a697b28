"""The handshake board rebuilt set-based, from each record's last state (issue 19).

Why: every state table of the board is a function of the records' *last* states
alone (migration 0004 says so of ``handshake.board``; the live projection keeps
each key's standing and each ticket's column up to date with every change), so a
rebuild need not run the live projection over every logged event, which made the
board replay's bottleneck. Here:

1. **Last states.** One query over ``syncd.event_log`` picks each record's newest
   event (the greatest ``seq``) of the modules the board reads. Only those
   are decoded, and reduced by the live projection's own rules
   (``projections.handshake.collect``: status types and custom statuses, e-mail
   and phone keys, converted leads, deal stages, the recycle bin and deletes), so
   no rule is written a second time — in particular there is no SQL phone key to
   keep in step with Python's. A newest event that no longer decodes (logged under
   older rules) is skipped by the per-event path too, which then keeps the record's
   state from before it: such records' events are read again, in log order, and
   reduced the same way.
2. **Set-based writes.** The four state tables, emptied by the caller, are filled
   with one ``INSERT … SELECT`` each, in dependency order: departments and deals;
   the people's match keys, their standing joined from the deals
   (``handshake.INSERT_KEYS``); then the board, each ticket's column and
   ``matched_by`` joined from the keys (``STANDINGS``, ``PLACEMENT``: the statement
   the live projection places tickets with).

Moves (``handshake.moves``) are not produced: the stream is a change feed of live
batches, and a rebuild that changes the board clears it and moves
``pruned_through`` past it (``projections.handshake.reset_stream``), so readers
reload the board once — as the per-event rebuild did, whose replayed moves were
discarded by that same reset. A move's time comes from the event that caused it;
a rebuild causes none.

It runs inside the caller's transaction, which holds the projector's apply lock
(``projections.replay.rebuild_from_events``), so the log does not grow meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from projections.batch import LoggedEvent
from projections.db import Conn
from projections.events import InvalidEvent, decode_event
from projections.handshake import INSERT_KEYS, PLACEMENT, STANDINGS, Changes, collect

_BOARD_MODULES = ("(source = 'desk' AND module IN ('tickets', 'departments'))"
                  " OR (source <> 'desk' AND module IN ('contacts', 'leads', 'deals'))")
"""What ``collect`` reads; every other event leaves the board as it is."""

_LAST_EVENTS = (
    "SELECT e.seq, e.source, e.module, e.record_id, e.payload::text AS payload"
    " FROM (SELECT max(seq) AS seq FROM syncd.event_log WHERE " + _BOARD_MODULES
    + " GROUP BY source, module, record_id) AS last JOIN syncd.event_log e USING (seq)")
"""Each record's newest event: grouped by hash on the narrow columns, the payloads read
by primary key afterwards (sorting the whole log with its payloads spills to disk)."""

_EVENTS_OF = (
    "SELECT e.seq, e.payload::text AS payload FROM syncd.event_log e"
    " JOIN unnest($1::text[], $2::text[], $3::text[]) AS r(source, module, record_id)"
    "  USING (source, module, record_id) ORDER BY e.seq")

_INSERT_BOARD = """
INSERT INTO handshake.board (ticket_id, department_id, board_column, matched_by, email_key,
                             phone_key, created_at, summary)
SELECT b.ticket_id, b.department_id, new_column, matched_by, b.email_key, b.phone_key,
       b.created_at, b.summary
FROM (SELECT b.*, """ + PLACEMENT + """
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                  $6::jsonb[]) AS b(ticket_id, department_id, email_key, phone_key,
                                    created_at, summary)
      """ + STANDINGS + """) AS b
"""


@dataclass(frozen=True)
class Rebuilt:
    records: int
    """Records whose last state was read."""
    undecodable: int
    """Newest events that did not decode (their records' earlier events were used)."""


def _decoded(rows: Sequence[Any]) -> tuple[list[LoggedEvent], int]:
    """The rows' events that decode, and how many did not."""
    events: list[LoggedEvent] = []
    bad = 0
    for row in rows:
        try:
            events.append(LoggedEvent(row["seq"], decode_event(row["payload"].encode())))
        except InvalidEvent:
            bad += 1
    return events, bad


async def last_states(conn: Conn) -> tuple[Changes, Rebuilt]:
    """Each board record's last state, reduced as the live projection reduces a batch."""
    rows = await conn.fetch(_LAST_EVENTS)
    events, bad = _decoded(rows)
    if bad:
        decoded = {item.seq for item in events}
        failed = [row for row in rows if row["seq"] not in decoded]
        # Every event of those records, in log order: collect keeps the last that decodes.
        older = await conn.fetch(_EVENTS_OF, [r["source"] for r in failed],
                                 [r["module"] for r in failed], [r["record_id"] for r in failed])
        events += _decoded(older)[0]
        events.sort(key=lambda item: item.seq)
    return collect(item.event for item in events), Rebuilt(len(rows), bad)


async def write(conn: Conn, changes: Changes) -> None:
    """Fill the emptied state tables from the last states, set-based."""
    departments = sorted((d for d in changes.departments.values() if d.live),
                         key=lambda d: d.department_id)
    await conn.execute(
        "INSERT INTO handshake.departments (department_id, name)"
        " SELECT * FROM unnest($1::text[], $2::text[])",
        [d.department_id for d in departments], [d.name for d in departments])
    deals = sorted((d for d in changes.deals.values() if d.live), key=lambda d: d.deal_id)
    await conn.execute(
        "INSERT INTO handshake.deals (deal_id, contact_id, stage)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
        [d.deal_id for d in deals], [d.contact_id for d in deals], [d.stage for d in deals])
    keys = [(key_kind, p.kind, p.record_id, key)
            for p in sorted(changes.people.values(), key=lambda p: (p.kind, p.record_id))
            for key_kind, found in (("email", p.email_keys), ("phone", p.phone_keys))
            for key in found]
    # After the deals: a contact's standing is read from them.
    await conn.execute(INSERT_KEYS, [k[0] for k in keys], [k[1] for k in keys],
                       [k[2] for k in keys], [k[3] for k in keys])
    tickets = sorted((t for t in changes.tickets.values() if t.on_board),
                     key=lambda t: t.ticket_id)
    # After the keys: a ticket's column is read from them.
    await conn.execute(
        _INSERT_BOARD, [t.ticket_id for t in tickets], [t.department_id for t in tickets],
        [t.email_key for t in tickets], [t.phone_key for t in tickets],
        [t.created_at for t in tickets], [json.dumps(t.summary) for t in tickets])


async def rebuild(conn: Conn) -> Rebuilt:
    """The board's state tables from the event log's last states (emptied by the caller)."""
    changes, counts = await last_states(conn)
    await write(conn, changes)
    return counts
