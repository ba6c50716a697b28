"""What a CRM user's ticket action says (TICKET-02, TICKET-03, TICKET-05), and its checks.

Why it exists: an action travels as the values of a CRM change event (module
``ticket_actions``), from the API that accepts it to the projection that applies it to
the desk (``projections.ticket_actions``). Both ends check it with the same code here:
the API so that bad input is a clear 400 and changes nothing, the projection so that an
event that does not hold together (written by another producer, or by an older version)
becomes a failure with a reason instead of a half-applied action.

The envelope's values::

    {"action_id": "<uuid>", "kind": "reply", "user_id": "7", "user_name": "Ana",
     "payload": {...}}

and each kind's payload is a struct below. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, get_args

import msgspec

from projections.catalog import IDENTIFIER, Field
from projections.mapping import value_problem
from projections.people import Permission

Kind = Literal["create", "comment", "reply", "forward", "update", "close", "delete",
               "link_deal", "unlink_deal"]
KINDS: tuple[Kind, ...] = get_args(Kind)

PERMISSION: dict[Kind, Permission] = {
    "create": "create", "comment": "comment", "reply": "reply", "forward": "forward",
    "update": "update", "close": "close", "delete": "delete", "link_deal": "link_deal",
    "unlink_deal": "link_deal",
}
"""The permission each kind needs (``projections.people.ROLE_PERMISSIONS``). An update
of the owner is an assignment: it needs ``assign`` (and ``update`` too when it sets
other fields as well: ``permissions_needed``)."""

MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
"""The largest attachment, as Zoho Desk takes one per file (20 MB)."""
MAX_ATTACHMENTS = 10
CONTENT_TYPES = frozenset({
    "application/pdf", "application/zip", "application/json", "application/xml",
    "application/msword", "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "text/plain", "text/csv", "text/html", "message/rfc822",
    "image/png", "image/jpeg", "image/gif", "image/webp",
})
"""Content types an attachment may have: documents, text, mail and images; no
executables or scripts (a file the desk would hand to its customers)."""
MAX_CONTENT = 64 * 1024
"""The longest comment, reply or forward text (characters)."""

TICKET_FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("subject", "text", mandatory=True),
    Field("status", "text", mandatory=True),
    Field("priority", "text"),
    Field("owner", "text"),
    Field("channel", "text"),
    Field("department_id", "integer", mandatory=True),
)}
"""The desk ticket's fields an update may set, typed as the mapping's catalogue types
them (``projections.catalog``), besides ``due_date`` (an RFC 3339 time with a zone, or
null) and custom fields (``custom.<key>``: text, a number, a boolean or null). The
requester, contact and times are not fields a CRM user sets."""
DUE_DATE = "due_date"


class ActionInvalid(ValueError):
    """The action does not hold together; the message says which field and why."""


class Attachment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file by reference: the desk keeps its name, size, type and where it is (a URL
    or an object key of the file store), never its bytes."""

    name: str
    size: int
    content_type: str
    url: str | None = None
    object_key: str | None = None


