"""The handshake projection: each department's open tickets by the customer's CRM standing.

Why it exists: an agent works the queue best knowing who is asking — a stranger,
a known lead or contact, a contact with a deal in progress, or a paying
customer (HS-01). The board is a pure function of two things the event stream
carries, so a replay of the event log rebuilds it exactly (OWN-03):

* the desk's tickets: department, status type (the store resolves a custom status
  to the standard one it maps to, HS-03), requester e-mail and phone;
* the CRM's contacts, unconverted leads and deals, reduced to one *standing* per
  normalised match key (``handshake.crm_keys``).

A ticket's column is the best standing among the CRM records that share its
requester's e-mail key; failing any, its phone key; failing both, ``new``
(HS-02). Customers (a won deal) beat Opportunities (an open deal).

Per batch, set-based and incremental (HS-05): the batch's events are reduced to
the last state of each record; CRM changes yield the match keys whose standing
may have changed, and only the tickets indexed under those keys, plus the
tickets that changed themselves, are placed again — in one statement that also
records the moves and counts the work (``HandshakeStats``). Nothing ever rescans
the board.

Races (several replicas, OWN-05): a ticket and the CRM record that moves it can
be applied by two replicas at once, each blind to the other's uncommitted rows.
Every batch therefore takes transaction advisory locks, in a fixed order: the
contacts its deals point at, then every match key it reads or writes, then the
moves lock (hashed into buckets, ``projections.db.lock_keys``). A batch that
shares a key with another waits for it and then reads what it committed. The
moves lock, held to commit, makes move sequence numbers visible in order, which is
what lets a stream reader never miss one.

The board reads no store: only events. The sync's own writes to the CRM's contacts
are captured as CRM contact events with origin ``sync`` (migration
``0013_capture_sync_writes.sql``; the sync projection ignores them, SYNC-14), so
a CRM contact the sync creates or updates from a desk contact reaches the board
as any other CRM contact change does — whether the live batch, the resume drain
after a pause, or a window re-apply wrote it — and a rebuild from the event log
sees exactly what the live board saw. CRM contact events of every origin count;
desk contact events do not (the desk's contacts are not on the board).

Time comes only from the events (a move's time is the capture time of the
change that caused it).

A replay from the event log does not run this class over every event (one from
Kafka does): the state tables depend on the records' last states alone, and
``projections.handshake_rebuild`` builds them from those, set-based, with
``STANDINGS``, ``PLACEMENT`` and ``INSERT_KEYS`` below.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import HANDSHAKE_CONTACTS, HANDSHAKE_KEYS, HANDSHAKE_MOVES, Conn, lock_keys
from projections.events import ChangeEvent
from projections.keys import email_key

COLUMNS: tuple[str, ...] = ("new", "contacts_leads", "opportunities", "customers")
"""Board columns, lowest standing first; a column's index is its standing."""

COLUMN_TITLES: dict[str, str] = {
    "new": "New",
    "contacts_leads": "Contacts/Leads",
    "opportunities": "Opportunities",
    "customers": "Customers",
}

STANDARD_STATUSES: dict[str, str] = {
    "open": "Open", "on hold": "On Hold", "escalated": "Escalated", "closed": "Closed",
}

NOTIFY_CHANNEL = "handshake_moves"
"""``pg_notify`` channel; the payload is the department id. Fires on commit."""

PHONE_MIN_DIGITS = 7
PHONE_KEY_DIGITS = 9

TICKET_FIELDS = ("subject", "status", "priority", "channel", "owner", "due_date",
                 "requester_email", "requester_phone", "contact_id", "created_time",
                 "modified_time")
"""What a board row shows of a ticket (its ``summary``), besides the id."""

_EXTENSION = re.compile(r"[A-Za-z#;,]")
_NOT_DIGIT = re.compile(r"[^0-9]")


