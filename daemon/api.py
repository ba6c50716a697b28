"""The admin JSON API under ``/api/v1/`` and the webhook intake (OPS-01…OPS-05).

Every request body is decoded into a strict msgspec struct: a malformed body
is a 400 naming the field, never a 500. Errors are ``{"error": {"code",
"message"}}`` with a stable code. Bearer tokens carry a role — ``viewer``
reads, ``operator`` also pauses, resumes and retries, ``admin`` does
everything; no token is 401, the wrong role 403, and neither changes
anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
import structlog
from aiohttp import web

from adapters.integration_store import IntegrationService
from daemon.runtime.settings import Role
from projections.catalog import SYNCED_MODULES
from projections.config import SyncConfig
from projections.db import Conn
from projections.events import ChangeEvent, InvalidEvent, decode_event, encode_event
from projections.integration import InvalidCommand
from projections.sync import REASON_UNSEEN_EDIT

log = structlog.get_logger(__name__)

RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}
WHO = web.RequestKey("who", str)
ROLE = web.RequestKey("role", str)
WEBHOOK_WINDOW_SECONDS = 300
MAX_BODY = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# -- request bodies -------------------------------------------------------------

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


async def body_of(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"body over {MAX_BODY} bytes")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as err:
        raise ApiError(400, "invalid_body", str(err)) from None


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


def _who(request: web.Request) -> str:
    return request[WHO]


def _need(role: Role) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            have = request.get(ROLE)
            if have is None:
                return error_response(401, "unauthorized", "a bearer token is required")
            if RANK[have] < RANK[role]:
                return error_response(403, "forbidden", f"this needs the {role} role")
            return await handler(request)
        return checked
    return wrap


def api_routes(ctx: ApiContext) -> tuple[list[web.RouteDef], Any]:
    """The API's routes and the middleware that authenticates and maps errors."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/v1/"):
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() == "bearer" and presented:
                for token, (name, role) in ctx.tokens.items():
                    if hmac.compare_digest(token.encode(), presented.strip().encode()):
                        request[WHO] = name
                        request[ROLE] = role
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err.status, err.code, err.message)
        except InvalidCommand as err:
            status = 404 if err.code == "not_set_up" else 409
            return error_response(status, err.code, str(err))

    async def integration_state(_request: web.Request) -> web.Response:
        current = await ctx.integration.current()
        if current is None:
            raise ApiError(404, "not_set_up", "the integration is not set up")
        cfg = current.to_sync_config()
        return web.json_response({
            "position": await ctx.integration.position(),
            "desk_portal": current.desk_portal, "crm_org": current.crm_org,
            "mode": current.mode, "sync_type": current.direction, "paused": current.paused,
            "deleted": current.deleted, "match_secondary_email": current.match_secondary_email,
            "products_department_id": current.products_department_id,
            "mappings": {m: [{"desk": p.desk.name, "crm": p.crm.name, "desk_type": p.desk.type,
                              "crm_type": p.crm.type} for p in mapping.pairs]
                         for m, mapping in cfg.mappings.items()},
        })

    def command(run: Callable[[web.Request], Awaitable[object]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            await run(request)
            return await integration_state(request)
        return handler

    async def set_up(request: web.Request) -> object:
        body = await body_of(request, SetUp)
        return await ctx.integration.set_up(body.desk_portal, body.crm_org, by=_who(request))

    async def sync_type(request: web.Request) -> object:
        body = await body_of(request, SyncType)
        return await ctx.integration.choose_sync_type(body.sync_type, by=_who(request))

    async def mapping(request: web.Request) -> object:
        body = await body_of(request, Mapping)
        return await ctx.integration.change_field_mapping(
            request.match_info["module"], body.entries, by=_who(request))

    async def matching(request: web.Request) -> object:
        body = await body_of(request, Matching)
        return await ctx.integration.change_matching_options(body.match_secondary_email,
                                                             by=_who(request))

    async def products_department(request: web.Request) -> object:
        body = await body_of(request, ProductsDepartment)
        return await ctx.integration.choose_products_department(body.department_id,
                                                                by=_who(request))

    async def audit(_request: web.Request) -> web.Response:
        entries = await ctx.integration.audit()
        return web.json_response([entry.as_dict() for entry in entries], dumps=_dumps)

    async def status(_request: web.Request) -> web.Response:
        cfg = ctx.config()
        last = ctx.last_applied_at()
        async with ctx.pool.acquire() as conn:
            backlog = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM desk.outbox) AS desk,"
                " (SELECT count(*) FROM crm.outbox) AS crm,"
                " (SELECT count(*) FROM sync.deferred) AS deferred")
        assert backlog is not None
        return web.json_response({
            "state": "deleted" if not cfg.active else ("paused" if cfg.paused else "running"),
            "consumer_lag": {str(p): n for p, n in sorted(ctx.lag().items())},
            "last_applied_at": (dt.datetime.fromtimestamp(last, dt.UTC).isoformat()
                                if last else None),
            "outbox_backlog": {"desk": backlog["desk"], "crm": backlog["crm"]},
            "deferred_while_paused": backlog["deferred"],
            "config_position": ctx.integration.followed,
        })

    async def history(request: web.Request) -> web.Response:
        zone = request.query.get("tz", ctx.history_timezone)
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(400, "invalid_parameter", f"tz: unknown time zone {zone!r}") from None
        rows = await ctx.pool.fetch(
            """
            SELECT (hour AT TIME ZONE $1)::date AS day, direction, module,
                   sum(added)::int AS added, sum(updated)::int AS updated,
                   sum(failed)::int AS failed
            FROM sync.history
            WHERE hour > (SELECT max(hour) FROM sync.history) - interval '7 days'
            GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2, 3
            """, zone)
        return web.json_response({"timezone": zone, "days": [
            {"day": r["day"].isoformat(), "direction": r["direction"], "module": r["module"],
             "added": r["added"], "updated": r["updated"], "failed": r["failed"]}
            for r in rows]})

    async def failures(request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(500, max(1, int(query.get("limit", "50"))))
            offset = max(0, int(query.get("offset", "0")))
        except ValueError:
            raise ApiError(400, "invalid_parameter", "limit and offset are integers") from None
        state = query.get("status", "open")
        if state not in ("open", "resolved", "all"):
            raise ApiError(400, "invalid_parameter", "status: open, resolved or all")
        where = ["($1 = 'all' OR status = $1)", "($2::text IS NULL OR reason = $2)",
                 "($3::text IS NULL OR module = $3)"]
        args = [state, query.get("reason"), query.get("module")]
        total = await ctx.pool.fetchval(
            f"SELECT count(*) FROM sync.failures WHERE {' AND '.join(where)}", *args)
        rows = await ctx.pool.fetch(
            f"SELECT id, source, module, record_id, event_id, reason, detail, first_failed_at,"
            f" last_failed_at, attempts, status, resolved_at FROM sync.failures"
            f" WHERE {' AND '.join(where)} ORDER BY last_failed_at DESC, id DESC"
            f" LIMIT {limit} OFFSET {offset}", *args)
        return web.json_response({"total": total, "limit": limit, "offset": offset,
                                  "failures": [dict(r) for r in rows]}, dumps=_dumps)

    async def retry(request: web.Request) -> web.Response:
        body = await body_of(request, Retry)
        if not (body.ids or body.reason or body.all):
            raise ApiError(400, "invalid_body", "give ids, a reason, or all: true")
        result = await retry_failures(ctx.pool, ids=body.ids, reason=body.reason,
                                      everything=body.all)
        log.info("failures_retried", by=_who(request), **result)
        return web.json_response(result)

    async def webhook(request: web.Request) -> web.Response:
        source = request.match_info["source"]
        secret = ctx.webhook_secrets.get(source)
        if secret is None:
            raise ApiError(404, "not_configured", f"no webhook intake for {source!r}")
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"body over {MAX_BODY} bytes")
        verify_signature(secret, raw, request.headers.get("X-Syncd-Timestamp", ""),
                         request.headers.get("X-Syncd-Signature", ""), now=time.time())
        try:
            change = msgspec.json.decode(raw, type=WebhookChange)
            event = ChangeEvent(
                event_id=change.event_id or uuid.uuid4(), source=source,  # type: ignore[arg-type]
                module=change.module, record_id=change.record_id, op=change.op,
                values=change.values, changed=change.changed, modified_at=change.modified_at,
                created_at=change.created_at or change.modified_at, origin="user",
                captured_at=dt.datetime.now(dt.UTC))
            decode_event(encode_event(event))  # the same checks as every event
        except (msgspec.ValidationError, msgspec.DecodeError, InvalidEvent) as err:
            raise ApiError(400, "invalid_body", str(err)) from None
        await ctx.pool.execute(
            f"INSERT INTO {source}.outbox (event_id, module, record_id, op, \"values\", changed,"
            " modified_at, created_at, origin) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8,"
            " 'user') ON CONFLICT (event_id) DO NOTHING",
            event.event_id, event.module, event.record_id, event.op,
            msgspec.json.encode(event.values).decode(), event.changed, event.modified_at,
            event.created_at)
        await ctx.pool.execute("SELECT pg_notify('syncd_outbox', $1)", source)
        return web.json_response({"event_id": str(event.event_id)}, status=202)

    routes = [
        web.get("/api/v1/openapi.json", openapi_view),
        web.get("/api/v1/status", _need("viewer")(status)),
        web.get("/api/v1/integration", _need("viewer")(integration_state)),
        web.post("/api/v1/integration", _need("admin")(command(set_up))),
        web.put("/api/v1/integration/sync-type", _need("admin")(command(sync_type))),
        web.post("/api/v1/integration/legacy-import", _need("admin")(command(
            lambda r: ctx.integration.start_legacy_import(by=_who(r))))),
        web.post("/api/v1/integration/switch-to-sync", _need("admin")(command(
            lambda r: ctx.integration.switch_to_sync(by=_who(r))))),
        web.put("/api/v1/integration/mapping/{module}", _need("admin")(command(mapping))),
        web.put("/api/v1/integration/matching", _need("admin")(command(matching))),
        web.put("/api/v1/integration/products-department",
                _need("admin")(command(products_department))),
        web.post("/api/v1/integration/pause", _need("operator")(command(
            lambda r: ctx.integration.pause(by=_who(r))))),
        web.post("/api/v1/integration/resume", _need("operator")(command(
            lambda r: ctx.integration.resume(by=_who(r))))),
        web.delete("/api/v1/integration", _need("admin")(command(
            lambda r: ctx.integration.delete(by=_who(r))))),
        web.get("/api/v1/integration/audit", _need("viewer")(audit)),
        web.get("/api/v1/history", _need("viewer")(history)),
        web.get("/api/v1/failures", _need("viewer")(failures)),
        web.post("/api/v1/failures/retry", _need("operator")(retry)),
        web.post("/webhooks/{source:desk|crm}", webhook),
    ]
    return routes, middleware


