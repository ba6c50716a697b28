"""The admin API's handlers (OPS-01 … OPS-05) and the webhook intake.

Each handler gets its context, the request and its decoded body (the route table
authorises and decodes first), calls a use case of ``daemon.service`` and shapes
the answer. The paths, roles and bodies are in ``routes.py``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
import structlog
from aiohttp import web

from adapters.integration_store import IntegrationService
from adapters.remote_store import WebhookIntake
from daemon.http import bodies
from daemon.http.acting import CRM_USER_HEADER, named_user
from daemon.http.auth import WHO, verify_signature
from daemon.http.errors import ApiError
from daemon.runtime.settings import Role
from daemon.service import failures as failure_log
from daemon.service import history as sync_history
from daemon.service import integration, ticket_list, ticket_stats, webhooks
from daemon.service import status as daemon_status
from daemon.service.integration import MappingCheck
from daemon.service.signals import SignalStreams
from projections.catalog import Side
from projections.config import SyncConfig
from projections.events import ChangeEvent, InvalidEvent, decode_event, encode_event
from projections.people import DeskProfile
from projections.related_lists import DEFAULT_MODULES

log = structlog.get_logger(__name__)

DOCUMENT = web.AppKey("openapi", dict)
"""The application's OpenAPI document, built by ``server.build_app`` from its routes."""


@dataclass
class ApiContext:
    pool: asyncpg.Pool
    integration: IntegrationService
    tokens: dict[str, tuple[str, Role]]  # token -> (name, role)
    webhook_secrets: dict[str, bytes]
    history_timezone: str
    config: Callable[[], SyncConfig]
    lag: Callable[[], dict[int, int]]
    last_applied_at: Callable[[], float | None]
    zoho_crm_channel_token: bytes | None = None
    """The token Zoho CRM's notifications must carry (none: no notification intake)."""
    remote_stores: Callable[[], dict[str, str]] = dict
    """Each remote store's writer's state (``CommandWriter.state``)."""
    intakes: Mapping[str, WebhookIntake] = field(default_factory=dict)
    """The remote stores' callbacks, by name (``zoho-desk``)."""
    mapping_checks: Mapping[Side, MappingCheck] = field(default_factory=dict)
    """The remote stores' checks of a mapping's custom fields (``RemoteStore``)."""
    signal_streams: SignalStreams | None = None
    """The open sales-signal streams' shared state (made at the first stream)."""
    signal_keepalive: float = 15.0
    """Seconds a signal stream waits for a notification before it polls anyway."""
    token_profiles: Mapping[str, str] = field(default_factory=dict)
    """Bearer token -> the desk profile it is bound to (PERM-04; unbound tokens absent)."""

    async def desk_profiles(self) -> Mapping[str, DeskProfile]:
        """The desk's profiles by name, as the integration holds them now (PERM-01 … 04;
        read at each request, so a change an admin makes holds at once)."""
        return (await self.integration.people()).profiles


def _by(request: web.Request) -> str:
    """Who gives a command: the bearer token's name (the route has checked there is one)."""
    return request[WHO]


def dumps(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=_enc).decode()