def phone_key(value: object) -> str | None:
    """The phone match key: digits, national and international prefixes folded.

    1. An extension is cut off: everything from the first letter or ``# ; ,``
       (``ext. 12``, ``x12``, ``poste 3``, ``;ext=12``).
    2. A number written internationally (leading ``+`` or ``00``) loses that
       prefix; otherwise one leading national trunk ``0`` is dropped.
    3. Only the digits ASCII 0-9 remain; fewer than 7 is no key (an internal
       extension or junk matches nobody).
    4. The key is the last 9 digits, so the country code drops out of
       international numbers of 9 or more national digits:
       ``+33 6 12 34 56 78``, ``0033 612345678`` and ``06.12.34.56.78`` all give
       ``612345678``; ``+1 (555) 123-4567`` and ``555-123-4567`` give ``551234567``.

    Known limit: a national number shorter than 9 digits only matches when both
    sides write it the same way (both national or both international).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = _EXTENSION.split(str(value), maxsplit=1)[0].strip()
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = digits[1:]
    if len(digits) < PHONE_MIN_DIGITS:
        return None
    return digits[-PHONE_KEY_DIGITS:]


def status_type(values: dict[str, Any]) -> str | None:
    """The standard status a ticket is in: the store's resolved ``status_type`` when
    the event carries one (custom statuses, HS-03), else the status itself when it
    is a standard name; None for an unknown custom status."""
    if "status_type" in values:
        resolved = values["status_type"]
        return resolved if resolved in STANDARD_STATUSES.values() else None
    status = values.get("status")
    if not isinstance(status, str):
        return None
    return STANDARD_STATUSES.get(status.strip().lower())


def record_ref(value: object) -> str | None:
    """A foreign record id as text (ids are text in events), or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= 200:
        return value.strip()
    return None


def is_live(event: ChangeEvent) -> bool:
    """Neither hard-deleted nor in the recycle bin."""
    return event.op != "delete" and not event.values.get("deleted")


@dataclass(frozen=True, slots=True)
class TicketChange:
    ticket_id: str
    on_board: bool
    department_id: str | None
    email_key: str | None
    phone_key: str | None
    created_at: dt.datetime
    summary: dict[str, Any]
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class PersonChange:
    """A CRM contact or lead as match keys; not live means it holds no keys."""

    kind: Literal["contact", "lead"]
    record_id: str
    live: bool
    email_keys: tuple[str, ...]
    phone_keys: tuple[str, ...]
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class DealChange:
    deal_id: str
    live: bool
    contact_id: str | None
    stage: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class DepartmentChange:
    department_id: str
    live: bool
    name: str | None


def _keys(values: dict[str, Any], fields: Iterable[str], norm: Any) -> tuple[str, ...]:
    found: list[str] = []
    for name in fields:
        key = norm(values.get(name))
        if key is not None and key not in found:
            found.append(key)
    return tuple(found)


def person_change(kind: Literal["contact", "lead"], record_id: str, values: dict[str, Any], *,
                  live: bool, at: dt.datetime) -> PersonChange:
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    if kind == "contact":
        emails, phones = ("email", "secondary_email"), ("phone", "mobile")
    else:
        emails, phones = ("email",), ("phone",)
        live = live and not values.get("converted")  # a converted lead is no longer a lead
    if not live:
        return PersonChange(kind, record_id, False, (), (), at)
    return PersonChange(kind, record_id, True, _keys(values, emails, email_key),
                        _keys(values, phones, phone_key), at)


def ticket_change(event: ChangeEvent) -> TicketChange:
    values = event.values
    department = record_ref(values.get("department_id"))
    on_board = is_live(event) and status_type(values) == "Open" and department is not None
    summary = {"id": event.record_id, **{name: values.get(name) for name in TICKET_FIELDS}}
    return TicketChange(
        ticket_id=event.record_id, on_board=on_board, department_id=department,
        email_key=email_key(values.get("requester_email")),
        phone_key=phone_key(values.get("requester_phone")),
        created_at=event.created_at, summary=summary, at=event.captured_at,
    )


def deal_change(event: ChangeEvent) -> DealChange:
    stage = event.values.get("stage")
    stage = stage.strip().lower() if isinstance(stage, str) else ""
    live = is_live(event) and stage in ("open", "won", "lost")
    return DealChange(event.record_id, live, record_ref(event.values.get("contact_id")),
                      stage if live else "lost", event.captured_at)


