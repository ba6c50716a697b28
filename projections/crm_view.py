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

Rebuild: every row is a function of its record's last event alone, so a replay from the
event log feeds the projection each record's last event (``rebuild``, through
``projections.last_states``) instead of every event, with the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.events import ChangeEvent
from projections.handshake import is_live, record_ref
from projections.last_states import Rebuilt, last_events

VIEWED_MODULES = ("contacts", "accounts", "deals", "notes", "calls", "events", "tasks")
"""The CRM modules the view keeps."""
_VIEWED = f"source = 'crm' AND module IN {VIEWED_MODULES!r}"
"""What ``collect`` reads, as a condition on the event log."""
ACTIVITIES = ("notes", "calls", "events", "tasks")
"""Modules whose records hang off a contact, an account or a deal (``parent_module``)."""
BOOKKEEPING = frozenset({"deleted", "hard_deleted"})
"""Values that say how a record is stored, not what it is: never kept."""


@dataclass(frozen=True, slots=True)
class RecordRow:
    module: str
    record_id: str
    values: dict[str, Any] | None
    """None: the record is not live (its row goes)."""
    contact_id: str | None
    account_id: str | None


def record_row(event: ChangeEvent) -> RecordRow:
    if not is_live(event):
        return RecordRow(event.module, event.record_id, None, None, None)
    values = {name: value for name, value in event.values.items() if name not in BOOKKEEPING}
    contact_id = account_id = None
    if event.module == "contacts":
        account_id = record_ref(values.get("account_id"))
    elif event.module == "deals":
        contact_id = record_ref(values.get("contact_id"))
        account_id = record_ref(values.get("account_id"))
    elif event.module in ACTIVITIES:
        parent = record_ref(values.get("parent_id"))
        if values.get("parent_module") == "contacts":
            contact_id = parent
        elif values.get("parent_module") == "accounts":
            account_id = parent
    return RecordRow(event.module, event.record_id, values, contact_id, account_id)


def collect(events: Iterable[ChangeEvent]) -> dict[tuple[str, str], RecordRow]:
    """Each CRM record's last state in the batch, in log order."""
    rows: dict[tuple[str, str], RecordRow] = {}
    for event in events:
        if event.source == "crm" and event.module in VIEWED_MODULES:
            rows[(event.module, event.record_id)] = record_row(event)
    return rows


class CrmViewProjection:
    """Keeps ``crm_view.records``; see the module docstring."""

    name = "crm_view"

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        """Write the batch's CRM records. Nothing here can fail an event."""
        rows = [row for _, row in sorted(collect(item.event for item in events).items())]
        if not rows:
            return NOTHING_TO_REPORT
        gone = [row for row in rows if row.values is None]
        if gone:
            await conn.execute(
                "DELETE FROM crm_view.records r USING unnest($1::text[], $2::text[])"
                " AS g(module, record_id)"
                " WHERE r.module = g.module AND r.record_id = g.record_id",
                [r.module for r in gone], [r.record_id for r in gone])
        kept = [row for row in rows if row.values is not None]
        if kept:
            await conn.execute(
                'INSERT INTO crm_view.records (module, record_id, "values", contact_id,'
                " account_id)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[],"
                "  $5::text[])"
                ' ON CONFLICT (module, record_id) DO UPDATE SET "values" = EXCLUDED."values",'
                "  contact_id = EXCLUDED.contact_id, account_id = EXCLUDED.account_id",
                [r.module for r in kept], [r.record_id for r in kept],
                [json.dumps(r.values) for r in kept], [r.contact_id for r in kept],
                [r.account_id for r in kept])
        return NOTHING_TO_REPORT


async def rebuild(conn: Conn) -> Rebuilt:
    """Fill the emptied ``crm_view.records`` from each CRM record's last event: what
    feeding every logged event to a fresh projection gives (the caller, the replay,
    has emptied the table and holds the projector's apply lock)."""
    events, rebuilt = await last_events(conn, _VIEWED)
    await CrmViewProjection().apply(conn, events)
    return rebuilt
