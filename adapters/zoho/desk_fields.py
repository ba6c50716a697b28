"""The Zoho Desk's names for the sync's modules and fields, both ways.

Zoho Desk v1 names fields in camel case (``lastName``, ``accountId``) and keeps
custom fields apart, in the record's ``cf`` object (``{"cf_region": "EU"}``); the
sync's key of a record it created is one of them (``sync_key_field``,
``cf_syncd_key`` by default, a custom text field the administrator adds) and is
reported as ``SYNC_KEY_FIELD``. Ids are long digit strings; the sync's
``account_id`` is the account's id as a number, as in the embedded desk.

Tickets and departments are not synced: they are read for the handshake board,
in the names and shapes the embedded desk's capture gives them (``desk.tickets``:
``department_id``, ``status_type``, ``requester_email``, …), so that the board reads
a hosted desk's tickets as it reads the embedded desk's. Zoho's ``statusType``
(Open, On Hold, Closed) is the ticket's status type.

A ticket's ``rating`` (the embedded desk's ``desk.tickets.rating``) is not a field of
Zoho's ticket: Zoho Desk keeps its customers' happiness ratings apart, in its
Customer Happiness list (``happiness_rating``), so a ticket's record names no rating
and one fetched again leaves the rating captured before as it was.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from projections.stores.port import SYNC_KEY_FIELD, Values

PATHS = {"contacts": "contacts", "accounts": "accounts", "products": "products",
         "tickets": "tickets", "departments": "departments"}

FIELDS = {
    "contacts": {"first_name": "firstName", "last_name": "lastName", "email": "email",
                 "secondary_email": "secondaryEmail", "phone": "phone",
                 "mobile": "mobile", "account_id": "accountId"},
    "accounts": {"account_name": "accountName", "website": "website", "phone": "phone",
                 "industry": "industry"},
    "products": {"product_name": "productName", "product_code": "productCode",
                 "unit_price": "unitPrice"},
    "tickets": {"department_id": "departmentId", "subject": "subject", "status": "status",
                "status_type": "statusType", "priority": "priority", "channel": "channel",
                "owner": "assigneeId", "requester_email": "email",
                "requester_phone": "phone", "contact_id": "contactId", "due_date": "dueDate"},
    "departments": {"name": "name"},
}
BOARD_MODULES = ("departments", "tickets")
"""Read for the handshake board, not synced."""
REFERENCES = {("contacts", "account_id"), ("tickets", "department_id"),
              ("tickets", "contact_id")}
"""Fields holding another record's id (text in Zoho Desk, a number in the sync)."""
TIMES = {("tickets", "due_date")}
"""Fields holding a time (ISO 8601 with its offset, as the embedded desk's)."""

DEPARTMENTS = "departmentIds"
"""A Zoho Desk product belongs to departments (a list of ids, at least one on a
create); the sync's product has one ``department_id``, the integration's products
department (SYNC-13)."""

MANDATORY = {"contacts": "lastName", "accounts": "accountName", "products": "productName"}

THREADS = "ticket_threads"
"""A ticket's conversation, as the embedded desk's ``desk.ticket_threads``: its
threads (e-mail replies, in from the customer or out from an agent) and its
comments (an agent's, to users only), read for the ticket views, not synced."""
THREAD_EVENTS = {"Ticket_Thread_Add": "reply", "Ticket_Comment_Add": "comment",
                 "Ticket_Comment_Update": "comment"}
"""The webhook's events of a ticket's conversation, by the kind of row they make."""

RATINGS = "tickets/ratings"
"""The poll's cursor of the customers' happiness ratings (``GET
/api/v1/customerHappiness``), captured as their tickets' ``rating``."""
HAPPINESS = {"good": "good", "ok": "okay", "okay": "okay", "bad": "bad"}
"""Zoho Desk's happiness ratings (its feedback form's Good, Okay and Bad; the list's
``rating`` filter takes ``good``, ``ok`` and ``bad``; an item's ``rating`` is read
case aside) as the embedded desk's ``desk.tickets.rating``
(``projections.ticket_stats.RATINGS``)."""

EVENT_MODULES = {"Contact": "contacts", "Account": "accounts", "Ticket": "tickets"}
"""The webhook event types' prefixes (``Contact_Add``, ``Ticket_Update``, …); Zoho
Desk has no product or department events."""


def module_path(module: str) -> str:
    try:
        return PATHS[module]
    except KeyError:
        raise ValueError(f"the Zoho Desk adapter does not sync {module!r}") from None


