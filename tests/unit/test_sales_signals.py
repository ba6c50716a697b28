"""The sales signals' derivation (TICKET-09), pure: each kind from its cause, once; its
origin from the requester's CRM standing at that event; overdue by event time."""

from __future__ import annotations

import uuid
from typing import Any

from projections.events import ChangeEvent
from projections.sales_signals import SignalRow, State, derive, signal_id
from projections.standing import origin
from tests.support.events import BASE_TIME, change

MIN = 60


def ticket(rid: str, at: float, *, op: str = "update", origin_: str = "user",
           **values: Any) -> ChangeEvent:
    base = {"department_id": 7, "subject": f"t{rid}", "status": "Open",
            "requester_email": "ana@example.com"}
    return change(module="tickets", record_id=rid, op=op, at=at, origin=origin_,
                  values={**base, **values})


def thread(rid: str, ticket_id: str, at: float, *, kind: str, direction: str,
           op: str = "create") -> ChangeEvent:
    return change(module="ticket_threads", record_id=rid, op=op, at=at,
                  values={"ticket_id": int(ticket_id), "kind": kind, "direction": direction,
                          "content": "x"})


def contact(rid: str, at: float, email: str = "Ana@Example.com", **values: Any
            ) -> ChangeEvent:
    return change(source="crm", module="contacts", record_id=rid, at=at,
                  values={"email": email, **values})


def lead(rid: str, at: float, email: str = "ana@example.com") -> ChangeEvent:
    return change(source="crm", module="leads", record_id=rid, at=at, values={"email": email})


def deal(rid: str, contact_id: str, stage: str, at: float) -> ChangeEvent:
    return change(source="crm", module="deals", record_id=rid, at=at,
                  values={"contact_id": contact_id, "stage": stage})


def kinds(signals: list[SignalRow]) -> list[tuple[str, str, str]]:
    return [(s.kind, s.ticket_id, s.origin) for s in signals]


def test_each_kind_from_its_cause_with_the_origin_at_that_moment() -> None:
    """A lead's new ticket, then (a contact now) a comment, a customer reply, an agent
    reply (no signal), an escalation, a rating; the origin follows the CRM as it goes."""
    events = [
        lead("L1", 0), ticket("1", 1, op="create"),
        contact("C1", 2), thread("11", "1", 3, kind="comment", direction="out"),
        deal("D1", "C1", "open", 4), thread("12", "1", 5, kind="reply", direction="in"),
        thread("13", "1", 6, kind="reply", direction="out"),
        deal("D1", "C1", "won", 7), ticket("1", 8, status="Escalated"),
        ticket("1", 9, status="Escalated", rating="good"),
    ]
    signals = derive(State(), events)
    assert kinds(signals) == [
        ("new_ticket", "1", "lead"), ("new_comment", "1", "contact"),
        ("new_reply", "1", "contact"), ("escalated_ticket", "1", "customer"),
        ("new_rating", "1", "customer")]
    assert signals[0].id == signal_id("new_ticket", "1")
    assert signals[1].id == signal_id("new_comment", "11")
    assert signals[3].id == signal_id("escalated_ticket", str(events[8].event_id))
    assert all(s.department_id == "7" for s in signals)
    assert signals[4].at == events[9].captured_at


def test_once_per_cause() -> None:
    """Staying escalated, keeping a rating, a thread's update: nothing new; a changed
    rating and a second escalation are new causes."""
    events = [contact("C1", 0), ticket("1", 1, op="create", status="Escalated"),
              ticket("1", 2, status="Escalated", subject="again"),
              thread("11", "1", 3, kind="comment", direction="out"),
              thread("11", "1", 4, kind="comment", direction="out", op="update"),
              ticket("1", 5, status="Open", rating="bad"), ticket("1", 6, rating="bad"),
              ticket("1", 7, rating="good"), ticket("1", 8, status="Escalated", rating="good")]
    assert [s.kind for s in derive(State(), events)] == [
        "new_ticket", "escalated_ticket", "new_comment", "new_rating", "new_rating",
        "escalated_ticket"]


def test_a_cause_met_again_signals_once() -> None:
    """A ticket and a thread created twice under one id, a due date moved away and
    back: one signal each."""
    due = BASE_TIME.replace(hour=12, minute=30).isoformat()
    other = BASE_TIME.replace(hour=12, minute=40).isoformat()
    events = [contact("C1", 0), ticket("1", 1, op="create", due_date=due),
              thread("11", "1", 2, kind="comment", direction="out"),
              change(module="tickets", record_id="1", op="delete", at=3),
              ticket("1", 4, op="create", due_date=due),
              thread("11", "1", 5, kind="comment", direction="out"),
              lead("L9", 31 * MIN, email="x@example.com"),
              ticket("1", 32 * MIN, due_date=other), lead("L9", 41 * MIN, email="y@a.com"),
              ticket("1", 42 * MIN, due_date=due), lead("L9", 50 * MIN, email="z@a.com")]
    signals = derive(State(), events)
    assert [s.kind for s in signals] == [
        "new_ticket", "new_comment", "overdue_ticket", "overdue_ticket"]
    assert [s.at.isoformat() for s in signals[2:]] == [due, other]


