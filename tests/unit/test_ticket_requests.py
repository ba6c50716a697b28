"""The ticket actions' pure parts: the checks of an action's values, the permissions each
needs, the status automation's rule and a reply's recipients."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from projections.events import ChangeEvent
from projections.people import CrmUser
from projections.ticket_actions import automated_status, is_new_thread, reply_recipients
from projections.ticket_requests import (
    MAX_ATTACHMENT_BYTES,
    ActionInvalid,
    Create,
    Message,
    decode_action,
    parse,
    permissions_needed,
)

PDF = {"name": "a.pdf", "size": 10, "content_type": "application/pdf",
       "url": "https://x.example/a.pdf"}


def test_a_create_holds_one_contact_and_checked_attachments() -> None:
    """A create names an existing contact or a new one, never both or neither; its
    attachments are checked for size, type and place."""
    create = parse("create", {"subject": "S", "department_id": "3", "contact_id": "7",
                              "attachments": [PDF], "due_date": "2026-12-01T10:00:00Z"})
    assert isinstance(create, Create) and create.attachments[0].size == 10
    parse("create", {"subject": "S", "department_id": "3",
                     "new_contact": {"last_name": "Berg", "email": "b@x.example"}})
    for payload, words in [
        ({"subject": "S", "department_id": "3"}, "exactly one of contact_id"),
        ({"subject": "S", "department_id": "3", "contact_id": "7",
          "new_contact": {"last_name": "B"}}, "exactly one of contact_id"),
        ({"subject": " ", "department_id": "3", "contact_id": "7"}, "subject"),
        ({"subject": "S", "department_id": "x3", "contact_id": "7"}, "department_id"),
        ({"subject": "S", "department_id": "3", "contact_id": "7", "due_date": "soon"},
         "due_date"),
        ({"subject": "S", "department_id": "3", "contact_id": "7",
          "due_date": "2026-12-01T10:00:00"}, "zone"),
        ({"subject": "S", "department_id": "3", "contact_id": "7", "colour": "red"},
         "colour"),
    ]:
        with pytest.raises(ActionInvalid, match=words):
            parse("create", payload)


@pytest.mark.parametrize(("attachment", "words"), [
    ({**PDF, "size": MAX_ATTACHMENT_BYTES + 1}, "largest attachment"),
    ({**PDF, "size": -1}, "size"),
    ({**PDF, "content_type": "application/x-sh"}, "not allowed"),
    ({**PDF, "object_key": "k"}, "exactly one of url and object_key"),
    ({"name": "a", "size": 1, "content_type": "text/plain"}, "exactly one of url"),
    ({**PDF, "url": "ftp://x/a"}, "http"),
    ({**PDF, "name": ""}, "name"),
])
def test_attachments_out_of_bounds_are_refused(attachment: dict[str, Any], words: str) -> None:
    """Every attachment rule refuses what it must, naming the attachment."""
    with pytest.raises(ActionInvalid, match=words):
        parse("comment", {"content": "c", "attachments": [attachment]})


def test_the_largest_allowed_attachment_passes() -> None:
    """The size cap is inclusive, and content types are compared case-insensitively."""
    message = parse("reply", {"content": "c", "attachments": [
        {**PDF, "size": MAX_ATTACHMENT_BYTES, "content_type": "Application/PDF"}]})
    assert isinstance(message, Message)


def test_messages_and_their_addresses() -> None:
    """A comment names no address, a forward at least one, every address is one."""
    parse("forward", {"content": "c", "to": ["a@b.example"]})
    parse("reply", {"content": "c"})
    for kind, payload, words in [
        ("comment", {"content": "c", "to": ["a@b.example"]}, "users only"),
        ("forward", {"content": "c"}, "at least one"),
        ("reply", {"content": "c", "to": ["nobody"]}, "e-mail"),
        ("reply", {"content": ""}, "content"),
        ("reply", {"content": "a\x00b"}, "NUL"),
    ]:
        with pytest.raises(ActionInvalid, match=words):
            parse(kind, payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "words"), [
    ({}, "at least one"),
    ({"colour": "red"}, "not a ticket field"),
    ({"status": ""}, "mandatory field missing"),
    ({"department_id": "3"}, "text value given for an integer field"),
    ({"priority": 3}, "integer value given for a text field"),
    ({"due_date": 5}, "RFC 3339"),
    ({"custom.9bad": "x"}, "custom field key"),
    ({"custom.cf_region": ["a"]}, "one value"),
])
def test_an_update_is_checked_like_a_mapping(fields: dict[str, Any], words: str) -> None:
    """Field names from the ticket's catalogue, values of the field's type."""
    with pytest.raises(ActionInvalid, match=words):
        parse("update", {"fields": fields})


def test_the_permissions_each_action_needs() -> None:
    """Each kind its permission; an owner change is an assignment; the roles of OPS-06."""
    update = parse("update", {"fields": {"priority": "High"}})
    assign = parse("update", {"fields": {"owner": "kim"}})
    both = parse("update", {"fields": {"owner": "kim", "status": "Open"}})
    assert permissions_needed("update", update) == ["update"]
    assert permissions_needed("update", assign) == ["assign"]
    assert permissions_needed("update", both) == ["update", "assign"]
    unlink = parse("unlink_deal", {"deal_id": "5"})
    assert permissions_needed("unlink_deal", unlink) == ["link_deal"]
    agent = CrmUser("1", "A", "a@x", role="agent", desk_active=True)
    light = CrmUser("2", "L", "l@x", role="light_agent", desk_active=True)
    inactive = CrmUser("3", "I", "i@x", role="admin", desk_active=False)
    admin = CrmUser("4", "D", "d@x", role="admin", desk_active=True)
    assert [agent.missing(p) for p in ("comment", "reply", "forward", "assign")] == [
        None, None, None, "assign"]
    assert light.missing("reply") == "reply" and light.missing("comment") is None
    assert inactive.missing("close") == "close" and inactive.missing("comment") is None
    assert all(admin.missing(p) is None for p in ("create", "delete", "link_deal", "assign"))


def test_an_action_event_decodes_or_says_why_not() -> None:
    """The event's values: a UUID action id, a known kind, a payload of that kind."""
    action_id = str(uuid.uuid4())
    values = {"action_id": action_id, "kind": "close", "user_id": "7", "user_name": "Kim",
              "payload": {}}
    action, _payload = decode_action(values)
    assert action.action_id == action_id
    for broken, words in [({**values, "action_id": "x"}, "UUID"),
                          ({**values, "kind": "archive"}, "kind"),
                          ({**values, "payload": {"deal_id": "1"}}, "deal_id"),
                          ({k: v for k, v in values.items() if k != "user_id"}, "user_id")]:
        with pytest.raises(ActionInvalid, match=words):
            decode_action(broken)