def verify_signature(secret: bytes, raw: bytes, timestamp: str, signature: str, *,
                     now: float) -> None:
    """HMAC-SHA256 over ``<timestamp>.<raw body>``, sent as ``sha256=<hex>``, with the
    timestamp within five minutes so a captured request cannot be replayed later."""
    try:
        stamp = int(timestamp)
    except ValueError:
        raise ApiError(401, "bad_signature", "X-Syncd-Timestamp is missing or not an integer"
                       ) from None
    if abs(now - stamp) > WEBHOOK_WINDOW_SECONDS:
        raise ApiError(401, "stale_request", "timestamp outside the five-minute window")
    expected = hmac.new(secret, f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"sha256={expected}", signature.strip()):
        raise ApiError(401, "bad_signature", "the signature does not match")


def sign(secret: bytes, raw: bytes, stamp: int) -> str:
    return "sha256=" + hmac.new(secret, f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()


RETRY_CHUNK = 500
"""Failures a retry selects, locks and re-sends per transaction: ``retry --all`` over
a large failure log holds a bounded number of row locks and rows in memory at a time."""


async def retry_failures(pool: asyncpg.Pool, *, ids: list[int] | None, reason: str | None,
                         everything: bool, chunk: int = RETRY_CHUNK) -> dict[str, int]:
    """Re-apply the original events of open failures against the current state.

    A retry is itself an event: the original change goes through the store's
    outbox again (new event id, same values and source times), so replicas and
    replays see it like any change. Rejected messages that never decoded
    cannot be retried.

    The selected failures are taken in id order, ``chunk`` at a time, each chunk in
    a transaction of its own (locked, re-sent, committed), so memory and locks stay
    bounded however many are open. Each chunk starts after the last id of the one
    before; a chunk that commits stays committed if a later one fails.
    """
    selected = retried = skipped = 0
    after = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT f.id, f.source, f.reason, e.payload::text AS payload"
                " FROM sync.failures f LEFT JOIN syncd.event_log e ON e.event_id = f.event_id"
                " WHERE f.status = 'open' AND f.id > $4"
                " AND ($1 OR f.id = ANY($2::bigint[]) OR f.reason = $3)"
                " ORDER BY f.id LIMIT $5 FOR UPDATE OF f",
                everything, ids or [], reason, after, chunk)
            for row in rows:
                if row["payload"] is None or row["source"] not in ("desk", "crm"):
                    skipped += 1
                    continue
                event = decode_event(row["payload"].encode())
                if row["reason"] == REASON_UNSEEN_EDIT:
                    await _acknowledge_rows(conn, event)
                await conn.execute(
                    f"INSERT INTO {event.source}.outbox (module, record_id, op, \"values\","
                    " changed, modified_at, created_at, origin) VALUES ($1, $2, $3, $4::jsonb,"
                    " $5, $6, $7, 'user')",
                    event.module, event.record_id, event.op,
                    msgspec.json.encode(event.values).decode(), event.changed,
                    event.modified_at, event.created_at)
                retried += 1
            sources = {row["source"] for row in rows} & {"desk", "crm"}
            for source in sorted(sources):
                await conn.execute("SELECT pg_notify('syncd_outbox', $1)", source)
        selected += len(rows)
        if len(rows) < chunk:
            break
        after = rows[-1]["id"]
    return {"selected": selected, "retried": retried, "not_retryable": skipped}


async def _acknowledge_rows(conn: Conn, event: ChangeEvent) -> None:
    """A retry of *the record changed after the sync last saw it*: nothing captured that
    change, so nothing would ever bring it. Retrying takes both rows of the pair as
    seen as they are now; the write then goes ahead, and the uncaptured values of
    mapped fields give way to the synced ones."""
    if event.module not in SYNCED_MODULES:
        return
    link = await conn.fetchrow(
        f"SELECT link_id, desk_id, crm_id FROM sync.links WHERE module = $1"
        f" AND {event.source}_id = $2 FOR UPDATE", event.module, event.record_id)
    if link is None:
        return
    for side in ("desk", "crm"):
        record_id = link[f"{side}_id"]
        if record_id is None or not record_id.isdigit():
            continue
        await conn.execute(
            f"UPDATE sync.links l SET {side}_seen = greatest(l.{side}_seen, t.modified_time),"
            f" {side}_fp = NULL FROM {side}.{event.module} t"
            " WHERE l.link_id = $1 AND t.id = $2", link["link_id"], int(record_id))


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=_enc).decode()


def _enc(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise NotImplementedError(type(value))


async def openapi_view(_request: web.Request) -> web.Response:
    from daemon.openapi import document

    return web.json_response(document())
