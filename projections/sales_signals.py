"""The sales signals projection (TICKET-09): the desk's notifications for CRM users —
new ticket, new comment, new reply, overdue ticket, escalated ticket, new rating —
each tagged with whom it came from (a lead, a contact or a customer).

Why it exists: a sales person wants to know, without opening the desk, that one of
their leads, contacts or customers wrote in, was answered late, escalated or rated
the service ("SalesSignals" in the sources). Each signal is *decided* here, once, from
the event log alone, so a replay decides the same signals with the same ids and
sequence numbers (OWN-03); publishing them to Kafka and streaming them to users read
what this projection wrote (``adapters/signal_publisher.py``,
``daemon/service/signals.py``).

The signals and their causes (each id is ``uuid5`` of the cause, so one cause is one
signal however often its events are delivered or replayed):

* ``new_ticket``: a ticket's ``create`` event (cause: the ticket);
* ``new_comment``: a thread's ``create`` event, kind ``comment`` (cause: the thread);
* ``new_reply``: a thread's ``create`` event, kind ``reply``, direction ``in``: the
  customer's reply. The sources word every signal as coming *from* a lead, contact or
  customer ("nueva respuesta en un ticket por cliente potencial/contacto/cliente"); an
  agent's answer is not news for the sales person (cause: the thread);
* ``escalated_ticket``: a ticket event whose status type is Escalated when the ticket
  was not (cause: that event);
* ``new_rating``: a ticket event whose rating differs from the ticket's last one
  (cause: that event);
* ``overdue_ticket``: the projection's clock (the newest capture time of any event
  applied, the statistics' "as of": docs/tickets.md) passes an open ticket's due date;
  once per ticket and due date (cause: the pair). A due date moved later can fire again.

A signal's origin is the standing of its ticket's requester *at that event*
(``projections.standing``), from the CRM's contacts, leads and deals as this projection
has seen them so far in log order; a ticket whose requester is in no CRM record (the
board's ``new``) gives no signal: there is nobody in the CRM to tell about. Events of
the first sync (origin ``import``) update the state but cause no signal: an imported
ticket is not new.

Determinism: the events of a batch are walked one by one, in log order, with the
state read at the start of the batch, so how the log is cut into batches (live, or a
replay's chunks) changes nothing. Sequence numbers come from ``clock.last_seq``, whose
row is locked first and held to the commit: batches that decide signals pass one at a
time, so seq N is visible only after every seq before it (a reader following ``seq >
N`` never skips one), and a replay, which empties the row with the others, counts
from 1 again. This projection runs last of those that run while the sync plans, after
the board's moves lock and before the sync's writes, always in that order (no deadlock
between replicas).
"""

from __future__ import annotations

import datetime as dt
import heapq
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import msgspec

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.events import ChangeEvent
from projections.handshake import (
    deal_change,
    is_live,
    person_change,
    phone_key,
    record_ref,
    status_type,
)
from projections.keys import email_key
from projections.people import Origin, Signal
from projections.standing import Kind, origin, record_standing
from projections.ticket_stats import RATINGS, _moment

NAMESPACE = uuid.UUID("6f1b1c2e-5d0a-4c59-9a43-5a1e5d0c0917")
"""uuid5 namespace of signal ids (fixed forever: ids must survive replays and versions)."""

NOTIFY_CHANNEL = "sales_signals"
"""``pg_notify`` channel, fired on commit when signals were decided; payload: last seq."""


