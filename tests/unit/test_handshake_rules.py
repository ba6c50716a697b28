"""The handshake projection's pure rules: match keys, status types, batch reduction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.handshake import collect, phone_key, status_type
from tests.support.events import change


@pytest.mark.parametrize(("written", "key"), [
    ("+33 6 12 34 56 78", "612345678"),
    ("0033 612345678", "612345678"),
    ("06.12.34.56.78", "612345678"),
    ("(+34) 612-345-678", "612345678"),
    ("612 345 678", "612345678"),
    ("+1 (555) 123-4567", "551234567"),
    ("555-123-4567", "551234567"),
    ("+44 20 7946 0958", "079460958"),
    ("020 7946 0958", "079460958"),
    ("+351 21 234 5678 ext. 12", "212345678"),
    ("212345678 x9", "212345678"),
    ("212345678;ext=9", "212345678"),
    (612345678, "612345678"),
])
def test_phone_numbers_written_differently_share_a_key(written: object, key: str) -> None:
    """HS-02: +/00 prefixes, trunk 0, punctuation and extensions fold to the last 9 digits."""
    assert phone_key(written) == key


@pytest.mark.parametrize("junk", [None, "", "   ", "12 34", "0 123 45", "ext. 123456789",
                                  True, 3.5, {"n": 1}, "+", "00"])
def test_short_or_non_numbers_have_no_phone_key(junk: object) -> None:
    """HS-02: fewer than 7 digits, or no number at all, matches nobody."""
    assert phone_key(junk) is None


@given(st.text(alphabet="0123456789", min_size=9, max_size=12).filter(
    lambda d: not d.startswith("0")))
def test_international_and_national_forms_agree(national: str) -> None:
    """HS-02: a number of 9 or more national digits gets one key in every form."""
    assert phone_key(f"+33 {national}") == phone_key(f"0033{national}") \
        == phone_key(f"0{national}") == phone_key(national) == national[-9:]


def test_status_type_prefers_the_stores_resolution() -> None:
    """HS-03: the store's resolved status type wins; without one, standard names count."""
    assert status_type({"status": "Awaiting reply", "status_type": "Open"}) == "Open"
    assert status_type({"status": "Open", "status_type": None}) is None
    assert status_type({"status": " on HOLD "}) == "On Hold"
    assert status_type({"status": "Awaiting reply"}) is None
    assert status_type({"status": "Open", "status_type": "Bogus"}) is None


def test_a_batch_keeps_each_records_last_state() -> None:
    """HS-05: a record changed twice in one batch counts by its last event."""
    changes = collect([
        change(source="desk", module="tickets", record_id="7", at=1,
               values={"department_id": 3, "status": "Open", "requester_email": "A@x.org"}),
        change(source="desk", module="tickets", record_id="7", op="update", at=2,
               values={"department_id": 3, "status": "Closed", "requester_email": "A@x.org"}),
        change(source="crm", module="contacts", record_id="1", at=1,
               values={"email": " Ann@X.org", "secondary_email": "ann@x.org",
                       "phone": "+33 612345678", "mobile": "0612345678"}),
        change(source="crm", module="accounts", record_id="1", values={"account_name": "A"}),
    ])
    ticket = changes.tickets["7"]
    assert (ticket.on_board, ticket.department_id, ticket.email_key) == (False, "3", "a@x.org")
    person = changes.people[("contact", "1")]
    assert (person.live, person.email_keys, person.phone_keys) == (
        True, ("ann@x.org",), ("612345678",))
    assert not changes.deals and not changes.departments


def test_what_does_not_count_in_the_crm() -> None:
    """HS-01: converted leads, binned or deleted records and unknown deal stages do not count."""
    changes = collect([
        change(source="crm", module="leads", record_id="1",
               values={"email": "l@x.org", "converted": True}),
        change(source="crm", module="leads", record_id="2",
               values={"email": "m@x.org", "deleted": True}),
        change(source="crm", module="contacts", record_id="3", op="delete",
               values={"email": "c@x.org", "deleted": False, "hard_deleted": True}),
        change(source="crm", module="deals", record_id="4",
               values={"stage": "closed won", "contact_id": 3}),
        change(source="crm", module="deals", record_id="5",
               values={"stage": " Won ", "contact_id": 3}),
    ])
    assert [p.live for p in changes.people.values()] == [False, False, False]
    assert all(not p.email_keys for p in changes.people.values())
    assert (changes.deals["4"].live, changes.deals["5"].live) == (False, True)
    assert (changes.deals["5"].stage, changes.deals["5"].contact_id) == ("won", "3")


def test_tickets_need_an_open_status_and_a_department() -> None:
    """HS-03, HS-04: only live tickets in an Open-type status and a department are on a board."""
    def on_board(op: str = "create", **values: object) -> bool:
        event = change(source="desk", module="tickets", record_id="1", op=op,
                       values={"department_id": 1, "status": "Open", **values})
        return collect([event]).tickets["1"].on_board

    assert on_board()
    assert on_board(status="Waiting", status_type="Open")
    assert not on_board(department_id=None)
    assert not on_board(status="Escalated")
    assert not on_board(deleted=True)
    assert not on_board(op="delete")