@dataclass
class Changes:
    """A batch reduced to the last state of each record it touches."""

    tickets: dict[str, TicketChange] = field(default_factory=dict)
    people: dict[tuple[str, str], PersonChange] = field(default_factory=dict)
    deals: dict[str, DealChange] = field(default_factory=dict)
    departments: dict[str, DepartmentChange] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tickets or self.people or self.deals or self.departments)


def collect(events: Iterable[ChangeEvent]) -> Changes:
    """Keep what the board depends on; a later event of a record replaces an earlier one
    (events carry the record's full values, in log order)."""
    changes = Changes()
    for event in events:
        if event.source == "desk":
            if event.module == "tickets":
                changes.tickets[event.record_id] = ticket_change(event)
            elif event.module == "departments":
                name = event.values.get("name")
                changes.departments[event.record_id] = DepartmentChange(
                    event.record_id, is_live(event), name if isinstance(name, str) else None)
        elif event.module in ("contacts", "leads"):
            kind: Literal["contact", "lead"] = "contact" if event.module == "contacts" else "lead"
            changes.people[(kind, event.record_id)] = person_change(
                kind, event.record_id, event.values, live=is_live(event), at=event.captured_at)
        elif event.module == "deals":
            changes.deals[event.record_id] = deal_change(event)
    return changes


@dataclass
class HandshakeStats:
    """Work done, for tests and metrics: not wall time.

    ``examined``: tickets whose column was computed; ``moves``: board changes
    recorded (added, moved, removed); ``events``: events the projection used.
    """

    events: int = 0
    examined: int = 0
    moves: int = 0

    def add(self, other: HandshakeStats) -> None:
        self.events += other.events
        self.examined += other.examined
        self.moves += other.moves


def _lock_key(kind: str, value: str) -> str:
    return f"handshake:{kind}:{value}"


STANDINGS = """
    LEFT JOIN LATERAL (SELECT max(k.standing) AS standing FROM handshake.crm_keys k
                       WHERE k.key_kind = 'email' AND k.key = b.email_key) e ON true
    LEFT JOIN LATERAL (SELECT max(k.standing) AS standing FROM handshake.crm_keys k
                       WHERE k.key_kind = 'phone' AND k.key = b.phone_key) p ON true"""
"""The best standing among the CRM records sharing ticket ``b``'s e-mail key (``e``)
and phone key (``p``): joined wherever a ticket is placed (HS-02)."""

PLACEMENT = """CASE WHEN e.standing IS NOT NULL THEN 'email'
                WHEN p.standing IS NOT NULL THEN 'phone' END AS matched_by,
           (ARRAY['new', 'contacts_leads', 'opportunities', 'customers'])
               [coalesce(e.standing, p.standing, 0) + 1] AS new_column"""
"""A ticket's ``matched_by`` and column from ``STANDINGS``: the e-mail decides when it
matches anything, else the phone, else ``new``."""

INSERT_KEYS = (
    "INSERT INTO handshake.crm_keys (key_kind, key, kind, record_id, standing)"
    " SELECT r.key_kind, r.key, r.kind, r.record_id,"
    "  CASE WHEN r.kind = 'lead' THEN 1 ELSE coalesce(s.standing, 1) END::smallint"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
    "  AS r(key_kind, kind, record_id, key)"
    " LEFT JOIN (SELECT contact_id, CASE WHEN bool_or(stage = 'won') THEN 3"
    "                 WHEN bool_or(stage = 'open') THEN 2 ELSE 1 END AS standing"
    "            FROM handshake.deals WHERE contact_id = ANY($3::text[])"
    "            GROUP BY contact_id) s"
    "  ON r.kind = 'contact' AND s.contact_id = r.record_id")
"""Key rows ``(key_kind, kind, record_id, key)`` with their standing from the deals
already written: a lead 1, a contact by its live deals (``handshake.contact_standing``,
for all the contacts at once: calling it per key row was the costliest statement of a
batch of contact changes)."""

