"""The handlers of CRM users' ticket actions (TICKET-02, TICKET-03, TICKET-05):
create, comment, reply, forward, update, close, delete, link to a deal, unlink, and
what became of an action (``daemon.service.ticket_actions``).

The CRM-side application calls with its token (role ``operator``) and names the person
in ``X-Syncd-Crm-User`` (``daemon.http.acting``). An accepted action is answered 202
with its id: the projector applies it to the desk after the answer, and
``GET /api/v1/ticket-actions/{action}`` says whether it was applied or failed, and why.
A permission the user lacks is a 403 ``needs_<permission>``, recorded in the audit
trail, with nothing else changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web

from daemon.http import bodies
from daemon.http.acting import named_user, require
from daemon.http.api import ApiContext
from daemon.service import ticket_actions
from projections.ticket_requests import Kind

log = structlog.get_logger(__name__)

CREATE_FROM = ("contacts", "accounts", "deals", "leads")
"""The CRM modules whose records a ticket can be created from."""


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _act(ctx: ApiContext, request: web.Request, kind: Kind, *, ticket_id: str | None,
               payload: dict[str, Any], target: str, crm_module: str | None = None,
               crm_record: str | None = None) -> web.Response:
    people = await ctx.integration.people()
    user = named_user(people, request)
    try:
        accepted = await ticket_actions.submit(
            ctx.pool, user, people.visibility, kind, ticket_id=ticket_id, payload=payload,
            crm_module=crm_module,
            crm_record=crm_record)
    except ticket_actions.Refused as refused:
        # Records the refusal in the audit trail and answers 403 needs_<permission>.
        await require(ctx.integration, request, user, refused.permission, action=kind,
                      target=target)
        raise
    log.info("ticket_action_accepted", action_id=accepted["action_id"], kind=kind,
             ticket_id=ticket_id, crm_user=user.id)
    return web.json_response(accepted, status=202, dumps=_dumps)


def _ticket(request: web.Request) -> str:
    return request.match_info["ticket"]


def _plain(body: msgspec.Struct) -> dict[str, Any]:
    return dict(msgspec.to_builtins(body))


async def create(ctx: ApiContext, request: web.Request, body: bodies.TicketCreate
                 ) -> web.Response:
    module, record = request.match_info["module"], request.match_info["record"]
    payload = _plain(body)
    for key in ("department_id", "contact_id", "crm_contact_id"):
        if payload.get(key) is not None:
            payload[key] = str(payload[key])
    return await _act(ctx, request, "create", ticket_id=None, payload=payload,
                      target=f"{module}/{record}", crm_module=module, crm_record=record)


def _on_ticket(kind: Kind, payload: Callable[[web.Request, Any], dict[str, Any]]
               ) -> Callable[[ApiContext, web.Request, Any], Awaitable[web.Response]]:
    """The handler of an action on the ticket the path names, its payload taken from
    the request and its body by ``payload``."""
    async def handle(ctx: ApiContext, request: web.Request, body: Any) -> web.Response:
        ticket = _ticket(request)
        return await _act(ctx, request, kind, ticket_id=ticket,
                          payload=payload(request, body), target=f"ticket {ticket}")

    handle.__name__ = handle.__qualname__ = kind
    return handle


def _body(_request: web.Request, body: msgspec.Struct) -> dict[str, Any]:
    return _plain(body)


def _nothing(_request: web.Request, _body: None) -> dict[str, Any]:
    return {}


def _deal(request: web.Request, _body: None) -> dict[str, Any]:
    return {"deal_id": request.match_info["deal"]}


comment = _on_ticket("comment", _body)
reply = _on_ticket("reply", _body)
forward = _on_ticket("forward", _body)
update = _on_ticket("update", _body)
close = _on_ticket("close", _nothing)
delete = _on_ticket("delete", _nothing)
link_deal = _on_ticket("link_deal", _deal)
unlink_deal = _on_ticket("unlink_deal", _deal)


async def outcome(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    return web.json_response(
        await ticket_actions.action_outcome(ctx.pool, request.match_info["action"]),
        dumps=lambda value: msgspec.json.encode(value, enc_hook=str).decode())