def desk_time(value: str | float) -> dt.datetime:
    """Zoho Desk's times are UTC with milliseconds (``2026-12-02T10:00:00.000Z``);
    the OpenAPI files' examples (``Ticket.json``'s ``dueDate``, ``modifiedTime``)
    and the webhook's ``eventTime`` give milliseconds since the epoch, read too."""
    if isinstance(value, (int, float)) or value.isdigit():
        return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def from_desk(module: str, record: dict[str, Any], *, sync_key_field: str) -> Values:
    """A Zoho Desk record as the port's values (the sync's names, ``custom``, times)."""
    values: Values = {}
    for ours, api in FIELDS[module].items():
        value = record.get(api)
        if (module, ours) in REFERENCES:
            value = int(value) if value else None
        elif (module, ours) in TIMES:
            value = _iso(value)
        values[ours] = value if value != "" else None
    if module == "products":
        departments = record.get(DEPARTMENTS) or []
        values["department_id"] = int(departments[0]) if departments else None
    custom = dict(record.get("cf") or {})
    if sync_key_field in custom:
        values[SYNC_KEY_FIELD] = custom.pop(sync_key_field)
    values["custom"] = {k: v for k, v in custom.items() if v is not None}
    values["deleted"] = False  # the recycle bin's records are not returned by reads
    values["created_time"] = _iso(record.get("createdTime"))
    values["modified_time"] = _iso(record.get("modifiedTime"))
    return values


def _addresses(item: dict[str, Any]) -> list[str] | None:
    """A thread's ``to`` and ``cc`` (comma-separated in Thread.json) as the embedded desk's
    ``recipients``; None when it names none (a customer's message, a list's summary)."""
    found = [address.strip() for key in ("to", "cc") if isinstance(item.get(key), str)
             for address in item[key].split(",") if address.strip()]
    return found or None


def thread_values(item: dict[str, Any], *, kind: str, ticket_id: str) -> Values:
    """A ticket's thread (``Thread.json``: ``direction``, ``channel``, ``author``, its
    ``content``, or in a list only its ``summary``) or comment (``TicketComment.json``:
    ``commenter``, ``content``, ``commentedTime``) as a ``desk.ticket_threads`` row:
    a comment is an agent's, ``out``, to users only (no ``recipients``)."""
    reply = kind == "reply"
    person = item.get("author" if reply else "commenter")
    created = _iso(item.get("createdTime" if reply else "commentedTime"))
    return {"ticket_id": int(ticket_id),
            "direction": (item.get("direction") or "out") if reply else "out",
            "kind": kind, "author": person.get("name") if isinstance(person, dict) else None,
            "channel": item.get("channel") if reply else None,
            "content": item.get("content") or item.get("summary") or "",
            "recipients": _addresses(item) if reply else None,
            "created_time": created,
            "modified_time": _iso(item.get("modifiedTime")) or created}


def happiness_rating(item: dict[str, Any]) -> tuple[str, str, dt.datetime] | None:
    """A customer happiness list item as ``(ticket id, rating, rated time)``: its
    ``ticketId`` (or, with ``include=tickets``, its ``ticket``'s ``id``), its
    ``rating`` as the embedded desk names it and its ``ratedTime`` (ISO 8601 or
    milliseconds since the epoch); None for an item without a ticket, a time or a
    rating of the three."""
    included = item.get("ticket")
    ticket = item.get("ticketId") or (included.get("id") if isinstance(included, dict)
                                      else None)
    rating = HAPPINESS.get(str(item.get("rating") or "").strip().lower())
    rated = item.get("ratedTime")
    if not ticket or rating is None or not isinstance(rated, (str, int, float)) or rated == "":
        return None
    try:
        return str(ticket), rating, desk_time(rated)
    except ValueError:
        return None


def to_desk(module: str, payload: Values, *, sync_key_field: str,
            resolved: dict[str, str] | None = None) -> dict[str, Any]:
    """A command's values as a Zoho Desk record (custom fields under ``cf``).
    ``resolved``: the Zoho ids of placeholders the values name (a contact's account
    the sync created)."""
    names = FIELDS[module]
    record: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for ours, value in payload.items():
        if ours == "custom":
            custom.update(value or {})
        elif ours == SYNC_KEY_FIELD:
            custom[sync_key_field] = value
        elif ours in names:
            if (module, ours) in REFERENCES and value is not None:
                value = (resolved or {}).get(str(value), str(value))
            record[names[ours]] = value
        elif module == "products" and ours == "department_id" and value is not None:
            record[DEPARTMENTS] = [str(value)]
    if custom:
        record["cf"] = custom
    return record


def _iso(value: Any) -> str | None:
    return None if not value else desk_time(
        value if isinstance(value, (int, float)) else str(value)).isoformat()
