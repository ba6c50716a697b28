"""The statistics projection rebuilt set-based (issue 19), row for row what feeding
every logged event to a fresh ``StatisticsProjection`` gives.

Its state is a function of each record's last event (``projections.last_states``; the
CRM's contacts and leads decided in SQL from it, ``_CRM_PEOPLE``), with two facts a
query finds directly:

* a ticket's **first close**: the source's modification time of the first event (in
  log order) that shows it Closed and live. The log is narrowed in SQL to the desk
  ticket events whose status or status type mentions *closed* (a superset), and those
  are decoded and judged by the live projection's own rule (``ticket_row``), so the
  rule is not written twice;
* the **clock**: the newest capture time of any event the per-event path would apply
  (the newest that decodes).

The caller (``projections.replay.rebuild_from_events``) has emptied the tables and
holds the projector's apply lock, so the log does not grow meanwhile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from projections.db import Conn
from projections.last_states import Rebuilt, decoded, last_events, newest_of
from projections.ticket_stats import (
    Changes,
    TicketRow,
    collect,
    ticket_row,
    write_changes,
)

_MODULES = "source = 'desk' AND module IN ('tickets', 'ticket_threads')"
"""What ``collect`` reads of the desk (the CRM's contacts and leads are ``_CRM_PEOPLE``'s)."""

# The CRM's contacts and leads, decided in SQL from each one's last logged event, as
# ``collect`` decides them from the decoded event: a record neither deleted nor in the
# recycle bin (``handshake.is_live``) is kept, a contact with its account
# (``handshake.record_ref``), a lead with its e-mail key (``keys.email_key``: a string's,
# else none, and a lead without one lists no ticket). The two rules are the CRM view's
# functions (migration 0031, held to the Python rules value by value in
# tests/integration/test_crm_view_sql.py), the key the match keys' own
# (``syncd.email_key``, tests/integration/test_match_keys_sql.py). Nothing is decoded in
# Python: these are most of the log's events the statistics read.
_CRM_PEOPLE = """
WITH last AS (
    SELECT e.module, e.record_id, f.account_id, f.email,
           e.op <> 'delete' AND NOT crm_view.truthy(f.deleted) AS live
    FROM """ + newest_of("source = 'crm' AND module IN ('contacts', 'leads')") + """,
    json_to_record(e.payload -> 'values') AS f(deleted json, account_id json, email json)
),
contacts AS (
    INSERT INTO ticket_stats.crm_contacts (contact_id, account_id)
    SELECT record_id, crm_view.ref(account_id) FROM last WHERE live AND module = 'contacts'
),
leads AS (
    INSERT INTO ticket_stats.crm_leads (lead_id, email_key)
    SELECT record_id, key FROM (
        SELECT record_id, CASE WHEN json_typeof(email) = 'string'
                               THEN syncd.email_key(email #>> '{}') END AS key
        FROM last WHERE live AND module = 'leads') AS l
    WHERE key IS NOT NULL
)
SELECT count(*) FROM last
"""
"""Fills both tables; returns how many records' last events it read."""

_MAY_CLOSE = (
    "SELECT seq, payload::text AS payload FROM syncd.event_log"
    " WHERE source = 'desk' AND module = 'tickets' AND op <> 'delete'"
    " AND (lower(payload->'values'->>'status_type') LIKE '%closed%'"
    "      OR lower(payload->'values'->>'status') LIKE '%closed%')"
    " ORDER BY seq")
"""Every event that may show a ticket Closed (a superset: ``ticket_row`` decides)."""

_NEWEST = ("SELECT seq, payload::text AS payload FROM syncd.event_log"
           " ORDER BY captured_at DESC, seq DESC LIMIT $1 OFFSET $2")


async def first_closes(conn: Conn) -> dict[str, dt.datetime]:
    """Each ticket's first close, as the per-event path records it."""
    closes: dict[str, dt.datetime] = {}
    for item in decoded(await conn.fetch(_MAY_CLOSE))[0]:
        ticket = item.event.record_id
        if ticket not in closes:
            closed = ticket_row(item.event, None).closed_at
            if closed is not None:
                closes[ticket] = closed
    return closes


async def clock(conn: Conn, *, page: int = 100) -> dt.datetime | None:
    """The newest capture time among the events that decode (None: none does)."""
    offset = 0
    while True:
        rows = await conn.fetch(_NEWEST, page, offset)
        events = decoded(rows)[0]
        if events:
            return max(item.event.captured_at for item in events)
        if len(rows) < page:
            return None
        offset += page


async def rebuild(conn: Conn) -> Rebuilt:
    """The statistics' state tables from the log's last states (emptied by the caller)."""
    events, counts = await last_events(conn, _MODULES)
    changes: Changes = collect(item.event for item in events)
    closes = await first_closes(conn)
    changes.tickets = {tid: _with_close(row, closes.get(tid))
                       for tid, row in changes.tickets.items()}
    changes.newest = await clock(conn)
    if changes.newest is None:
        return counts  # no event decodes: the per-event path applies none
    await write_changes(conn, changes)
    people = await conn.fetchval(_CRM_PEOPLE)
    return Rebuilt(counts.records + int(people), counts.undecodable)


def _with_close(row: TicketRow, closed_at: dt.datetime | None) -> TicketRow:
    return replace(row, closed_at=closed_at)