def _enc(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise NotImplementedError(type(value))


async def openapi_json(_ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


async def status(ctx: ApiContext, _request: web.Request, _body: None) -> web.Response:
    return web.json_response(await daemon_status.status(
        ctx.pool, config=ctx.config(), lag=ctx.lag(), last_applied_at=ctx.last_applied_at(),
        config_position=ctx.integration.followed, remote_stores=ctx.remote_stores()))


# -- the integration (OPS-05): each command answers with the integration's state -------

async def integration_state(ctx: ApiContext, _request: web.Request, _body: None
                            ) -> web.Response:
    return web.json_response(await integration.state(ctx.integration))


async def _state(ctx: ApiContext) -> web.Response:
    return web.json_response(await integration.state(ctx.integration))


async def set_up(ctx: ApiContext, request: web.Request, body: bodies.SetUp) -> web.Response:
    await integration.set_up(ctx.integration, body.desk_portal, body.crm_org, by=_by(request))
    return await _state(ctx)


async def sync_type(ctx: ApiContext, request: web.Request, body: bodies.SyncType
                    ) -> web.Response:
    await integration.choose_sync_type(ctx.integration, body.sync_type, by=_by(request))
    return await _state(ctx)


async def legacy_import(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    await integration.start_legacy_import(ctx.integration, by=_by(request))
    return await _state(ctx)


async def switch_to_sync(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    await integration.switch_to_sync(ctx.integration, by=_by(request))
    return await _state(ctx)


async def mapping(ctx: ApiContext, request: web.Request, body: bodies.Mapping) -> web.Response:
    await integration.change_field_mapping(ctx.integration, request.match_info["module"],
                                           body.entries, by=_by(request),
                                           checks=ctx.mapping_checks)
    return await _state(ctx)


async def matching(ctx: ApiContext, request: web.Request, body: bodies.Matching
                   ) -> web.Response:
    await integration.change_matching_options(ctx.integration, body.match_secondary_email,
                                              by=_by(request))
    return await _state(ctx)


async def products_department(ctx: ApiContext, request: web.Request,
                              body: bodies.ProductsDepartment) -> web.Response:
    await integration.choose_products_department(ctx.integration, body.department_id,
                                                 by=_by(request))
    return await _state(ctx)


async def related_lists(ctx: ApiContext, request: web.Request, body: bodies.RelatedLists
                        ) -> web.Response:
    await integration.choose_related_list_modules(ctx.integration, body.modules,
                                                  by=_by(request))
    return await _state(ctx)


async def pause(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    await integration.pause(ctx.integration, by=_by(request))
    return await _state(ctx)


async def resume(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    await integration.resume(ctx.integration, by=_by(request))
    return await _state(ctx)


async def delete(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    await integration.delete(ctx.integration, by=_by(request))
    return await _state(ctx)


async def audit(ctx: ApiContext, _request: web.Request, _body: None) -> web.Response:
    return web.json_response(await integration.audit(ctx.integration), dumps=dumps)


# -- history, failures, retry (OPS-03, OPS-04) -------------------------------------------

async def history(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    zone = request.query.get("tz", ctx.history_timezone)
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(400, "invalid_parameter", f"tz: unknown time zone {zone!r}") from None
    return web.json_response({"timezone": zone,
                              "days": await sync_history.seven_days(ctx.pool, zone)})


async def failures(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    query = request.query
    limit, offset = _page(query)
    state = query.get("status", "open")
    if state not in ("open", "resolved", "all"):
        raise ApiError(400, "invalid_parameter", "status: open, resolved or all")
    page = await failure_log.list_failures(
        ctx.pool, state=state, reason=query.get("reason"),  # type: ignore[arg-type]
        module=query.get("module"), limit=limit, offset=offset)
    return web.json_response(page, dumps=dumps)


def _page(query: Mapping[str, str]) -> tuple[int, int]:
    """``?limit=&offset=``: 50 by default, at most 500, from 0."""
    try:
        limit = min(500, max(1, int(query.get("limit", "50"))))
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit and offset are integers") from None
    return limit, offset


def record_of(request: web.Request) -> str:
    record = request.match_info["record"]
    if len(record) > 200:
        raise ApiError(400, "invalid_parameter", "a record id is at most 200 characters")
    return record


async def customer_statistics(ctx: ApiContext, request: web.Request, _body: None
                              ) -> web.Response:
    """TICKET-06: a CRM contact's, account's or deal's tickets, counted and averaged."""
    record = record_of(request)
    module = ticket_stats.module_of(request.match_info["module"])
    if module is None:  # the route admits only the modules with statistics
        raise ApiError(404, "not_found", "no statistics for this module")
    return web.json_response(await ticket_stats.statistics(ctx.pool, module, record),
                             dumps=dumps)


async def related_tickets(ctx: ApiContext, request: web.Request, _body: None
                          ) -> web.Response:
    """TICKET-01, TICKET-07: a CRM record's tickets, newest first, filtered and paged;
    404 with the reason for a module the integration does not list tickets on."""
    record = record_of(request)
    current = await ctx.integration.current()
    module = ticket_list.listed_module(
        request.match_info["module"],
        current.related_list_modules if current is not None else DEFAULT_MODULES)
    only = request.query.get("filter")
    if only is not None and only not in ticket_list.FILTERS:
        raise ApiError(400, "invalid_parameter",
                       f"filter: one of {', '.join(ticket_list.FILTERS)}")
    limit, offset = _page(request.query)
    page = await ticket_list.related_tickets(
        ctx.pool, module, record, only=only, limit=limit, offset=offset,
        departments=await _visible_departments(ctx, request))
    return web.json_response(page, dumps=dumps)


async def _visible_departments(ctx: ApiContext, request: web.Request) -> frozenset[str] | None:
    """TICKET-08: the departments whose tickets the CRM user the request names
    (``X-Syncd-Crm-User``) sees, when the integration shows users their own departments'
    only; None (every ticket) when it shows all, or for a request naming no CRM user
    (an operator's, not a CRM user's)."""
    if CRM_USER_HEADER not in request.headers:
        return None
    people = await ctx.integration.people()
    user = named_user(people, request)
    return None if people.visibility == "all" else user.departments


async def retry(ctx: ApiContext, request: web.Request, body: bodies.Retry) -> web.Response:
    if not (body.ids or body.reason or body.all):
        raise ApiError(400, "invalid_body", "give ids, a reason, or all: true")
    result = await failure_log.retry_failures(ctx.pool, ids=body.ids, reason=body.reason,
                                              everything=body.all)
    log.info("failures_retried", by=_by(request), **result)
    return web.json_response(result)


# -- the webhook intake -------------------------------------------------------------------

async def webhook(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    """Signed first (the raw body), decoded after: an unsigned body is a 401 whatever
    it holds. Accepted notifications are in the outbox before the 202."""
    source = request.match_info["source"]
    secret = ctx.webhook_secrets.get(source)
    if secret is None:
        raise ApiError(404, "not_configured", f"no webhook intake for {source!r}")
    raw = await bodies.read_raw(request)
    verify_signature(secret, raw, request.headers.get("X-Syncd-Timestamp", ""),
                     request.headers.get("X-Syncd-Signature", ""), now=time.time())
    try:
        change = msgspec.json.decode(raw, type=bodies.WebhookChange)
        event = ChangeEvent(
            event_id=change.event_id or uuid.uuid4(), source=source,  # type: ignore[arg-type]
            module=change.module, record_id=change.record_id, op=change.op,
            values=change.values, changed=change.changed, modified_at=change.modified_at,
            created_at=change.created_at or change.modified_at, origin="user",
            captured_at=dt.datetime.now(dt.UTC))
        decode_event(encode_event(event))  # the same checks as every event
    except (msgspec.ValidationError, msgspec.DecodeError, InvalidEvent) as err:
        raise ApiError(400, "invalid_body", str(err)) from None
    await webhooks.accept(ctx.pool, event)
    return web.json_response({"event_id": str(event.event_id)}, status=202)


async def zoho_crm_notification(ctx: ApiContext, request: web.Request,
                                _body: None) -> web.Response:
    """A Zoho CRM notification: its channel token checked, then the CRM's capture is
    woken (on whichever replica polls) and Zoho answered at once. Nothing else is
    written: the poll the notification wakes is what captures the records, so a
    notification lost, or answered and then the daemon killed, costs one poll
    interval of delay, not a change."""
    expected = ctx.zoho_crm_channel_token
    if expected is None:
        raise ApiError(404, "not_configured", "no Zoho CRM notification intake")
    raw = await bodies.read_raw(request)
    try:
        notice = msgspec.json.decode(raw, type=bodies.ZohoCrmNotification)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise ApiError(400, "invalid_body", str(err)) from None
    if not hmac.compare_digest((notice.token or "").encode(), expected):
        raise ApiError(401, "bad_channel_token", "the notification's channel token is wrong")
    await webhooks.wake_capture(ctx.pool, "crm")
    return web.json_response({"accepted": len(notice.ids)})


async def zoho_desk_validation(ctx: ApiContext, request: web.Request,
                               _body: None) -> web.Response:
    """Zoho Desk checks a webhook's URL with a GET when the webhook is made."""
    if "zoho-desk" not in ctx.intakes:
        raise ApiError(404, "not_configured", "no Zoho Desk webhook intake")
    return web.json_response({"ok": True})


async def zoho_desk_webhook(ctx: ApiContext, request: web.Request,
                            _body: None) -> web.Response:
    """A Zoho Desk callback: the URL's token checked, the records it carries captured
    into the desk's outbox (``adapters.zoho.desk_capture``), and only then answered
    (Zoho gives it 5 seconds). A callback answered with an error is sent again by
    Zoho; one lost is caught by the desk's poll."""
    intake = ctx.intakes.get("zoho-desk")
    if intake is None:
        raise ApiError(404, "not_configured", "no Zoho Desk webhook intake")
    if not intake.authentic(request.query):
        raise ApiError(401, "bad_webhook_token", "the callback's token is wrong")
    raw = await bodies.read_raw(request)
    try:
        captured = await intake.accept(ctx.pool, raw)
    except ValueError as err:
        raise ApiError(400, "invalid_body", str(err)) from None
    return web.json_response({"captured": captured})