_PLACE = """
WITH touched AS (
    SELECT b.ticket_id, k.at FROM unnest($1::text[], $2::timestamptz[]) AS k(key, at)
        JOIN handshake.board b ON b.email_key = k.key
    UNION ALL
    SELECT b.ticket_id, k.at FROM unnest($3::text[], $4::timestamptz[]) AS k(key, at)
        JOIN handshake.board b ON b.phone_key = k.key
    UNION ALL
    SELECT t.ticket_id, t.at FROM unnest($5::text[], $6::timestamptz[]) AS t(ticket_id, at)
), candidates AS (
    SELECT ticket_id, max(at) AS at FROM touched GROUP BY ticket_id
), placed AS MATERIALIZED (
    SELECT b.ticket_id, b.department_id, b.board_column AS old_column, c.at,
           """ + PLACEMENT + """
    FROM candidates c
    JOIN handshake.board b ON b.ticket_id = c.ticket_id
    """ + STANDINGS + """
), changed AS (
    UPDATE handshake.board b
    SET board_column = p.new_column, matched_by = p.matched_by
    FROM placed p
    WHERE b.ticket_id = p.ticket_id
      AND (b.board_column IS DISTINCT FROM p.new_column
           OR b.matched_by IS DISTINCT FROM p.matched_by)
    RETURNING b.ticket_id, b.department_id, p.old_column, p.new_column, p.at, b.summary,
              b.matched_by
), moved AS (
    SELECT r.department_id, r.ticket_id, r.from_column, NULL::text AS to_column, r.at,
           r.ticket, 0 AS ord
    FROM unnest($7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::jsonb[])
        AS r(department_id, ticket_id, from_column, at, ticket)
    UNION ALL
    SELECT department_id, ticket_id, old_column, new_column, at,
           summary || jsonb_build_object('matched_by', matched_by), 1
    FROM changed WHERE old_column IS DISTINCT FROM new_column
), recorded AS (
    INSERT INTO handshake.moves (department_id, ticket_id, from_column, to_column,
                                 event_time, ticket)
    SELECT department_id, ticket_id, from_column, to_column, at, ticket FROM moved
    ORDER BY at, ord, department_id, ticket_id
    RETURNING seq, department_id
), pruned AS (
    DELETE FROM handshake.moves WHERE event_time < $12::timestamptz RETURNING seq
), marked AS (
    UPDATE handshake.stream_state
    SET pruned_through = greatest(pruned_through, (SELECT max(seq) FROM pruned))
    WHERE EXISTS (SELECT 1 FROM pruned)
)
SELECT (SELECT count(*) FROM placed) AS examined,
       (SELECT count(*) FROM recorded) AS moves,
       (SELECT coalesce(array_agg(DISTINCT department_id), '{}') FROM recorded) AS departments
"""


class HandshakeProjection:
    """Keeps ``handshake.*`` (HS-01 … HS-05); see the module docstring."""

    name = "handshake"
    reads_events_only = True  # runs while the sync plans (projections.batch.PlansBeside)

    def __init__(self, *, retention: dt.timedelta = dt.timedelta(days=1)) -> None:
        self.retention = retention
        self.totals = HandshakeStats()

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        """Place the batch's changes on the board. The board never fails an event, so
        its report is always empty; the work done adds up in ``totals``."""
        changes = collect(item.event for item in events)
        if not changes:
            return NOTHING_TO_REPORT
        newest = max(item.event.captured_at for item in events)
        stats = await _Batch(conn, changes).run(prune_before=newest - self.retention)
        stats.events = sum(1 for item in events if _relevant(item.event))
        self.totals.add(stats)
        return NOTHING_TO_REPORT


def _relevant(event: ChangeEvent) -> bool:
    if event.source == "desk":
        return event.module in ("tickets", "departments")
    return event.module in ("contacts", "leads", "deals")


