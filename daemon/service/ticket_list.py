"""A CRM contact's, account's, deal's or lead's tickets, as a related list (TICKET-01,
TICKET-07).

Why it exists: a CRM user on a contact or an account sees the customer's desk tickets,
newest first, and narrows them to the overdue, closed, escalated or high-priority ones.
The rows are the statistics projection's (``projections/ticket_stats.py``), joined to
the CRM record through the links as they are now, by the same statement fragment the
statistics use (``ticket_stats.OF_RECORD``): the list and the statistics always count
the same tickets. A deal's are the tickets linked to it (TICKET-05,
``ticket_actions.deal_links``); a lead's, those whose requester e-mail has the lead's
e-mail key (the desk knows no lead: the e-mail is what they share). "Overdue" is
read against the projection's clock (the newest event applied), never the wall clock.
Paged by limit and offset with the total, as the failure log is.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal

import asyncpg

from daemon.service import NotFound
from daemon.service.ticket_stats import NEWEST_FIRST, OF_RECORD, overdue

Filter = Literal["overdue", "closed", "escalated", "high_priority"]

HIGH_PRIORITIES = ("high", "urgent")
"""Priorities the "high priority" filter keeps, compared trimmed and case-insensitively:
Zoho Desk's highest standard priority (High) and the Urgent many desks add."""

FILTERS: dict[Filter, str] = {
    "overdue": "t.status_type IS DISTINCT FROM 'Closed'"
               " AND t.due_at < (SELECT at FROM ticket_stats.clock)",
    "closed": "t.status_type = 'Closed'",
    "escalated": "t.status_type = 'Escalated'",
    "high_priority": "lower(btrim(t.priority)) IN ("
                     + ", ".join(f"'{p}'" for p in HIGH_PRIORITIES) + ")",
}
"""Each filter as SQL over the projection's row ``t``; the status types are the desk's
resolved ones (a custom status counts as the standard status it maps to)."""


ListModule = Literal["contacts", "accounts", "deals", "leads"]

OF_LIST: dict[ListModule, str] = {
    "contacts": OF_RECORD["contacts"], "accounts": OF_RECORD["accounts"],
    "deals": OF_RECORD["deals"],
    # The lead's e-mail key as the statistics projection keeps it (a live lead with an
    # e-mail), against the requester's, keyed in SQL by the same rules (migration 0027).
    "leads": """
FROM ticket_stats.tickets t
JOIN ticket_stats.crm_leads l ON l.email_key = syncd.email_key(t.requester)
WHERE t.live AND l.lead_id = $1""",
}
"""The FROM and WHERE of a CRM record's live tickets, per module (the record's id is
$1): a contact's, an account's and a deal's shared with the statistics (``OF_RECORD``)."""


def listed_module(module: str, chosen: Sequence[str]) -> ListModule:
    """``module`` if its records show the list; else NotFound with the reason: not among
    the integration's related-list modules (``chosen``), or its list is not built."""
    if module not in chosen:
        raise NotFound("not_configured",
                       f"{module} records do not list tickets: the integration's related-list"
                       f" modules are {list(chosen)} (syncd integration related-lists)")
    for listed in OF_LIST:
        if module == listed:
            return listed
    raise NotFound("not_built", f"{module}'s related list is not built")


async def related_tickets(pool: asyncpg.Pool, module: ListModule, record_id: str, *,
                          only: Filter | None, limit: int, offset: int,
                          departments: Collection[str] | None = None) -> dict[str, Any]:
    """One page of a CRM record's live tickets, newest first (creation time, then id),
    with the total that matches; an id nobody links has none. ``departments``: only
    the tickets of these departments (a CRM user's, when the integration shows users
    their own departments' tickets only: TICKET-08); None: every ticket."""
    joined = OF_LIST[module] + (f" AND ({FILTERS[only]})" if only is not None else "")
    arguments: list[Any] = [record_id]
    if departments is not None:
        joined += " AND t.department_id = ANY($2::text[])"
        arguments.append(sorted(departments))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        at = await conn.fetchval("SELECT at FROM ticket_stats.clock")
        total = await conn.fetchval(f"SELECT count(*) {joined}", *arguments)
        rows = await conn.fetch(
            "SELECT t.ticket_id, t.subject, t.status, t.status_type, t.priority,"
            " t.department_id, t.requester, t.created_at, t.due_at, t.rating"
            f" {joined} {NEWEST_FIRST} LIMIT {int(limit)} OFFSET {int(offset)}", *arguments)
    return {
        "module": module, "id": record_id, "as_of": at, "filter": only,
        "departments": None if departments is None else sorted(departments),
        "total": total, "limit": limit, "offset": offset,
        "tickets": [{
            "ticket_id": row["ticket_id"], "subject": row["subject"],
            "status": row["status"], "status_type": row["status_type"],
            "priority": row["priority"], "department_id": row["department_id"],
            "requester": row["requester"], "created_at": row["created_at"],
            "due_date": row["due_at"], "overdue": overdue(row, at), "rating": row["rating"],
        } for row in rows],
    }
