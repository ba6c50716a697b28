"""The handshake board rebuilt set-based, from each record's last state (issue 19).

Why: every state table of the board is a function of the records' *last* states
alone (migration 0004 says so of ``handshake.board``; the live projection keeps
each key's standing and each ticket's column up to date with every change), so a
rebuild need not run the live projection over every logged event, which made the
board replay's bottleneck. Here:

1. **Last states** (``projections.last_states``): each record's newest event of the
   modules the board reads, reduced by the live projection's own rules
   (``projections.handshake.collect``: status types and custom statuses, e-mail
   and phone keys, converted leads, deal stages, the recycle bin and deletes), so
   no rule is written a second time — in particular there is no SQL phone key to
   keep in step with Python's.
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

from projections.db import Conn
from projections.handshake import INSERT_KEYS, PLACEMENT, STANDINGS, Changes, collect
from projections.last_states import Rebuilt, last_events

_BOARD_MODULES = ("(source = 'desk' AND module IN ('tickets', 'departments'))"
                  " OR (source <> 'desk' AND module IN ('contacts', 'leads', 'deals'))")
"""What ``collect`` reads; every other event leaves the board as it is."""

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


async def last_states(conn: Conn) -> tuple[Changes, Rebuilt]:
    """Each board record's last state, reduced as the live projection reduces a batch."""
    events, counts = await last_events(conn, _BOARD_MODULES)
    return collect(item.event for item in events), counts


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