def test_no_origin_no_signal_and_imports_are_not_news() -> None:
    """A stranger's ticket decides nothing; a first sync's import neither."""
    events = [ticket("1", 0, op="create"), contact("C1", 1, email="bo@example.com"),
              ticket("2", 2, op="create", origin_="import", requester_email="bo@example.com")]
    assert derive(State(), events) == []


def test_overdue_by_event_time_once_per_due_date() -> None:
    """The clock is the events' capture time: an open ticket goes overdue when an event
    later than its due date arrives (equal is not later), once per due date; a moved
    due date can fire again; a closed ticket never."""
    due = (BASE_TIME.replace(hour=13)).isoformat()  # 60 minutes after the base time
    later = (BASE_TIME.replace(hour=15)).isoformat()
    state = State()
    first = derive(state, [contact("C1", 0), ticket("1", 1, op="create", due_date=due),
                           ticket("2", 2, op="create", due_date=due, status="Closed"),
                           lead("L9", 60 * MIN, email="x@example.com")])
    assert [s.kind for s in first] == ["new_ticket", "new_ticket"]
    second = derive(state, [lead("L9", 60 * MIN + 1, email="y@example.com"),
                            lead("L9", 61 * MIN, email="z@example.com")])
    assert kinds(second) == [("overdue_ticket", "1", "contact")]
    assert second[0].at.isoformat() == due
    assert second[0].id == signal_id("overdue_ticket", f"1@{due}")
    assert derive(state, [lead("L9", 120 * MIN, email="w@example.com")]) == []
    moved = derive(state, [ticket("1", 121 * MIN, due_date=later),
                           lead("L9", 181 * MIN, email="v@example.com")])
    assert [s.kind for s in moved] == ["overdue_ticket"]


def test_the_cut_into_batches_changes_nothing() -> None:
    """One run over every event and runs over pieces decide the same signals, given the
    state each piece leaves (what a batch reads from the tables)."""
    due = BASE_TIME.replace(hour=12, minute=30).isoformat()
    events = [lead("L1", 0), ticket("1", 1, op="create", due_date=due),
              contact("C1", 2), deal("D1", "C1", "won", 3),
              thread("11", "1", 4, kind="reply", direction="in"),
              lead("L2", 45 * MIN, email="q@example.com"),
              ticket("1", 46 * MIN, status="Escalated")]
    whole = derive(State(), events)
    state = State()
    pieces = [s for part in (events[:2], events[2:5], events[5:]) for s in derive(state, part)]
    assert pieces == whole
    assert kinds(whole)[-2:] == [("overdue_ticket", "1", "customer"),
                                 ("escalated_ticket", "1", "customer")]


def test_origin_is_the_handshake_rule_told_apart_by_kind() -> None:
    """E-mail matches decide before phone ones; a won deal makes a customer; a contact
    beats a lead at the same standing."""
    assert origin([], []) is None
    assert origin([("lead", 1)], []) == "lead"
    assert origin([("lead", 1), ("contact", 1)], []) == "contact"
    assert origin([("contact", 2)], [("contact", 3)]) == "contact"
    assert origin([], [("contact", 3)]) == "customer"
    assert origin([("lead", 1), ("contact", 3)], []) == "customer"


def test_ids_are_stable() -> None:
    """An id is uuid5 of the kind and the cause, the same in every run."""
    assert signal_id("new_ticket", "1") == uuid.uuid5(
        uuid.UUID("6f1b1c2e-5d0a-4c59-9a43-5a1e5d0c0917"), "new_ticket:1")


def test_a_thread_logged_before_its_ticket_signals_when_the_ticket_comes() -> None:
    """A ticket and its threads travel under different keys (different partitions, and a
    hosted desk's poll reads threads and tickets apart): a customer's reply or a comment
    logged before its ticket waits for it and is signalled when it comes, at its own
    time, once; an agent's answer still gives nothing, and a thread of a deleted ticket
    neither."""
    events = [contact("C1", 0), thread("11", "1", 1, kind="comment", direction="out"),
              thread("12", "1", 2, kind="reply", direction="in"),
              thread("13", "1", 3, kind="reply", direction="out"),
              ticket("1", 4, op="create"), ticket("1", 5, subject="again"),
              thread("21", "2", 6, kind="comment", direction="out"),
              change(module="tickets", record_id="2", op="delete", at=7)]
    signals = derive(State(), events)
    assert kinds(signals) == [("new_ticket", "1", "contact"), ("new_comment", "1", "contact"),
                              ("new_reply", "1", "contact")]
    assert [s.at for s in signals[1:]] == [events[1].captured_at, events[2].captured_at]
    assert [s.id for s in signals[1:]] == [signal_id("new_comment", "11"),
                                           signal_id("new_reply", "12")]
    # Cut anywhere, with the waiting threads carried over as a batch's state is.
    for cut in range(len(events)):
        first = State()
        head = derive(first, events[:cut])
        carried = State(tickets=first.tickets.values(),
                        people=first.people.values(), waiting=first.waiting_rows())
        assert kinds(head + derive(carried, events[cut:])) == kinds(signals), cut
