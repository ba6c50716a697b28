"""The customer statistics projection (TICKET-06): what a CRM contact's or account's
statistics are computed from, kept from the event log alone.

Why it exists: a CRM user looking at a contact or an account sees how its customer
service goes — total tickets, overdue tickets, average first response and resolution
times, the customer's rating of each ticket — without opening the desk. All of it is
a function of the desk's ticket and thread events and the CRM's contact events, so a
replay of the event log rebuilds it exactly (OWN-03).

What it keeps (``ticket_stats.*``, migrations 0021, 0022 and 0027), each row a function of
events only:

* per desk ticket: its desk contact, live or not, subject, status and status type,
  priority, department, requester's e-mail (these four for the related list, TICKET-01:
  ``daemon/service/ticket_list.py``), creation time
  (the event's ``created_at``, the desk's own), due date, rating, and the time of its
  *first* close: the source's modification time (``modified_at``) of the first event
  that shows it Closed (its status type, as the board reads it: custom statuses count
  by the standard status they map to). Reopened and closed again, it keeps that first
  close: its resolution is how long the customer waited for the first answer to be
  final, and while reopened it counts as open (and overdue, past its due date);
* the agents' replies (threads ``direction='out'``, ``kind='reply'``, live), each with
  its creation time: a ticket's first response is the earliest of them. Comments and
  the customer's own messages are not responses; a reply deleted from the desk no
  longer counts;
* each live CRM contact's account (CRM contact events of every origin);
* each live CRM lead's e-mail key (``projections.keys.email_key``, migration 0027): a
  lead's tickets, for its related list, are those whose requester e-mail has that key
  (the board matches requesters to leads the same way). A ticket belongs to a lead by
  the e-mail alone: the desk has no link to a lead, and the key is a function of events;
* the clock: the newest capture time of any event applied, the *event time* the
  statistics are computed at ("overdue" is never read from the wall clock).

Which CRM record a ticket belongs to is not kept here: the mapping table
(``sync.links``) says which CRM contact a desk contact is, and it is not a projection
of the log (links change outside the projector's batches too: the resume drain, a
window re-apply). So a ticket counts for the CRM contact its desk contact is linked to
*now*, and for that contact's account, joined at read time
(``daemon/service/ticket_stats.py``): a link made after the ticket counts it at once,
and a rebuild has nothing of the links to get wrong.

Batches (several replicas, OWN-05): a record's events share a partition, so two
batches never write the same ticket, thread or contact row; the one row they share,
the clock, is written last, with ``greatest``. Its row lock is held to the commit, so
concurrent batches pass this point one at a time (it runs while the sync plans: after
the sync's reads' locks, before the board's and the sync's writes': the same order in
every batch, so they cannot deadlock on it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.events import ChangeEvent
from projections.handshake import is_live, record_ref, status_type
from projections.keys import email_key

RATINGS = ("good", "okay", "bad")
"""The customer's rating of a ticket, as Zoho Desk's customer happiness names them."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _moment(value: object) -> dt.datetime | None:
    """An ISO 8601 time with a zone (a zoneless one is UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class TicketRow:
    ticket_id: str
    contact_id: str | None
    live: bool
    subject: str | None
    status: str | None
    status_type: str | None
    priority: str | None
    department_id: str | None
    requester: str | None
    created_at: dt.datetime
    due_at: dt.datetime | None
    rating: str | None
    closed_at: dt.datetime | None
    """The first close this batch shows (kept only if the ticket had none before)."""


@dataclass(frozen=True, slots=True)
class ReplyRow:
    thread_id: str
    ticket_id: str | None
    """None: the thread is not (or no longer) an agent's live reply."""
    sent_at: dt.datetime


@dataclass
class Changes:
    """A batch reduced to the last state of each record, and each ticket's first close."""

    tickets: dict[str, TicketRow] = field(default_factory=dict)
    replies: dict[str, ReplyRow] = field(default_factory=dict)
    contacts: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    leads: dict[str, str | None] = field(default_factory=dict)
    """Each lead's e-mail key; None: deleted, or no e-mail (it lists no ticket)."""
    newest: dt.datetime | None = None


def ticket_row(event: ChangeEvent, earlier: TicketRow | None) -> TicketRow:
    values = event.values
    standard = status_type(values)
    closed_at = earlier.closed_at if earlier is not None else None
    if closed_at is None and standard == "Closed" and is_live(event):
        closed_at = event.modified_at
    rating = values.get("rating")
    return TicketRow(
        ticket_id=event.record_id, contact_id=record_ref(values.get("contact_id")),
        live=is_live(event), subject=_text(values.get("subject")),
        status=_text(values.get("status")), status_type=standard,
        priority=_text(values.get("priority")),
        department_id=record_ref(values.get("department_id")),
        requester=_text(values.get("requester_email")), created_at=event.created_at,
        due_at=_moment(values.get("due_date")),
        rating=rating if rating in RATINGS else None, closed_at=closed_at)


def reply_row(event: ChangeEvent) -> ReplyRow:
    values = event.values
    is_reply = (is_live(event) and values.get("direction") == "out"
                and values.get("kind", "reply") == "reply")
    return ReplyRow(event.record_id, record_ref(values.get("ticket_id")) if is_reply else None,
                    event.created_at)