def signal_id(kind: Signal, cause: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{kind}:{cause}")


@dataclass(frozen=True, slots=True)
class TicketState:
    ticket_id: str
    live: bool
    status_type: str | None
    department_id: str | None
    subject: str | None
    email_key: str | None
    phone_key: str | None
    due_at: dt.datetime | None
    rating: str | None
    overdue_for: dt.datetime | None
    """The due date an overdue signal was decided for (once per ticket and due date)."""

    @property
    def overdue_pending(self) -> bool:
        return (self.live and self.status_type != "Closed" and self.due_at is not None
                and self.overdue_for != self.due_at)


@dataclass(frozen=True, slots=True)
class PersonState:
    kind: Kind
    record_id: str
    email_keys: tuple[str, ...]
    phone_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SignalRow:
    id: uuid.UUID
    kind: Signal
    ticket_id: str
    department_id: str | None
    origin: Origin
    subject: str | None
    at: dt.datetime
    event_id: uuid.UUID | None
    """The event that caused it (an overdue signal: the event that moved the clock)."""


@dataclass(frozen=True, slots=True)
class WaitingThread:
    """A comment or customer reply logged before its ticket: its signal is decided when
    the ticket comes (a ticket and its threads have different keys, so different
    partitions; a hosted desk's poll reads them apart)."""

    thread_id: str
    ticket_id: str
    kind: Signal
    at: dt.datetime
    event_id: uuid.UUID | None


SIGNAL_COLUMNS = "seq, id, kind, ticket_id, department_id, origin, subject, at, event_id"


def signal_json(row: Any) -> dict[str, Any]:
    """A ``sales_signals.signals`` row (``SIGNAL_COLUMNS``) as the API, the stream and the
    Kafka topic carry it."""
    return {"seq": row["seq"], "id": str(row["id"]), "kind": row["kind"],
            "ticket_id": row["ticket_id"], "department_id": row["department_id"],
            "origin": row["origin"], "subject": row["subject"], "at": row["at"].isoformat(),
            "event_id": None if row["event_id"] is None else str(row["event_id"])}


def ticket_state(event: ChangeEvent, earlier: TicketState | None) -> TicketState:
    values = event.values
    rating = values.get("rating")
    subject = values.get("subject")
    return TicketState(
        ticket_id=event.record_id, live=is_live(event), status_type=status_type(values),
        department_id=record_ref(values.get("department_id")),
        subject=subject if isinstance(subject, str) else None,
        email_key=email_key(values.get("requester_email")),
        phone_key=phone_key(values.get("requester_phone")),
        due_at=_moment(values.get("due_date")),
        rating=rating if rating in RATINGS else None,
        overdue_for=None if earlier is None else earlier.overdue_for)


class State:
    """What the derivation reads and changes: tickets, CRM people and deals (the part a
    batch can touch), and the clock. Pure: no I/O; ``derive`` walks events through it."""

    def __init__(self, *, clock: dt.datetime | None = None,
                 tickets: Iterable[TicketState] = (), people: Iterable[PersonState] = (),
                 deals: Iterable[tuple[str, str | None, str]] = (),
                 waiting: Iterable[WaitingThread] = ()) -> None:
        self.clock = clock
        self.decided: set[uuid.UUID] = set()
        """Signal ids decided by this walk (a cause met twice signals once)."""
        self.tickets = {t.ticket_id: t for t in tickets}
        self.people: dict[tuple[Kind, str], PersonState] = {}
        self.deals: dict[str, tuple[str | None, str]] = {}
        # Who holds each key and each contact's deals: an origin is looked up, not
        # searched for (a rebuild holds every CRM person of the log here).
        self._holders: dict[tuple[bool, str], set[tuple[Kind, str]]] = {}
        self._stages: dict[str, dict[str, str]] = {}
        for person in people:
            self._hold(person)
        for deal_id, contact, stage in deals:
            self._deal(deal_id, contact, stage)
        self.gone_people: set[tuple[str, str]] = set()
        self.changed_people: set[tuple[Kind, str]] = set()
        self.gone_deals: set[str] = set()
        self.changed_deals: set[str] = set()
        self.touched: set[str] = set()
        self.waiting: dict[str, dict[str, WaitingThread]] = {}
        for thread in waiting:
            self.waiting.setdefault(thread.ticket_id, {})[thread.thread_id] = thread
        self.waiting_touched: set[str] = set()
        """Tickets whose waiting threads changed (rewritten by ``write_state``)."""
        self._due: list[tuple[dt.datetime, str]] = []
        for ticket in self.tickets.values():
            self._watch(ticket)

    def _hold(self, person: PersonState) -> None:
        key = (person.kind, person.record_id)
        self._let_go(key)
        self.people[key] = person
        holders = self._holders
        for email, keys in ((True, person.email_keys), (False, person.phone_keys)):
            for found in keys:
                held = holders.get((email, found))
                if held is None:  # not setdefault: it made an empty set for every key
                    holders[(email, found)] = {key}
                else:
                    held.add(key)

    def _let_go(self, key: tuple[Kind, str]) -> None:
        person = self.people.pop(key, None)
        if person is None:
            return
        for email, keys in ((True, person.email_keys), (False, person.phone_keys)):
            for found in keys:
                holders = self._holders[(email, found)]
                holders.discard(key)
                if not holders:
                    del self._holders[(email, found)]

    def _deal(self, deal_id: str, contact: str | None, stage: str | None) -> None:
        """Sets a deal (``stage`` None: drops it)."""
        before = self.deals.pop(deal_id, None)
        if before is not None and before[0] is not None:
            stages = self._stages[before[0]]
            del stages[deal_id]
            if not stages:
                del self._stages[before[0]]
        if stage is not None:
            self.deals[deal_id] = (contact, stage)
            if contact is not None:
                self._stages.setdefault(contact, {})[deal_id] = stage

    def put_person(self, person: PersonState) -> None:
        key = (person.kind, person.record_id)
        self._hold(person)
        self.gone_people.discard(key)
        self.changed_people.add(key)

    def drop_person(self, key: tuple[Kind, str]) -> None:
        self._let_go(key)
        self.gone_people.add(key)
        self.changed_people.discard(key)

    def put_deal(self, deal_id: str, contact: str | None, stage: str) -> None:
        self._deal(deal_id, contact, stage)
        self.gone_deals.discard(deal_id)
        self.changed_deals.add(deal_id)

    def drop_deal(self, deal_id: str) -> None:
        self._deal(deal_id, None, None)
        self.gone_deals.add(deal_id)
        self.changed_deals.discard(deal_id)

    def move_clock(self, at: dt.datetime) -> bool:
        """The clock is the newest capture time of any event walked; whether it moved."""
        if self.clock is None or at > self.clock:
            self.clock = at
            return True
        return False

    def _watch(self, ticket: TicketState) -> None:
        if ticket.overdue_pending and ticket.due_at is not None:
            heapq.heappush(self._due, (ticket.due_at, ticket.ticket_id))

    def put_ticket(self, ticket: TicketState) -> None:
        self.tickets[ticket.ticket_id] = ticket
        self.touched.add(ticket.ticket_id)
        self._watch(ticket)

    def wait(self, thread: WaitingThread) -> None:
        self.waiting.setdefault(thread.ticket_id, {})[thread.thread_id] = thread
        self.waiting_touched.add(thread.ticket_id)

    def forget(self, ticket_id: str, thread_id: str) -> None:
        if self.waiting.get(ticket_id, {}).pop(thread_id, None) is not None:
            self.waiting_touched.add(ticket_id)

    def release(self, ticket_id: str) -> list[WaitingThread]:
        """The threads waiting for ``ticket_id``, in log order; none wait after."""
        released = list(self.waiting.pop(ticket_id, {}).values())
        if released:
            self.waiting_touched.add(ticket_id)
        return released

    def waiting_rows(self) -> list[WaitingThread]:
        return [t for threads in self.waiting.values() for t in threads.values()]

    def origin_of(self, ticket: TicketState) -> Origin | None:
        def held(key: str | None, email: bool) -> list[tuple[Kind, int]]:
            if key is None:
                return []
            return [(kind, record_standing(kind, self._stages.get(record_id, {}).values()))
                    for kind, record_id in self._holders.get((email, key), ())]

        return origin(held(ticket.email_key, True), held(ticket.phone_key, False))

    def watching(self) -> bool:
        """Whether any due date is watched: while none is, no clock can fire a signal."""
        return bool(self._due)

    def may_fire(self) -> bool:
        """Whether the clock has passed a watched due date: ``overdue`` may find a
        ticket (a due date changed since it was watched is passed over there)."""
        return bool(self._due) and self.clock is not None and self._due[0][0] < self.clock

    def overdue(self) -> list[TicketState]:
        """Tickets whose due date the clock has passed, once each, by due date."""
        found: list[TicketState] = []
        while self._due and self.clock is not None and self._due[0][0] < self.clock:
            due_at, ticket_id = heapq.heappop(self._due)
            ticket = self.tickets[ticket_id]
            if ticket.due_at == due_at and ticket.overdue_pending:
                ticket = replace(ticket, overdue_for=due_at)
                self.tickets[ticket_id] = ticket
                self.touched.add(ticket_id)
                found.append(ticket)
        return found


def derive(state: State, events: Iterable[ChangeEvent]) -> list[SignalRow]:
    """The signals ``events`` cause, in order, changing ``state`` as they go."""
    signals: list[SignalRow] = []
    for event in events:
        state.move_clock(event.captured_at)
        take(state, event, signals)
        fire_overdue(state, event.event_id, signals)
    return signals


def _emit(state: State, signals: list[SignalRow], kind: Signal, cause: str,
          ticket: TicketState, at: dt.datetime, event_id: uuid.UUID | None) -> None:
    came_from = state.origin_of(ticket)
    sid = signal_id(kind, cause)
    # One cause, one signal (``apply`` drops those of earlier batches).
    if came_from is not None and sid not in state.decided:
        state.decided.add(sid)
        signals.append(SignalRow(sid, kind, ticket.ticket_id, ticket.department_id,
                                 came_from, ticket.subject, at, event_id))


def fire_overdue(state: State, event_id: uuid.UUID | None, signals: list[SignalRow]) -> None:
    """The overdue signals of the clock as it stands, caused by the event that moved it."""
    for ticket in state.overdue():
        assert ticket.due_at is not None
        _emit(state, signals, "overdue_ticket",
              f"{ticket.ticket_id}@{ticket.due_at.isoformat()}", ticket, ticket.due_at,
              event_id)


PEOPLE_MODULES = (("crm", "contacts"), ("crm", "leads"))
"""The modules whose events are a CRM person's (``about_person``)."""

MODULES_READ = (*PEOPLE_MODULES, ("crm", "deals"),
                ("desk", "tickets"), ("desk", "ticket_threads"))
"""The modules ``take`` reads; of every other event only its time counts (the clock)."""


def about_person(event: ChangeEvent) -> bool:
    """An event of a CRM contact or lead: ``take`` only sets that person's keys from it
    (the last such event of a person decides them; it causes no signal itself)."""
    return (event.source, event.module) in PEOPLE_MODULES


def take(state: State, event: ChangeEvent, signals: list[SignalRow]) -> None:
    """What one event changes of the state, and the signals it causes itself (the clock
    is moved, and overdue signals fired, by the caller)."""
    news = event.origin != "import" and is_live(event)
    if about_person(event):
        kind: Kind = "contact" if event.module == "contacts" else "lead"
        person = person_change(kind, event.record_id, event.values, live=is_live(event),
                               at=event.captured_at)
        if person.live:
            state.put_person(PersonState(kind, event.record_id, person.email_keys,
                                         person.phone_keys))
        else:
            state.drop_person((kind, event.record_id))
    elif event.source == "crm" and event.module == "deals":
        deal = deal_change(event)
        if deal.live:
            state.put_deal(deal.deal_id, deal.contact_id, deal.stage)
        else:
            state.drop_deal(deal.deal_id)
    elif event.source == "desk" and event.module == "tickets":
        before = state.tickets.get(event.record_id)
        ticket = ticket_state(event, before)
        state.put_ticket(ticket)
        if news and event.op == "create":
            _emit(state, signals, "new_ticket", event.record_id, ticket, event.captured_at,
                  event.event_id)
        if news and ticket.status_type == "Escalated" and (
                before is None or before.status_type != "Escalated"):
            _emit(state, signals, "escalated_ticket", str(event.event_id), ticket,
                  event.captured_at, event.event_id)
        if news and ticket.rating is not None and (
                before is None or before.rating != ticket.rating):
            _emit(state, signals, "new_rating", str(event.event_id), ticket,
                  event.captured_at, event.event_id)
        for waited in state.release(event.record_id):
            if ticket.live:
                _emit(state, signals, waited.kind, waited.thread_id, ticket, waited.at,
                      waited.event_id)
    elif event.source == "desk" and event.module == "ticket_threads":
        ticket_id = record_ref(event.values.get("ticket_id")) or ""
        parent = state.tickets.get(ticket_id)
        thread_kind = event.values.get("kind", "reply")
        signal: Signal | None = None
        if thread_kind == "comment":
            signal = "new_comment"
        elif thread_kind == "reply" and event.values.get("direction") == "in":
            signal = "new_reply"
        if not is_live(event):
            state.forget(ticket_id, event.record_id)
        elif news and event.op == "create" and signal is not None and ticket_id:
            # (A thread naming no ticket waits for none: nothing would ever release it,
            # and a batch's state reads only the waiting threads of the tickets it names.)
            if parent is None:
                state.wait(WaitingThread(event.record_id, ticket_id, signal,
                                         event.captured_at, event.event_id))
            elif parent.live:
                _emit(state, signals, signal, event.record_id, parent, event.captured_at,
                      event.event_id)


def ticket_ids(events: Iterable[ChangeEvent]) -> set[str]:
    """The tickets a batch names: its tickets and its threads' tickets."""
    found: set[str] = set()
    for event in events:
        if event.source == "desk" and event.module == "tickets":
            found.add(event.record_id)
        elif event.source == "desk" and event.module == "ticket_threads":
            ref = record_ref(event.values.get("ticket_id"))
            if ref is not None:
                found.add(ref)
    return found


class SalesSignalsProjection:
    """Keeps ``sales_signals.*``; see the module docstring."""

    name = "signals"
    reads_events_only = True  # runs while the sync plans (projections.batch.PlansBeside)

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        """Decide the batch's signals and write them with the state they leave. Nothing
        here can fail an event: its report is always empty."""
        if not events:
            return NOTHING_TO_REPORT
        batch = [item.event for item in events]
        # The clock row first, locked to the commit: it orders the batches (seq).
        await conn.execute("INSERT INTO sales_signals.clock (one, at, last_seq)"
                           " VALUES (true, NULL, 0) ON CONFLICT (one) DO NOTHING")
        clock = await conn.fetchrow(
            "SELECT at, last_seq FROM sales_signals.clock FOR UPDATE")
        assert clock is not None
        state = await _load(conn, batch, clock=_aware(clock["at"]))
        signals = derive(state, batch)
        if signals:
            # A cause met again in a later batch (a record created twice under one id:
            # deleted for good, then created again; a due date moved away and back) is
            # not a second signal; within the batch ``derive`` already keeps one.
            known = {r["id"] for r in await conn.fetch(
                "SELECT id FROM sales_signals.signals WHERE id = ANY($1::uuid[])",
                [s.id for s in signals])}
            signals = [s for s in signals if s.id not in known]
        await write_state(conn, state)
        last_seq = await write_signals(conn, signals, after=clock["last_seq"])
        await conn.execute("UPDATE sales_signals.clock SET at = $1, last_seq = $2",
                           state.clock, last_seq)
        return NOTHING_TO_REPORT


async def write_signals(conn: Conn, signals: Sequence[SignalRow], *, after: int) -> int:
    """Append ``signals`` numbered from ``after + 1`` and wake the stream; the last seq."""
    if not signals:
        return after
    await conn.execute(
        "INSERT INTO sales_signals.signals (seq, id, kind, ticket_id, department_id,"
        " origin, subject, at, event_id)"
        " SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[],"
        "  $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::uuid[])",
        list(range(after + 1, after + 1 + len(signals))),
        [s.id for s in signals], [s.kind for s in signals],
        [s.ticket_id for s in signals], [s.department_id for s in signals],
        [s.origin for s in signals], [s.subject for s in signals],
        [s.at for s in signals], [s.event_id for s in signals])
    last_seq = after + len(signals)
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last_seq))
    return last_seq


