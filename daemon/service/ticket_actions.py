"""CRM users' ticket actions (TICKET-02, TICKET-03, TICKET-05): accept one, or say what
became of it.

Why it exists: an action asked for from the CRM is checked here — its values
(``projections.ticket_requests``), the ticket or department the user may see
(TICKET-08), the permission the user's role gives (OPS-06, TICKET-04) — and, when it
passes, appended to the CRM's outbox as a change event of module ``ticket_actions``,
under the action's id. Nothing else is written: the relay sends it to Kafka and the
``ticket_actions`` projection applies it to the desk, once. So the answer is "accepted"
(HTTP 202) with the action id, and ``action_outcome`` tells later whether it was applied
(with the ids the desk gave) or failed (with the reason).

The checks read the projections, never the desk: a ticket is found, with its
department, in the statistics projection (``ticket_stats.tickets``), a deal in the
board's (``handshake.deals``), a CRM contact's desk contact in the links. A ticket
deleted after the check is the projection's to fail, with a reason.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import msgspec

from daemon.service import NotFound, ServiceError
from projections.db import Conn
from projections.events import MAX_EVENT_BYTES, ChangeEvent
from projections.people import CrmUser, Permission, Visibility, may_see
from projections.stores.outbox import Outbox
from projections.ticket_actions import MODULE
from projections.ticket_requests import (
    ActionInvalid,
    Create,
    DealLink,
    Kind,
    parse,
    permissions_needed,
)

ID_LIMIT = 18
ENVELOPE_ROOM = 4096
"""Bytes the envelope adds around an action's values (ids, times, names), kept free."""


class Refused(ServiceError):
    """The acting user lacks ``permission`` (HTTP 403 ``needs_<permission>``): nothing
    was changed; the HTTP layer records the refusal in the audit trail."""

    status = 403

    def __init__(self, user: CrmUser, permission: Permission) -> None:
        super().__init__(f"needs_{permission}",
                         f"CRM user {user.id} may not {permission} (TICKET-04)",
                         permission=permission)
        self.permission = permission


def _record_id(value: str, name: str) -> str:
    if not value.isdigit() or len(value) > ID_LIMIT:
        raise NotFound("not_found", f"no {name} {value[:40]!r}")
    return value


async def _visible_ticket(conn: Conn, user: CrmUser, visibility: Visibility, ticket_id: str,
                          *, live: bool) -> None:
    row = await conn.fetchrow(
        "SELECT department_id, live FROM ticket_stats.tickets WHERE ticket_id = $1",
        _record_id(ticket_id, "ticket"))
    # A ticket the user may not see is answered as one that does not exist (TICKET-08).
    if (row is None or (live and not row["live"])
            or not may_see(user, visibility, row["department_id"])):
        raise NotFound("not_found", f"no ticket {ticket_id}")


async def _desk_contact(conn: Conn, crm_contact_id: str) -> str:
    desk_id = await conn.fetchval(
        "SELECT desk_id FROM sync.links WHERE module = 'contacts' AND crm_id = $1",
        _record_id(crm_contact_id, "CRM contact"))
    if desk_id is None:
        raise NotFound("not_linked", f"CRM contact {crm_contact_id} has no desk contact"
                       " (not synced yet?): choose a desk contact or type a new one")
    return str(desk_id)