def collect(events: Iterable[ChangeEvent]) -> Changes:
    """Keep what the statistics depend on, in log order."""
    changes = Changes()
    for event in events:
        if changes.newest is None or event.captured_at > changes.newest:
            changes.newest = event.captured_at
        if event.source == "desk" and event.module == "tickets":
            changes.tickets[event.record_id] = ticket_row(
                event, changes.tickets.get(event.record_id))
        elif event.source == "desk" and event.module == "ticket_threads":
            changes.replies[event.record_id] = reply_row(event)
        elif event.source == "crm" and event.module == "contacts":
            changes.contacts[event.record_id] = (
                is_live(event), record_ref(event.values.get("account_id")))
        elif event.source == "crm" and event.module == "leads":
            changes.leads[event.record_id] = (
                email_key(event.values.get("email")) if is_live(event) else None)
    return changes


class StatisticsProjection:
    """Keeps ``ticket_stats.*``; see the module docstring."""

    name = "statistics"
    reads_events_only = True  # runs while the sync plans (projections.batch.PlansBeside)

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        """Write the batch's tickets, replies and CRM contacts, then move the clock.
        Nothing here can fail an event: its report is always empty."""
        await write_changes(conn, collect(item.event for item in events))
        return NOTHING_TO_REPORT


async def write_changes(conn: Conn, changes: Changes) -> None:
    """Write the reduced changes (a batch's, or a rebuild's last states), then move the
    clock; nothing when no event was applied."""
    if changes.newest is None:
        return
    await _write_tickets(conn, sorted(changes.tickets.values(), key=lambda t: t.ticket_id))
    await _write_replies(conn, sorted(changes.replies.values(), key=lambda r: r.thread_id))
    await _write_contacts(conn, sorted(changes.contacts.items()))
    await _write_leads(conn, sorted(changes.leads.items()))
    await conn.execute(
        "INSERT INTO ticket_stats.clock (at) VALUES ($1) ON CONFLICT (one) DO UPDATE"
        " SET at = greatest(clock.at, EXCLUDED.at)", changes.newest)


async def _write_tickets(conn: Conn, tickets: list[TicketRow]) -> None:
    if not tickets:
        return
    # A first close already recorded stays (coalesce): the batch's is only a candidate.
    await conn.execute(
        "INSERT INTO ticket_stats.tickets AS t (ticket_id, contact_id, live, subject,"
        " status_type, created_at, due_at, rating, first_closed_at, status, priority,"
        " department_id, requester)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::text[],"
        "  $6::timestamptz[], $7::timestamptz[], $8::text[], $9::timestamptz[], $10::text[],"
        "  $11::text[], $12::text[], $13::text[])"
        " ON CONFLICT (ticket_id) DO UPDATE SET contact_id = EXCLUDED.contact_id,"
        "  live = EXCLUDED.live, subject = EXCLUDED.subject,"
        "  status_type = EXCLUDED.status_type, created_at = EXCLUDED.created_at,"
        "  due_at = EXCLUDED.due_at, rating = EXCLUDED.rating,"
        "  first_closed_at = coalesce(t.first_closed_at, EXCLUDED.first_closed_at),"
        "  status = EXCLUDED.status, priority = EXCLUDED.priority,"
        "  department_id = EXCLUDED.department_id, requester = EXCLUDED.requester",
        [t.ticket_id for t in tickets], [t.contact_id for t in tickets],
        [t.live for t in tickets], [t.subject for t in tickets],
        [t.status_type for t in tickets], [t.created_at for t in tickets],
        [t.due_at for t in tickets], [t.rating for t in tickets],
        [t.closed_at for t in tickets], [t.status for t in tickets],
        [t.priority for t in tickets], [t.department_id for t in tickets],
        [t.requester for t in tickets])


async def _write_replies(conn: Conn, replies: list[ReplyRow]) -> None:
    if not replies:
        return
    await conn.execute("DELETE FROM ticket_stats.replies WHERE thread_id = ANY($1::text[])",
                       [r.thread_id for r in replies if r.ticket_id is None])
    kept = [r for r in replies if r.ticket_id is not None]
    await conn.execute(
        "INSERT INTO ticket_stats.replies (thread_id, ticket_id, sent_at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
        " ON CONFLICT (thread_id) DO UPDATE SET ticket_id = EXCLUDED.ticket_id,"
        "  sent_at = EXCLUDED.sent_at",
        [r.thread_id for r in kept], [r.ticket_id for r in kept], [r.sent_at for r in kept])


async def _write_contacts(conn: Conn, contacts: list[tuple[str, tuple[bool, str | None]]]
                          ) -> None:
    if not contacts:
        return
    await conn.execute("DELETE FROM ticket_stats.crm_contacts WHERE contact_id = ANY($1::text[])",
                       [cid for cid, (live, _) in contacts if not live])
    kept = [(cid, account) for cid, (live, account) in contacts if live]
    await conn.execute(
        "INSERT INTO ticket_stats.crm_contacts (contact_id, account_id)"
        " SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (contact_id) DO UPDATE SET account_id = EXCLUDED.account_id",
        [cid for cid, _ in kept], [account for _, account in kept])


async def _write_leads(conn: Conn, leads: list[tuple[str, str | None]]) -> None:
    if not leads:
        return
    await conn.execute("DELETE FROM ticket_stats.crm_leads WHERE lead_id = ANY($1::text[])",
                       [lid for lid, key in leads if key is None])
    kept = [(lid, key) for lid, key in leads if key is not None]
    await conn.execute(
        "INSERT INTO ticket_stats.crm_leads (lead_id, email_key)"
        " SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (lead_id) DO UPDATE SET email_key = EXCLUDED.email_key",
        [lid for lid, _ in kept], [key for _, key in kept])