class _Batch:
    def __init__(self, conn: Conn, changes: Changes) -> None:
        self.conn = conn
        self.changes = changes
        # match keys whose standing may have changed, with the newest cause time
        self.email_at: dict[str, dt.datetime] = {}
        self.phone_at: dict[str, dt.datetime] = {}

    def _touch(self, key_kind: str, key: str, at: dt.datetime) -> None:
        target = self.email_at if key_kind == "email" else self.phone_at
        if key not in target or target[key] < at:
            target[key] = at

    async def run(self, *, prune_before: dt.datetime) -> HandshakeStats:
        ch = self.changes
        old_deals = await self._old_deals()
        # The contacts whose standing this batch may change, each with its cause time.
        contacts_at: dict[str, dt.datetime] = {}
        for deal in ch.deals.values():
            for contact in (deal.contact_id, old_deals.get(deal.deal_id)):
                if contact is not None and (contact not in contacts_at
                                            or contacts_at[contact] < deal.at):
                    contacts_at[contact] = deal.at
        person_ids = set(ch.people)
        locked_contacts = sorted({rid for kind, rid in person_ids if kind == "contact"}
                                 | set(contacts_at))
        if locked_contacts:
            await lock_keys(self.conn, HANDSHAKE_CONTACTS, locked_contacts)
        held = await self._current_keys(person_ids | {("contact", c) for c in contacts_at})
        old_rows = await self._old_tickets()
        await self._lock_keys(held, old_rows)

        await self._write_departments()
        await self._write_deals()
        await self._write_people(held)
        await self._refresh_standing(contacts_at)
        removals = await self._write_tickets(old_rows)
        return await self._place(removals, prune_before=prune_before)

    # -- reading ---------------------------------------------------------------

    async def _old_deals(self) -> dict[str, str | None]:
        if not self.changes.deals:
            return {}
        rows = await self.conn.fetch(
            "SELECT deal_id, contact_id FROM handshake.deals WHERE deal_id = ANY($1::text[])",
            sorted(self.changes.deals))
        return {row["deal_id"]: row["contact_id"] for row in rows}

    async def _current_keys(self, records: set[tuple[str, str]]
                            ) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """The match keys the given CRM records hold now: (kind, id) -> [(key_kind, key)]."""
        if not records:
            return {}
        ordered = sorted(records)
        rows = await self.conn.fetch(
            "SELECT k.kind, k.record_id, k.key_kind, k.key FROM handshake.crm_keys k"
            " JOIN unnest($1::text[], $2::text[]) AS r(kind, record_id)"
            " ON k.kind = r.kind AND k.record_id = r.record_id",
            [kind for kind, _ in ordered], [rid for _, rid in ordered])
        held: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in rows:
            held.setdefault((row["kind"], row["record_id"]), []).append(
                (row["key_kind"], row["key"]))
        return held

    async def _old_tickets(self) -> dict[str, Any]:
        if not self.changes.tickets:
            return {}
        rows = await self.conn.fetch(
            "SELECT ticket_id, department_id, board_column, email_key, phone_key, summary,"
            " matched_by FROM handshake.board WHERE ticket_id = ANY($1::text[])",
            sorted(self.changes.tickets))
        return {row["ticket_id"]: row for row in rows}

    async def _lock_keys(self, held: dict[tuple[str, str], list[tuple[str, str]]],
                         old_rows: dict[str, Any]) -> None:
        keys: set[str] = set()
        for pairs in held.values():
            keys.update(_lock_key(kind, key) for kind, key in pairs)
        for person in self.changes.people.values():
            keys.update(_lock_key("email", k) for k in person.email_keys)
            keys.update(_lock_key("phone", k) for k in person.phone_keys)
        for ticket in self.changes.tickets.values():
            if ticket.email_key:
                keys.add(_lock_key("email", ticket.email_key))
            if ticket.phone_key:
                keys.add(_lock_key("phone", ticket.phone_key))
        for row in old_rows.values():
            if row["email_key"]:
                keys.add(_lock_key("email", row["email_key"]))
            if row["phone_key"]:
                keys.add(_lock_key("phone", row["phone_key"]))
        await lock_keys(self.conn, HANDSHAKE_KEYS, keys)
        await lock_keys(self.conn, HANDSHAKE_MOVES, ["moves"])

    # -- writing ---------------------------------------------------------------

    async def _write_departments(self) -> None:
        departments = sorted(self.changes.departments.values(), key=lambda d: d.department_id)
        if not departments:
            return
        await self.conn.execute(
            "DELETE FROM handshake.departments WHERE department_id = ANY($1::text[])",
            [d.department_id for d in departments if not d.live])
        live = [d for d in departments if d.live]
        await self.conn.execute(
            "INSERT INTO handshake.departments (department_id, name)"
            " SELECT * FROM unnest($1::text[], $2::text[])"
            " ON CONFLICT (department_id) DO UPDATE SET name = EXCLUDED.name",
            [d.department_id for d in live], [d.name for d in live])

    async def _write_deals(self) -> None:
        deals = sorted(self.changes.deals.values(), key=lambda d: d.deal_id)
        if not deals:
            return
        await self.conn.execute(
            "DELETE FROM handshake.deals WHERE deal_id = ANY($1::text[])",
            [d.deal_id for d in deals if not d.live])
        live = [d for d in deals if d.live]
        await self.conn.execute(
            "INSERT INTO handshake.deals (deal_id, contact_id, stage)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " ON CONFLICT (deal_id) DO UPDATE"
            " SET contact_id = EXCLUDED.contact_id, stage = EXCLUDED.stage",
            [d.deal_id for d in live], [d.contact_id for d in live], [d.stage for d in live])

    async def _write_people(self, held: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
        people = sorted(self.changes.people.values(), key=lambda p: (p.kind, p.record_id))
        if not people:
            return
        for person in people:
            for key_kind, key in held.get((person.kind, person.record_id), []):
                self._touch(key_kind, key, person.at)
            for key in person.email_keys:
                self._touch("email", key, person.at)
            for key in person.phone_keys:
                self._touch("phone", key, person.at)
        # Only the keys that went away or came: a change that keeps a person's e-mail
        # (the usual update) rewrites none of its rows.
        gone: list[tuple[str, str, str, str]] = []
        rows: list[tuple[str, str, str, str]] = []
        for p in people:
            before = set(held.get((p.kind, p.record_id), ()))
            after = {("email", key) for key in p.email_keys} | {
                ("phone", key) for key in p.phone_keys}
            gone.extend((kind, p.kind, p.record_id, key) for kind, key in sorted(before - after))
            rows.extend((kind, p.kind, p.record_id, key) for kind, key in sorted(after - before))
        if gone:
            await self.conn.execute(
                "DELETE FROM handshake.crm_keys k"
                " USING unnest($1::text[], $2::text[], $3::text[], $4::text[])"
                "  AS r(key_kind, kind, record_id, key)"
                " WHERE k.key_kind = r.key_kind AND k.key = r.key AND k.kind = r.kind"
                "  AND k.record_id = r.record_id",
                [r[0] for r in gone], [r[1] for r in gone], [r[2] for r in gone],
                [r[3] for r in gone])
        if rows:
            await self.conn.execute(
                INSERT_KEYS, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                [r[3] for r in rows])

    async def _refresh_standing(self, contacts_at: dict[str, dt.datetime]) -> None:
        """Deals changed: recompute their contacts' standing; keep the keys that moved."""
        if not contacts_at:
            return
        rows = await self.conn.fetch(
            "UPDATE handshake.crm_keys k SET standing = s.standing"
            " FROM (SELECT c AS record_id, handshake.contact_standing(c) AS standing"
            "       FROM unnest($1::text[]) AS c) s"
            " WHERE k.kind = 'contact' AND k.record_id = s.record_id"
            "   AND k.standing <> s.standing"
            " RETURNING k.key_kind, k.key, k.record_id",
            sorted(contacts_at))
        for row in rows:
            self._touch(row["key_kind"], row["key"], contacts_at[row["record_id"]])

    async def _write_tickets(self, old_rows: dict[str, Any]) -> list[tuple[str, str, str,
                                                                             dt.datetime, str]]:
        """Upsert the batch's tickets; return the removals to record as moves
        (department, ticket, from column, time, summary JSON)."""
        tickets = sorted(self.changes.tickets.values(), key=lambda t: t.ticket_id)
        if not tickets:
            return []
        removals: list[tuple[str, str, str, dt.datetime, str]] = []
        for ticket in tickets:
            old = old_rows.get(ticket.ticket_id)
            if old is None or old["board_column"] is None:
                continue
            if not ticket.on_board or old["department_id"] != ticket.department_id:
                summary = json.loads(old["summary"])
                summary["matched_by"] = old["matched_by"]
                removals.append((old["department_id"], ticket.ticket_id, old["board_column"],
                                 ticket.at, json.dumps(summary)))
        gone = [t.ticket_id for t in tickets if not t.on_board and t.ticket_id in old_rows]
        if gone:
            await self.conn.execute(
                "DELETE FROM handshake.board WHERE ticket_id = ANY($1::text[])", gone)
        staying = [t for t in tickets if t.on_board]
        if staying:
            # A ticket that changed department leaves one board and joins another:
            # its column is cleared here and set again by _place ("added").
            await self.conn.execute(
                "INSERT INTO handshake.board (ticket_id, department_id, board_column,"
                " email_key, phone_key, created_at, summary)"
                " SELECT r.ticket_id, r.department_id, NULL, r.email_key, r.phone_key,"
                "  r.created_at, r.summary"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                "  $5::timestamptz[], $6::jsonb[])"
                "  AS r(ticket_id, department_id, email_key, phone_key, created_at, summary)"
                " ON CONFLICT (ticket_id) DO UPDATE SET"
                "  department_id = EXCLUDED.department_id, email_key = EXCLUDED.email_key,"
                "  phone_key = EXCLUDED.phone_key, created_at = EXCLUDED.created_at,"
                "  summary = EXCLUDED.summary,"
                "  board_column = CASE WHEN board.department_id = EXCLUDED.department_id"
                "                      THEN board.board_column END,"
                "  matched_by = CASE WHEN board.department_id = EXCLUDED.department_id"
                "                    THEN board.matched_by END",
                [t.ticket_id for t in staying], [t.department_id for t in staying],
                [t.email_key for t in staying], [t.phone_key for t in staying],
                [t.created_at for t in staying], [json.dumps(t.summary) for t in staying])
        return removals

    async def _place(self, removals: list[tuple[str, str, str, dt.datetime, str]], *,
                     prune_before: dt.datetime) -> HandshakeStats:
        """Compute the column of every touched ticket; record and announce the moves."""
        staying = sorted((t for t in self.changes.tickets.values() if t.on_board),
                         key=lambda t: t.ticket_id)
        emails = sorted(self.email_at.items())
        phones = sorted(self.phone_at.items())
        row = await self.conn.fetchrow(
            _PLACE,
            [k for k, _ in emails], [at for _, at in emails],
            [k for k, _ in phones], [at for _, at in phones],
            [t.ticket_id for t in staying], [t.at for t in staying],
            [r[0] for r in removals], [r[1] for r in removals], [r[2] for r in removals],
            [r[3] for r in removals], [r[4] for r in removals],
            prune_before,
        )
        assert row is not None
        departments: list[str] = sorted(row["departments"])
        if departments:
            await self.conn.execute(
                "SELECT pg_notify($1, d) FROM unnest($2::text[]) AS d",
                NOTIFY_CHANNEL, departments)
        return HandshakeStats(examined=row["examined"], moves=row["moves"])


async def reset_stream(conn: Conn) -> None:
    """After a rebuild that changed the board: the move stream no longer leads to it,
    so it is cleared and ``pruned_through`` moved past it; every stream reader then
    reloads the board once (``projections.registry``)."""
    await conn.execute("DELETE FROM handshake.moves")
    await conn.execute("UPDATE handshake.stream_state SET pruned_through ="
                       " nextval(pg_get_serial_sequence('handshake.moves', 'seq'))")