@pytest.mark.parametrize(("status_type", "direction", "kind", "expected"), [
    ("On Hold", "in", "reply", "Open"),
    ("Closed", "in", "reply", "Open"),
    ("Escalated", "in", "reply", None),
    ("Open", "in", "reply", None),
    (None, "in", "reply", None),
    ("Open", "out", "reply", "On Hold"),
    ("On Hold", "out", "reply", None),
    ("Closed", "out", "reply", None),
    ("Open", "out", "comment", None),
    ("Open", "out", "forward", None),
])
def test_the_status_automation(status_type: str | None, direction: str, kind: str,
                               expected: str | None) -> None:
    """TICKET-10: the customer's message reopens what waits for them or was closed; an
    agent's reply to an open ticket puts it on hold; comments and forwards change nothing."""
    assert automated_status(status_type, direction, kind) == expected


def test_a_reply_goes_to_the_requester_and_its_addresses_once() -> None:
    """The requester first, then the named addresses, each once whatever the case."""
    assert reply_recipients("ana@x.example", ["b@x.example", "ANA@x.example"]) == [
        "ana@x.example", "b@x.example"]
    assert reply_recipients(None, ["b@x.example"]) == ["b@x.example"]


def test_only_a_persons_new_thread_drives_the_automation() -> None:
    """A thread created by a person (origin user) counts; the first sync's import, the
    sync's own writes, a thread's later edit and the CRM's events do not."""
    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)

    def thread(**fields: Any) -> ChangeEvent:
        base: dict[str, Any] = {"event_id": uuid.uuid4(), "source": "desk",
                                "module": "ticket_threads", "record_id": "9", "op": "create",
                                "values": {"ticket_id": 1, "direction": "in"},
                                "modified_at": now, "created_at": now, "origin": "user",
                                "captured_at": now}
        return ChangeEvent(**{**base, **fields})

    assert is_new_thread(thread())
    assert not is_new_thread(thread(origin="import"))
    assert not is_new_thread(thread(origin="sync"))
    assert not is_new_thread(thread(op="update"))
    assert not is_new_thread(thread(source="crm"))
    assert not is_new_thread(thread(module="tickets"))
