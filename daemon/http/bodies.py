"""The request bodies: strict msgspec structs, decoded once by the route table.

A malformed body is a 400 ``invalid_body`` naming the field, never a 500; a body
over :data:`MAX_BODY` is a 413. The OpenAPI document takes its schemas from these.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from daemon.http.errors import ApiError
from projections.ticket_requests import Attachment, NewContact

MAX_BODY = 256 * 1024
"""The largest body the API and the webhook intake take (the listener's own limit,
``server.CLIENT_MAX_SIZE``, is larger)."""

S = TypeVar("S", bound=msgspec.Struct)


class SetUp(msgspec.Struct, forbid_unknown_fields=True):
    desk_portal: str
    crm_org: str


class SyncType(msgspec.Struct, forbid_unknown_fields=True):
    sync_type: Literal["two_way", "crm_to_desk"]


class Mapping(msgspec.Struct, forbid_unknown_fields=True):
    entries: list[dict[str, str]] | None


class Matching(msgspec.Struct, forbid_unknown_fields=True):
    match_secondary_email: bool


class ProductsDepartment(msgspec.Struct, forbid_unknown_fields=True):
    department_id: int


class RelatedLists(msgspec.Struct, forbid_unknown_fields=True):
    modules: list[str]


class Retry(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[int] | None = None
    reason: str | None = None
    all: bool = False


class WebhookChange(msgspec.Struct, forbid_unknown_fields=True):
    """A change notification from a remote desk or CRM."""

    module: str
    record_id: str
    op: Literal["create", "update", "delete", "restore"]
    values: dict[str, Any]
    modified_at: dt.datetime
    created_at: dt.datetime | None = None
    changed: list[str] | None = None
    event_id: uuid.UUID | None = None


class ZohoCrmNotification(msgspec.Struct):
    """A Zoho CRM notification (``actions/watch``): which records of a module changed.
    Zoho sends more fields than these (``resource_uri``, ``query_params``, ...)."""

    channel_id: int | str
    module: str
    operation: str
    token: str | None = None
    ids: list[str] = []


async def read_raw(request: web.Request) -> bytes:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"body over {MAX_BODY} bytes")
    return raw


def decode(raw: bytes, kind: type[S]) -> S:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise ApiError(400, "invalid_body", str(err)) from None


async def body_of(request: web.Request, kind: type[S]) -> S:
    return decode(await read_raw(request), kind)


class CrmUserBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    email: str
    mutual: bool = False


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    role: str


class DeskAccount(msgspec.Struct, forbid_unknown_fields=True):
    active: bool


class Departments(msgspec.Struct, forbid_unknown_fields=True):
    departments: list[str]


class Signals(msgspec.Struct, forbid_unknown_fields=True):
    signals: list[str]


class TicketVisibility(msgspec.Struct, forbid_unknown_fields=True):
    visibility: str


class Profile(msgspec.Struct, forbid_unknown_fields=True):
    visible: bool = True
    shows: str = "contacts"
    access: dict[str, str] = msgspec.field(default_factory=dict)
    configures: bool = False


class TicketCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A ticket created from a CRM record (TICKET-02): its contact is a desk contact
    (``contact_id``), a CRM contact (``crm_contact_id``: its linked desk contact; by
    default the CRM contact the ticket is created on) or a new one (``new_contact``)."""

    subject: str
    department_id: str | int
    contact_id: str | int | None = None
    crm_contact_id: str | int | None = None
    new_contact: NewContact | None = None
    description: str | None = None
    priority: str | None = None
    due_date: str | None = None
    attachments: list[Attachment] = []


class TicketMessage(msgspec.Struct, forbid_unknown_fields=True):
    """A comment (users only), a reply (the requester, and ``to``) or a forward (``to``)."""

    content: str
    to: list[str] = []
    attachments: list[Attachment] = []


class TicketFields(msgspec.Struct, forbid_unknown_fields=True):
    """Ticket fields to set: subject, status, priority, owner, channel, department_id,
    due_date, custom.<key> (TICKET-03)."""

    fields: dict[str, Any]