class NewContact(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A contact typed in the create form: it becomes a new desk contact (which the sync
    then creates in the CRM and links, like any new desk contact)."""

    last_name: str
    first_name: str | None = None
    email: str | None = None
    phone: str | None = None


class Create(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    subject: str
    department_id: str
    contact_id: str | None = None
    """An existing desk contact (the API resolves a CRM contact to its linked one)."""
    new_contact: NewContact | None = None
    description: str | None = None
    priority: str | None = None
    due_date: str | None = None
    crm_module: str | None = None
    crm_record: str | None = None
    """The CRM record the ticket was created from (kept on the action, not the ticket)."""
    attachments: list[Attachment] = []


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A comment, reply or forward. ``to``: a forward's addresses (required), a reply's
    further addresses (besides the requester); a comment takes none."""

    content: str
    to: list[str] = []
    attachments: list[Attachment] = []


class Update(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fields: dict[str, Any]


class DealLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    deal_id: str


class Nothing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Close and delete take no payload."""


Payload = Create | Message | Update | DealLink | Nothing

PAYLOADS: dict[Kind, type[Payload]] = {
    "create": Create, "comment": Message, "reply": Message, "forward": Message,
    "update": Update, "close": Nothing, "delete": Nothing, "link_deal": DealLink,
    "unlink_deal": DealLink,
}


class Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The values of a ``ticket_actions`` event."""

    action_id: str
    kind: Kind
    user_id: str
    user_name: str
    payload: dict[str, Any]


def parse_time(value: object, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ActionInvalid(f"{name}: an RFC 3339 time, not {type(value).__name__}")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ActionInvalid(f"{name}: {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ActionInvalid(f"{name}: the time must carry a zone")
    return moment


def _text(value: str, name: str, *, limit: int = 255, empty: bool = False) -> None:
    if not empty and not value.strip():
        raise ActionInvalid(f"{name}: must not be empty")
    if len(value) > limit:
        raise ActionInvalid(f"{name}: at most {limit} characters")
    if "\x00" in value:
        raise ActionInvalid(f"{name}: NUL character")


def _id(value: str, name: str) -> None:
    if not value.isdigit() or len(value) > 18:
        raise ActionInvalid(f"{name}: a record id (digits), not {value[:40]!r}")


def _email(value: str, name: str) -> None:
    _text(value, name)
    if value.count("@") != 1 or value.startswith("@") or value.endswith("@") or " " in value:
        raise ActionInvalid(f"{name}: {value[:80]!r} is not an e-mail address")


def check_attachments(attachments: list[Attachment]) -> None:
    """Size, type and place of each attachment (``MAX_ATTACHMENT_BYTES``, ``CONTENT_TYPES``,
    exactly one of ``url`` and ``object_key``)."""
    if len(attachments) > MAX_ATTACHMENTS:
        raise ActionInvalid(f"attachments: at most {MAX_ATTACHMENTS}")
    for n, item in enumerate(attachments):
        where = f"attachments[{n}]"
        _text(item.name, f"{where}.name")
        if not 0 <= item.size <= MAX_ATTACHMENT_BYTES:
            raise ActionInvalid(f"{where}.size: {item.size} bytes; the largest attachment"
                                f" is {MAX_ATTACHMENT_BYTES} bytes")
        if item.content_type.lower() not in CONTENT_TYPES:
            raise ActionInvalid(f"{where}.content_type: {item.content_type[:80]!r} is not"
                                f" allowed (allowed: {', '.join(sorted(CONTENT_TYPES))})")
        if (item.url is None) == (item.object_key is None):
            raise ActionInvalid(f"{where}: give exactly one of url and object_key")
        if item.url is not None:
            _text(item.url, f"{where}.url", limit=2000)
            if not item.url.startswith(("https://", "http://")):
                raise ActionInvalid(f"{where}.url: an http(s) URL")
        if item.object_key is not None:
            _text(item.object_key, f"{where}.object_key", limit=1024)


def check_fields(fields: dict[str, Any]) -> None:
    """An update's fields, by the desk ticket's catalogue (``TICKET_FIELDS``)."""
    if not fields:
        raise ActionInvalid("fields: name at least one field")
    for name, value in fields.items():
        if name == DUE_DATE:
            parse_time(value, name)
            continue
        if name.startswith("custom."):
            if not IDENTIFIER.match(name.removeprefix("custom.")):
                raise ActionInvalid(f"{name}: not a valid custom field key")
            if isinstance(value, (dict, list)):
                raise ActionInvalid(f"{name}: a custom field holds one value")
            if isinstance(value, str):
                _text(value, name, limit=4000, empty=True)
            continue
        target = TICKET_FIELDS.get(name)
        if target is None:
            raise ActionInvalid(f"{name}: not a ticket field (fields: {', '.join(TICKET_FIELDS)},"
                                f" {DUE_DATE}, custom.<key>)")
        problem = value_problem(value, target)
        if problem is not None:
            raise ActionInvalid(f"{name}: {problem}")
        if isinstance(value, str):
            _text(value, name)


def check(kind: Kind, payload: Payload) -> None:
    """The checks the struct's types do not make; ``ActionInvalid`` if one fails."""
    if isinstance(payload, Create):
        _text(payload.subject, "subject")
        _id(payload.department_id, "department_id")
        if (payload.contact_id is None) == (payload.new_contact is None):
            raise ActionInvalid("give exactly one of contact_id and new_contact")
        if payload.contact_id is not None:
            _id(payload.contact_id, "contact_id")
        if payload.new_contact is not None:
            _text(payload.new_contact.last_name, "new_contact.last_name")
            if payload.new_contact.email is not None:
                _email(payload.new_contact.email, "new_contact.email")
        if payload.description is not None:
            _text(payload.description, "description", limit=MAX_CONTENT)
        if payload.priority is not None:
            _text(payload.priority, "priority")
        for name, value in (("crm_module", payload.crm_module),
                            ("crm_record", payload.crm_record)):
            if value is not None:
                _text(value, name, limit=200)
        parse_time(payload.due_date, DUE_DATE)
        check_attachments(payload.attachments)
    elif isinstance(payload, Message):
        _text(payload.content, "content", limit=MAX_CONTENT)
        if kind == "comment" and payload.to:
            raise ActionInvalid("to: a comment goes to users only")
        if kind == "forward" and not payload.to:
            raise ActionInvalid("to: a forward needs at least one address")
        for n, address in enumerate(payload.to):
            _email(address, f"to[{n}]")
        check_attachments(payload.attachments)
    elif isinstance(payload, Update):
        check_fields(payload.fields)
    elif isinstance(payload, DealLink):
        _id(payload.deal_id, "deal_id")


def parse(kind: Kind, payload: object) -> Payload:
    """A kind's payload from plain data, checked; ``ActionInvalid`` says why not."""
    try:
        value = msgspec.convert(payload, type=PAYLOADS[kind])
    except msgspec.ValidationError as err:
        raise ActionInvalid(str(err)) from None
    check(kind, value)
    return value


def permissions_needed(kind: Kind, payload: Payload) -> list[Permission]:
    """What the acting user needs: the kind's permission; for an update, ``update`` for
    any field but the owner and ``assign`` for the owner (OPS-06: assigning is the
    Admin's)."""
    if not isinstance(payload, Update):
        return [PERMISSION[kind]]
    needed: list[Permission] = []
    if set(payload.fields) - {"owner"}:
        needed.append("update")
    if "owner" in payload.fields:
        needed.append("assign")
    return needed


def decode_action(values: dict[str, Any]) -> tuple[Action, Payload]:
    """An action event's values, checked; ``ActionInvalid`` says why not."""
    try:
        action = msgspec.convert(values, type=Action)
    except msgspec.ValidationError as err:
        raise ActionInvalid(str(err)) from None
    try:
        uuid.UUID(action.action_id)
    except ValueError:
        raise ActionInvalid(f"action_id: {action.action_id[:40]!r} is not a UUID") from None
    return action, parse(action.kind, action.payload)
