"""The route table: every path the API answers, once.

Each entry names the method, the path, who may call it (a token role, a webhook
signature, or anyone), the body it takes (a msgspec struct, decoded and checked
before the handler runs), the handler and a summary. ``server.build_app`` makes
the aiohttp routes from the table and ``openapi.document`` the OpenAPI document,
so the two cannot disagree.

A handler is ``async (context, request, body) -> response``: the admin API's take
an ``api.ApiContext``, the board's a ``board.BoardContext``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import msgspec
from aiohttp import web

from daemon.http import (
    API_PREFIX,
    BOARD_PREFIX,
    api,
    board,
    bodies,
    crm_view,
    people,
    signals,
    tickets,
)
from daemon.http.auth import RANK, Authorize, Profiles, may_configure
from daemon.runtime.settings import Role

C = TypeVar("C")

Access = Literal["viewer", "operator", "admin", "configure", "signature", "public"]
"""A token role (and those above it); ``configure``: a change of the integration's
configuration (PERM-04): an admin, or an operator whose token is bound to a desk
profile with the integration permission (``auth.may_configure``); ``signature``: an
HMAC-signed webhook, checked by its handler over the raw body; ``public``: anyone."""
CrmUserHeader = Literal["required", "optional"] | None


@dataclass(frozen=True)
class Route(Generic[C]):
    method: str  # lower case, as OpenAPI writes it: get, post, put, delete
    path: str
    role: Access
    body: type[msgspec.Struct] | None
    handler: Callable[[C, web.Request, Any], Awaitable[web.StreamResponse]]
    summary: str
    crm_user: CrmUserHeader = None
    """Whether the route acts for a CRM user named in ``X-Syncd-Crm-User``
    (``daemon.http.acting``): ``required``, ``optional`` (naming one narrows the answer
    to what the user may see), or None (the header means nothing here)."""


def _api(method: str, path: str, role: Access, body: type[msgspec.Struct] | None,
         handler: Callable[[api.ApiContext, web.Request, Any], Awaitable[web.StreamResponse]],
         summary: str, *, crm_user: CrmUserHeader = None) -> Route[api.ApiContext]:
    return Route(method, path, role, body, handler, summary, crm_user)


def _board(method: str, path: str, role: Access,
           handler: Callable[[board.BoardContext, web.Request, Any],
                             Awaitable[web.StreamResponse]],
           summary: str) -> Route[board.BoardContext]:
    return Route(method, BOARD_PREFIX + path, role, None, handler, summary)


_I = f"{API_PREFIX}/integration"
_P = f"{API_PREFIX}/people"

API_ROUTES: list[Route[api.ApiContext]] = [
    _api("get", f"{API_PREFIX}/openapi.json", "public", None, api.openapi_json,
         "This document"),
    _api("get", f"{API_PREFIX}/status", "viewer", None, api.status,
         "Paused or running, consumer lag, last applied event"),
    _api("get", _I, "viewer", None, api.integration_state, "The integration's configuration"),
    _api("post", _I, "admin", bodies.SetUp, api.set_up,
         "Set up: one desk portal per CRM organisation"),
    _api("put", f"{_I}/sync-type", "configure", bodies.SyncType, api.sync_type,
         "Two-way or one-way CRM → desk"),
    _api("post", f"{_I}/legacy-import", "admin", None, api.legacy_import,
         "Start a legacy one-way import"),
    _api("post", f"{_I}/switch-to-sync", "admin", None, api.switch_to_sync,
         "Switch an import to sync (final)"),
    _api("put", f"{_I}/mapping/{{module}}", "configure", bodies.Mapping, api.mapping,
         "Field mapping of a module"),
    _api("put", f"{_I}/matching", "configure", bodies.Matching, api.matching, "Matching options"),
    _api("put", f"{_I}/products-department", "configure", bodies.ProductsDepartment,
         api.products_department, "Department for products"),
    _api("put", f"{_I}/related-lists", "configure", bodies.RelatedLists, api.related_lists,
         "CRM modules whose records list their tickets (TICKET-01; only modules with an"
         " e-mail field)"),
    _api("post", f"{_I}/pause", "operator", None, api.pause, "Pause sync (capture goes on)"),
    _api("post", f"{_I}/resume", "operator", None, api.resume,
         "Resume and apply what accumulated"),
    _api("delete", _I, "admin", None, api.delete, "Delete the integration"),
    _api("get", f"{_I}/audit", "viewer", None, api.audit, "Who changed what, when"),
    _api("get", _P, "viewer", None, people.listing,
         "CRM users (mutual users marked), desk profiles, ticket visibility (OPS-06)"),
    _api("get", f"{_P}/me", "viewer", None, people.me,
         "The acting CRM user (X-Syncd-Crm-User) and what the user may do",
         crm_user="required"),
    _api("put", f"{_P}/users/{{user}}", "admin", bodies.CrmUserBody, people.record_user,
         "Record a CRM user the integration knows (mutual: in the desk already)"),
    _api("put", f"{_P}/users/{{user}}/role", "admin", bodies.RoleBody, people.invite,
         "Invite a CRM user to the desk with a role, or change it (OPS-06)"),
    _api("put", f"{_P}/users/{{user}}/desk-account", "admin", bodies.DeskAccount,
         people.desk_account,
         "The user's desk account active or not (without one: comment only, TICKET-04)"),
    _api("put", f"{_P}/users/{{user}}/departments", "admin", bodies.Departments,
         people.departments, "The desk departments a CRM user belongs to (TICKET-08)"),
    _api("put", f"{_P}/users/{{user}}/signals", "operator", bodies.Signals, people.signals,
         "The sales signals a CRM user enabled (TICKET-09): an admin's, or the user's own",
         crm_user="optional"),
    _api("put", f"{_P}/ticket-visibility", "admin", bodies.TicketVisibility,
         people.ticket_visibility,
         "CRM users see all departments' tickets, or their own departments' (TICKET-08)"),
    _api("put", f"{_P}/profiles/{{profile}}", "admin", bodies.Profile, people.set_profile,
         "Define or change a desk profile's view of the CRM (PERM-01 … PERM-03)"),
    _api("delete", f"{_P}/profiles/{{profile}}", "admin", None, people.remove_profile,
         "Remove a desk profile"),
    _api("get", f"{API_PREFIX}/history", "viewer", None, api.history,
         "Seven-day history per day (?tz=)"),
    _api("get", f"{API_PREFIX}/failures", "viewer", None, api.failures,
         "Failure log (?status=&reason=&module=&limit=&offset=)"),
    _api("post", f"{API_PREFIX}/failures/retry", "operator", bodies.Retry, api.retry,
         "Retry by ids, by reason, or all"),
    _api("get", f"{API_PREFIX}/crm/{{module:contacts|accounts|deals}}/{{record}}/statistics",
         "viewer", None, api.customer_statistics,
         "Customer statistics of a CRM contact, account or deal (its linked tickets):"
         " tickets, overdue, average first response and resolution, ratings (TICKET-06)"),
    _api("get", f"{API_PREFIX}/crm/{{module}}/{{record}}/tickets", "viewer", None,
         api.related_tickets,
         "A CRM contact's, account's, deal's or lead's (by its e-mail) tickets, newest first"
         " (?filter=overdue|closed|escalated|high_priority&limit=&offset=; TICKET-01, TICKET-07;"
         " naming a CRM user: the tickets the user sees, TICKET-08)", crm_user="optional"),
    _api("get", f"{API_PREFIX}/signals", "viewer", None, signals.page,
         "Sales signals of the CRM user named by X-Syncd-Crm-User that the user may see"
         " and enabled, after a sequence number (?after=&limit=; TICKET-09)",
         crm_user="required"),
    _api("get", f"{API_PREFIX}/signals/stream", "viewer", None, signals.stream,
         "Server-sent events: each sales signal the CRM user (X-Syncd-Crm-User) may see"
         " and enabled, once, in order (Last-Event-ID resumes; TICKET-09)",
         crm_user="required"),
    _api("get", f"{API_PREFIX}/crm-view/{{module:contacts|accounts}}/{{record}}", "viewer",
         None, crm_view.crm_view_of,
         "What a desk profile sees of the CRM for a desk contact or account (?profile=NAME;"
         " PERM-01 … PERM-03): 404 with the reason when it sees nothing"),
    _api("post", "/webhooks/{source:desk|crm}", "signature", bodies.WebhookChange,
         api.webhook, "Change notification (HMAC-SHA256)"),
    _api("post", "/webhooks/zoho-crm", "signature", bodies.ZohoCrmNotification,
         api.zoho_crm_notification, "Zoho CRM notification (its channel token)"),
    _api("get", "/webhooks/zoho-desk", "public", None, api.zoho_desk_validation,
         "Zoho Desk's check of the webhook URL (200)"),
    _api("post", "/webhooks/zoho-desk", "signature", None, api.zoho_desk_webhook,
         "Zoho Desk webhook callback (the URL's token): captured, then answered"),
]
"""The admin API and the webhook intake."""

_T = f"{API_PREFIX}/tickets/{{ticket}}"
_ACTED = " (202 with the action id; X-Syncd-Crm-User names who acts)"
API_ROUTES += [
    _api("post", f"{API_PREFIX}/crm/{{module:contacts|accounts|deals|leads}}/{{record}}/tickets",
         "operator", bodies.TicketCreate, tickets.create,
         "Create a ticket from a CRM record: an existing or a new contact, attachments by"
         " reference (TICKET-02)" + _ACTED, crm_user="required"),
    _api("post", f"{_T}/comments", "operator", bodies.TicketMessage, tickets.comment,
         "Comment on a ticket (users only; TICKET-03, TICKET-10)" + _ACTED,
         crm_user="required"),
    _api("post", f"{_T}/replies", "operator", bodies.TicketMessage, tickets.reply,
         "Reply to the requester (and to; TICKET-03, TICKET-10)" + _ACTED,
         crm_user="required"),
    _api("post", f"{_T}/forwards", "operator", bodies.TicketMessage, tickets.forward,
         "Forward a ticket to addresses (TICKET-03)" + _ACTED, crm_user="required"),
    _api("patch", _T, "operator", bodies.TicketFields, tickets.update,
         "Set ticket fields: priority, status, owner, due date, … (TICKET-03)" + _ACTED,
         crm_user="required"),
    _api("post", f"{_T}/close", "operator", None, tickets.close,
         "Close a ticket (TICKET-03)" + _ACTED, crm_user="required"),
    _api("delete", _T, "operator", None, tickets.delete,
         "Delete a ticket (to the desk's recycle bin; TICKET-03)" + _ACTED,
         crm_user="required"),
    _api("put", f"{_T}/deals/{{deal}}", "operator", None, tickets.link_deal,
         "Link a ticket to a CRM deal: an open deal raises its priority (TICKET-05)"
         + _ACTED, crm_user="required"),
    _api("delete", f"{_T}/deals/{{deal}}", "operator", None, tickets.unlink_deal,
         "Unlink a ticket from a CRM deal (TICKET-05)" + _ACTED, crm_user="required"),
    _api("get", f"{API_PREFIX}/ticket-actions/{{action}}", "viewer", None, tickets.outcome,
         "What became of a ticket action: pending, applied (with the desk's ids) or"
         " failed (with the reason)"),
]

BOARD_ROUTES: list[Route[board.BoardContext]] = [
    _board("get", "/{department}", "viewer", board.board,
           "The handshake board: open tickets by the customer's CRM standing (?limit=)"),
    _board("get", "/{department}/stream", "viewer", board.stream,
           "Server-sent events: board, then each move (added, moved, removed) once, in order"),
    _board("post", "/{department}/tickets/{ticket}/close", "operator", board.close,
           "Close a ticket from the board (a person's edit of the desk store)"),
    _board("post", "/{department}/tickets/{ticket}/replies", "operator", board.reply,
           "Reply to a ticket from the board: {content, author?}"),
]
"""The handshake board (HS-04 … HS-07)."""


def aiohttp_routes(table: Sequence[Route[C]], context: C, authorize: Authorize,
                   profiles: Profiles | None = None) -> list[web.RouteDef]:
    """The aiohttp routes of ``table``: each checks the caller's role with ``authorize``
    (and, for ``configure``, the caller's desk profile in ``profiles``; without them,
    ``configure`` needs ``admin``), decodes the body into the entry's struct, then calls
    the handler."""
    return [web.route(r.method.upper(), r.path, _handler(r, context, authorize, profiles))
            for r in table]


def _handler(route: Route[C], context: C, authorize: Authorize, profiles: Profiles | None
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    role = cast(Role, route.role) if route.role in RANK else None
    configures = route.role == "configure"
    if configures:  # an operator may pass, then only through a profile that configures
        role = "operator" if profiles is not None else "admin"
    decoded = route.body if route.role != "signature" else None  # signed first, then decoded

    async def handle(request: web.Request) -> web.StreamResponse:
        if role is not None:
            authorize(request, role)
        if configures and profiles is not None:
            await may_configure(request, profiles)
        body = None if decoded is None else await bodies.body_of(request, decoded)
        return await route.handler(context, request, body)

    handle.__name__ = handle.__qualname__ = route.handler.__name__
    return handle
