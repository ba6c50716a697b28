"""The CRM view projection (PERM-01 … PERM-04): what desk agents may be shown of the
CRM, kept from the CRM's events alone.

Why it exists: a desk agent looking at a desk contact or account sees the linked CRM
record's information, its potentials (deals), notes and activities (calls, events,
tasks), in full or restricted as the agent's profile says
(``daemon/service/crm_view.py``). Reading them from the CRM store at every request
would not work for a hosted CRM and would tie the view to the store's tables; all of it
is a function of the CRM's change events, so a replay of the event log rebuilds it
exactly (OWN-03).

What it keeps (``crm_view.records``, migration 0025): one row per live CRM contact,
account, deal, note, call, event and task, with its values as its last event gave them
and what it hangs off: a contact's account, a deal's contact and account, a note's or
activity's parent (``parent_module`` contacts or accounts, ``parent_id``). A note or
activity attached to a deal (``parent_module`` deals) keeps neither: which contact and
account it is shown on is the deal's, read at read time from its values
(``daemon/service/crm_view.py``), so a row never depends on another record's event. A
record deleted or in the recycle bin has no row; a restore brings it back.

Which CRM record a desk contact or account is, is not kept here: the mapping table
(``sync.links``) is not a projection of the log, so it is joined at read time, as the
customer statistics do (``projections/ticket_stats.py`` says why).

Batches (several replicas, OWN-05): a record's events share a partition, so two
batches never write the same row; nothing else is shared.

How (issue 19): every row is a function of its record's last event alone, so the rows
are decided in SQL, from the logged events' JSON, by one statement (``_WRITE``) that
the live projection runs over its batch's events and the rebuild over each record's
last event. No event is decoded in Python for the view, and its rules exist once: the
statement and the two functions it calls (``crm_view.ref``, ``crm_view.truthy``,
migration 0031), which read a value the way ``projections.handshake.record_ref`` and
``is_live`` read a decoded one (``tests/integration/test_crm_view_sql.py`` holds them
to it). One corner differs from decoding: a newest event that no longer decodes (logged
under older rules) is still read here, where a decoding rebuild would have fallen back
to the record's previous event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.last_states import Rebuilt, newest_of

VIEWED_MODULES = ("contacts", "accounts", "deals", "notes", "calls", "events", "tasks")
"""The CRM modules the view keeps."""
ACTIVITIES = ("notes", "calls", "events", "tasks")
"""Modules whose records hang off a contact, an account or a deal (``parent_module``)."""
BOOKKEEPING = ("deleted", "hard_deleted")
"""Values that say how a record is stored, not what it is: never kept."""

_ACTIVITY = f"module IN {ACTIVITIES!r}"

# {picked}: the events to decide from, at most one a record (its last), as (module,
# record_id, op, v: the event's values as json). The values are read once for the fields
# the rules ask (json_to_record; a function given a column is inlined, one given an
# expression was called row by row, re-reading the values each time). A record neither
# deleted nor in the recycle bin gets its row, with what it hangs off; any other loses
# it. In (module, record_id) order, as two replicas' batches never share a row anyway.
_WRITE = f"""
WITH picked AS ({{picked}}),
decided AS (
    SELECT p.module, p.record_id, p.v, f.contact_id, f.account_id, f.parent_id,
           f.parent_module, p.op <> 'delete' AND NOT crm_view.truthy(f.deleted) AS live
    FROM picked p, json_to_record(p.v) AS f(deleted json, contact_id json,
                                            account_id json, parent_id json,
                                            parent_module text)
),
gone AS (
    DELETE FROM {{table}} r USING decided d
    WHERE NOT d.live AND r.module = d.module AND r.record_id = d.record_id
)
INSERT INTO {{table}} (module, record_id, "values", contact_id, account_id)
SELECT module, record_id, v::jsonb - ARRAY{list(BOOKKEEPING)!r},
    CASE WHEN module = 'deals' THEN crm_view.ref(contact_id)
         WHEN {_ACTIVITY} AND parent_module = 'contacts' THEN crm_view.ref(parent_id) END,
    CASE WHEN module IN ('contacts', 'deals') THEN crm_view.ref(account_id)
         WHEN {_ACTIVITY} AND parent_module = 'accounts' THEN crm_view.ref(parent_id) END
FROM decided WHERE live
ORDER BY module, record_id
ON CONFLICT (module, record_id) DO UPDATE SET "values" = EXCLUDED."values",
    contact_id = EXCLUDED.contact_id, account_id = EXCLUDED.account_id
"""
TABLE = "crm_view.records"
_BATCH = _WRITE.format(table=TABLE, picked=
    "SELECT DISTINCT ON (module, record_id) module, record_id, op, payload -> 'values' AS v"
    " FROM syncd.event_log WHERE seq = ANY($1::bigint[])"
    " ORDER BY module, record_id, seq DESC")
"""A batch's CRM events (their ``seq``), each record's last."""
_EVERY_RECORD = _WRITE.format(table="{table}", picked=
    "SELECT e.module, e.record_id, e.op, e.payload -> 'values' AS v FROM "
    + newest_of(f"source = 'crm' AND module IN {VIEWED_MODULES!r}"))
"""Every CRM record's last event in the log, into ``{table}``."""


class CrmViewProjection:
    """Keeps ``crm_view.records``; see the module docstring."""

    name = "crm_view"
    reads_events_only = True  # runs while the sync plans (projections.batch.PlansBeside)

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        """Write the batch's CRM records. Nothing here can fail an event."""
        seqs = [item.seq for item in events
                if item.event.source == "crm" and item.event.module in VIEWED_MODULES]
        if seqs:
            await conn.execute(_BATCH, seqs)
        return NOTHING_TO_REPORT


async def fill(conn: Conn, into: Mapping[str, str]) -> Rebuilt:
    """Fill ``into[TABLE]`` (an empty table like ``crm_view.records``: the replay's
    scratch copy) from each CRM record's last event: what feeding every logged event to
    a fresh projection leaves in the view (the caller, the replay, holds the
    projector's apply lock and writes what differs into the view)."""
    status = await conn.execute(_EVERY_RECORD.format(table=into[TABLE]))
    return Rebuilt(int(status.split()[-1]), 0, unit="CRM records kept, each from its last event")
