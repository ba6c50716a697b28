"""A CRM contact's, account's or deal's customer statistics (TICKET-06), computed at
read time.

The statistics projection (``projections/ticket_stats.py``) keeps each desk ticket's
facts from the event log; this joins them to the CRM record through the mapping table
as it is now: a ticket belongs to the CRM contact its desk contact is linked to
(``sync.links``, module contacts), and to that CRM contact's account. Averages and
counts over one record's tickets are cheap (the tickets are found by their desk
contact's index), so they are not stored: a ticket linked late, retyped or rated counts
the next time anyone asks, and "overdue" is read against the projection's clock (the
newest event applied), never the wall clock.

A deal's are its linked tickets' (TICKET-05, ``ticket_actions.deal_links``, as its
related list has them), computed the same way from the same per-ticket rows: the
projection already keeps every figure's inputs per ticket, and which tickets a deal
has is the ticket actions projection's, so a deal needs no state of its own — a link
or unlink counts at the next read, and a replay has nothing more to rebuild.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import asyncpg

from projections.ticket_stats import RATINGS

Module = Literal["contacts", "accounts", "deals"]
MODULES: tuple[Module, ...] = ("contacts", "accounts", "deals")

_OF_RECORD = """
FROM ticket_stats.tickets t
JOIN sync.links l ON l.module = 'contacts' AND l.desk_id = t.contact_id
{account}
WHERE t.live AND {record} = $1"""
OF_RECORD: dict[Module, str] = {
    "contacts": _OF_RECORD.format(account="", record="l.crm_id"),
    "accounts": _OF_RECORD.format(
        account="JOIN ticket_stats.crm_contacts c ON c.contact_id = l.crm_id",
        record="c.account_id"),
    # A deal's tickets are those linked to it (TICKET-05, the ticket_actions projection's
    # links), whoever their contact is.
    "deals": """
FROM ticket_stats.tickets t
JOIN ticket_actions.deal_links d ON d.ticket_id = t.ticket_id
WHERE t.live AND d.deal_id = $1""",
}
"""The FROM and WHERE of a CRM record's live tickets (the record's id is $1), joined
through the links as they are now; the related list (``ticket_list``) shares them."""
NEWEST_FIRST = "ORDER BY t.created_at DESC, t.ticket_id"

_BY_RECORD: dict[Module, str] = {module: f"""
SELECT t.ticket_id, t.subject, t.status_type, t.created_at, t.due_at, t.first_closed_at,
       t.rating, (SELECT min(r.sent_at) FROM ticket_stats.replies r
                  WHERE r.ticket_id = t.ticket_id) AS first_reply_at
{joined}
{NEWEST_FIRST}""" for module, joined in OF_RECORD.items()}


async def statistics(pool: asyncpg.Pool, module: Module, record_id: str) -> dict[str, Any]:
    """The statistics of one CRM contact, account or deal (an id nobody links: no
    tickets)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        at = await conn.fetchval("SELECT at FROM ticket_stats.clock")
        rows = await conn.fetch(_BY_RECORD[module], record_id)
    return {"module": module, "id": record_id, **summarise(rows, at)}


def _seconds(start: dt.datetime, end: dt.datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def _average(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def module_of(name: str) -> Module | None:
    """``name`` as a module with statistics, or None."""
    for module in MODULES:
        if name == module:
            return module
    return None


def overdue(row: Any, at: dt.datetime | None) -> bool:
    """Open (any status type but Closed) with a due date before the event time ``at``."""
    return (row["status_type"] != "Closed" and at is not None and row["due_at"] is not None
            and row["due_at"] < at)


def summarise(rows: list[Any], at: dt.datetime | None) -> dict[str, Any]:
    """Counts, averages and the per-ticket lines of a record's tickets at event time ``at``.

    Open is every status type but Closed (an unknown custom status included); overdue
    is open with a due date before ``at``; first response and resolution are averaged
    over the tickets that have one (each count given beside its average)."""
    tickets: list[dict[str, Any]] = []
    for row in rows:
        tickets.append({
            "ticket_id": row["ticket_id"], "subject": row["subject"],
            "status_type": row["status_type"], "created_at": row["created_at"],
            "due_date": row["due_at"],
            "overdue": overdue(row, at),
            "first_response_seconds": _seconds(row["created_at"], row["first_reply_at"]),
            "resolution_seconds": _seconds(row["created_at"], row["first_closed_at"]),
            "rating": row["rating"],
        })
    responses = [t["first_response_seconds"] for t in tickets
                 if t["first_response_seconds"] is not None]
    resolutions = [t["resolution_seconds"] for t in tickets
                   if t["resolution_seconds"] is not None]
    ratings = {name: sum(1 for t in tickets if t["rating"] == name) for name in RATINGS}
    return {
        "as_of": at,
        "total_tickets": len(tickets),
        "open_tickets": sum(1 for t in tickets if t["status_type"] != "Closed"),
        "overdue_tickets": sum(1 for t in tickets if t["overdue"]),
        "responded_tickets": len(responses),
        "average_first_response_seconds": _average(responses),
        "resolved_tickets": len(resolutions),
        "average_resolution_seconds": _average(resolutions),
        "ratings": {**ratings, "unrated": len(tickets) - sum(ratings.values())},
        "tickets": tickets,
    }