async def submit(pool: asyncpg.Pool, user: CrmUser, visibility: Visibility, kind: Kind, *,
                 ticket_id: str | None, payload: dict[str, Any],
                 crm_module: str | None = None, crm_record: str | None = None
                 ) -> dict[str, Any]:
    """Check an action and append it to the CRM's outbox; the accepted action.

    ``ticket_id``: the ticket acted on (None for a create). A create names its contact
    as a desk contact (``contact_id``), a CRM contact (``crm_contact_id``, resolved to
    its linked desk contact; by default the CRM contact the ticket is created from), or
    a new contact (``new_contact``). Raises ``ServiceError``: 400 ``invalid_action``,
    404 (a ticket, department, deal or contact the user cannot act on), 403
    ``Refused``."""
    payload = dict(payload)
    async with pool.acquire() as conn, conn.transaction():
        if kind == "create":
            crm_contact = payload.pop("crm_contact_id", None)
            if crm_contact is None and crm_module == "contacts" and not (
                    payload.get("contact_id") or payload.get("new_contact")):
                crm_contact = crm_record  # a ticket created on a CRM contact is theirs
            if crm_contact is not None:
                payload["contact_id"] = await _desk_contact(conn, str(crm_contact))
            payload["crm_module"], payload["crm_record"] = crm_module, crm_record
        try:
            checked = parse(kind, payload)
        except ActionInvalid as err:
            raise ServiceError("invalid_action", str(err)) from None
        if isinstance(checked, Create):
            if not may_see(user, visibility, checked.department_id):
                raise NotFound("not_found", f"no department {checked.department_id}")
        else:
            assert ticket_id is not None
            await _visible_ticket(conn, user, visibility, ticket_id,
                                  live=kind != "unlink_deal")
        if isinstance(checked, DealLink) and kind == "link_deal" and await conn.fetchval(
                "SELECT stage FROM handshake.deals WHERE deal_id = $1",
                checked.deal_id) is None:
            raise NotFound("not_found", f"no deal {checked.deal_id}")
        for permission in permissions_needed(kind, checked):
            if user.missing(permission):
                raise Refused(user, permission)
        action_id = uuid.uuid4()
        values = {"action_id": str(action_id), "kind": kind, "user_id": user.id,
                  "user_name": user.name, "payload": payload}
        if len(msgspec.json.encode(values)) > MAX_EVENT_BYTES - ENVELOPE_ROOM:
            # The projector would reject the event as too large: refuse it now instead.
            raise ServiceError("invalid_action", "the action is too large for one event"
                               f" ({MAX_EVENT_BYTES} bytes): send less text or fewer"
                               " attachments")
        now = dt.datetime.now(dt.UTC)
        await Outbox(conn, "crm").append(ChangeEvent(
            event_id=action_id, source="crm", module=MODULE,
            record_id=ticket_id if ticket_id is not None else str(action_id), op="create",
            values=values,
            modified_at=now, created_at=now, origin="user", captured_at=now),
            keep_id=True)
    return {"action_id": str(action_id), "kind": kind, "ticket_id": ticket_id,
            "status": "pending"}


async def action_outcome(pool: asyncpg.Pool, action_id: str) -> dict[str, Any]:
    """What became of an action: ``pending`` (not applied yet), ``applied`` (with what
    the desk gave: ``result``) or ``failed`` (with the reason); NotFound for an id
    nobody asked for."""
    try:
        key = uuid.UUID(action_id)
    except ValueError:
        raise NotFound("not_found", f"no action {action_id[:40]!r}") from None
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        row = await conn.fetchrow(
            "SELECT kind, ticket_id, user_id, user_name, requested_at, outcome, reason,"
            " detail, result::text AS result FROM ticket_actions.actions WHERE action_id = $1",
            key)
        if row is None:
            waiting = await conn.fetchrow(
                "SELECT \"values\"->>'kind' AS kind, record_id FROM crm.outbox"
                " WHERE event_id = $1 AND module = $2", key, MODULE)
            if waiting is None:
                raise NotFound("not_found", f"no action {action_id}")
            return {"action_id": str(key), "kind": waiting["kind"], "status": "pending"}
    return {"action_id": str(key), "kind": row["kind"], "ticket_id": row["ticket_id"],
            "user_id": row["user_id"], "user_name": row["user_name"],
            "requested_at": row["requested_at"], "status": row["outcome"],
            "reason": row["reason"], "detail": row["detail"] or None,
            "result": json.loads(row["result"])}