_TICKET_COLUMNS = ("ticket_id, live, status_type, department_id, subject, email_key,"
                   " phone_key, due_at, rating, overdue_for")


def _aware(value: Any) -> Any:
    """A time read back with its zone. asyncpg gives the earliest time PostgreSQL holds
    (0001-01-01, which an event may carry) as ``datetime.min`` without one, which no
    zoned time compares with."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _ticket(row: Any) -> TicketState:
    return TicketState(**{f.name: _aware(row[f.name]) for f in fields(TicketState)})


async def _load(conn: Conn, batch: list[ChangeEvent], *, clock: dt.datetime | None
                ) -> State:
    """The part of the state the batch can read: its tickets, the tickets the batch's
    newest time can make overdue, the CRM people holding any of those tickets' keys (or
    changed by the batch) and those people's deals (or the batch's)."""
    newest = max(e.captured_at for e in batch)
    rows = await conn.fetch(
        f"SELECT {_TICKET_COLUMNS} FROM sales_signals.tickets WHERE ticket_id = ANY($1::text[])"
        f" UNION SELECT {_TICKET_COLUMNS} FROM sales_signals.tickets"
        "  WHERE live AND due_at < $2 AND status_type IS DISTINCT FROM 'Closed'"
        "  AND overdue_for IS DISTINCT FROM due_at",
        sorted(ticket_ids(batch)), newest)
    tickets = [_ticket(row) for row in rows]
    emails = {t.email_key for t in tickets} | {
        email_key(e.values.get("requester_email")) for e in batch if e.module == "tickets"}
    phones = {t.phone_key for t in tickets} | {
        phone_key(e.values.get("requester_phone")) for e in batch if e.module == "tickets"}
    changed = sorted({("contact" if e.module == "contacts" else "lead", e.record_id)
                      for e in batch if e.source == "crm" and e.module in ("contacts", "leads")})
    # Three lookups, each by its index (one OR of the three read the whole table).
    people = await conn.fetch(
        "SELECT kind, record_id, email_keys, phone_keys FROM sales_signals.people"
        " WHERE email_keys && $1::text[]"
        " UNION SELECT kind, record_id, email_keys, phone_keys FROM sales_signals.people"
        " WHERE phone_keys && $2::text[]"
        " UNION SELECT p.kind, p.record_id, p.email_keys, p.phone_keys"
        " FROM sales_signals.people p JOIN unnest($3::text[], $4::text[]) AS c(kind, record_id)"
        " ON p.kind = c.kind AND p.record_id = c.record_id",
        sorted(k for k in emails if k), sorted(k for k in phones if k),
        [kind for kind, _ in changed], [rid for _, rid in changed])
    contacts = sorted({r["record_id"] for r in people if r["kind"] == "contact"}
                      | {rid for kind, rid in changed if kind == "contact"})
    deals = await conn.fetch(
        "SELECT deal_id, contact_id, stage FROM sales_signals.deals"
        " WHERE contact_id = ANY($1::text[]) OR deal_id = ANY($2::text[])",
        contacts, sorted({e.record_id for e in batch
                          if e.source == "crm" and e.module == "deals"}))
    waiting = await conn.fetch(
        "SELECT thread_id, ticket_id, kind, at, event_id FROM sales_signals.waiting_threads"
        " WHERE ticket_id = ANY($1::text[]) ORDER BY ticket_id, position",
        sorted(ticket_ids(batch)))
    return State(
        clock=clock, tickets=tickets,
        waiting=[WaitingThread(r["thread_id"], r["ticket_id"], r["kind"], _aware(r["at"]),
                               r["event_id"]) for r in waiting],
        people=[PersonState(r["kind"], r["record_id"], tuple(r["email_keys"]),
                            tuple(r["phone_keys"])) for r in people],
        deals=[(r["deal_id"], r["contact_id"], r["stage"]) for r in deals])


async def write_state(conn: Conn, state: State) -> None:
    """What ``state`` changed: the tickets it touched, the waiting threads, people and
    deals it put or dropped."""
    tickets = sorted((state.tickets[t] for t in state.touched), key=lambda t: t.ticket_id)
    if tickets:
        await conn.execute(
            f"INSERT INTO sales_signals.tickets ({_TICKET_COLUMNS})"
            " SELECT * FROM unnest($1::text[], $2::boolean[], $3::text[], $4::text[],"
            "  $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[],"
            "  $10::timestamptz[])"
            " ON CONFLICT (ticket_id) DO UPDATE SET live = EXCLUDED.live,"
            "  status_type = EXCLUDED.status_type, department_id = EXCLUDED.department_id,"
            "  subject = EXCLUDED.subject, email_key = EXCLUDED.email_key,"
            "  phone_key = EXCLUDED.phone_key, due_at = EXCLUDED.due_at,"
            "  rating = EXCLUDED.rating, overdue_for = EXCLUDED.overdue_for",
            *([getattr(t, f.name) for t in tickets] for f in fields(TicketState)))
    if state.waiting_touched:
        await conn.execute(
            "DELETE FROM sales_signals.waiting_threads WHERE ticket_id = ANY($1::text[])",
            sorted(state.waiting_touched))
        waiting = [(position, thread) for ticket_id in sorted(state.waiting_touched)
                   for position, thread in enumerate(state.waiting.get(ticket_id, {}).values())]
        if waiting:
            await conn.execute(
                "INSERT INTO sales_signals.waiting_threads"
                " (thread_id, ticket_id, kind, at, event_id, position)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
                "  $5::uuid[], $6::integer[])",
                [t.thread_id for _, t in waiting], [t.ticket_id for _, t in waiting],
                [t.kind for _, t in waiting], [t.at for _, t in waiting],
                [t.event_id for _, t in waiting], [p for p, _ in waiting])
    gone = sorted(state.gone_people)
    if gone:
        await conn.execute(
            "DELETE FROM sales_signals.people WHERE (kind, record_id) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[]))",
            [kind for kind, _ in gone], [rid for _, rid in gone])
    people = [state.people[key] for key in sorted(state.changed_people)]
    if people:
        encode = msgspec.json.encode
        # Key arrays differ in length, which one array of them cannot hold: each is
        # passed as a JSON array (one statement for the batch, not one a person),
        # encoded by msgspec (the json module took a tenth of a replay's signals walk).
        await conn.execute(
            "INSERT INTO sales_signals.people (kind, record_id, email_keys, phone_keys)"
            " SELECT kind, record_id,"
            "  ARRAY(SELECT jsonb_array_elements_text(emails)),"
            "  ARRAY(SELECT jsonb_array_elements_text(phones))"
            " FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[])"
            "  AS p(kind, record_id, emails, phones)"
            " ON CONFLICT (kind, record_id) DO UPDATE"
            " SET email_keys = EXCLUDED.email_keys, phone_keys = EXCLUDED.phone_keys",
            [p.kind for p in people], [p.record_id for p in people],
            [encode(p.email_keys).decode() for p in people],
            [encode(p.phone_keys).decode() for p in people])
    if state.gone_deals:
        await conn.execute("DELETE FROM sales_signals.deals WHERE deal_id = ANY($1::text[])",
                           sorted(state.gone_deals))
    deals = [(deal_id, state.deals[deal_id]) for deal_id in sorted(state.changed_deals)]
    if deals:
        await conn.execute(
            "INSERT INTO sales_signals.deals (deal_id, contact_id, stage)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " ON CONFLICT (deal_id) DO UPDATE SET contact_id = EXCLUDED.contact_id,"
            "  stage = EXCLUDED.stage",
            [d for d, _ in deals], [c for _, (c, _) in deals], [s for _, (_, s) in deals])


async def reset_stream(conn: Conn) -> None:
    """After a rebuild that changed the signals: what was published before cannot be
    taken back; the publisher goes back to the last signal that still exists, so none
    of the rebuilt ones is left unpublished (their ids let consumers drop repeats)."""
    await conn.execute(
        "UPDATE sales_signals.published SET through = least(through,"
        " (SELECT coalesce(max(seq), 0) FROM sales_signals.signals))")
