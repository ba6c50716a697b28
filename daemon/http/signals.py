"""Sales signals over HTTP (TICKET-09), for the CRM user the request acts for
(``X-Syncd-Crm-User``, ``daemon.http.acting``)::

    GET /api/v1/signals?after=N&limit=M   a page of the user's signals after N
    GET /api/v1/signals/stream            server-sent events: each of the user's signals
                                          once, in order (``Last-Event-ID`` resumes)

Both filter by what the user may see (the integration's ticket visibility and the
user's departments, TICKET-08) and the signals the user enabled, read again at every
wake of a stream, so a change applies at once. An event's ``id`` is the signal's
sequence number; a stream with no ``Last-Event-ID`` starts after the newest signal
(what happens from now on), one with it after that number, without loss or repeat
(``daemon.service.signals``). One pooled connection LISTENs for all streams while any is
open; every stream also polls at the keep-alive interval, so a lost notification
delays a signal but never loses it. At shutdown every open stream ends (the server's
hook), so the daemon stops within its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from daemon.http.acting import named_user
from daemon.http.api import ApiContext
from daemon.http.board import RETRY_MS, event_stream, sse_frame
from daemon.http.errors import ApiError
from daemon.service import signals as service
from daemon.service.board import RECORD_ID
from daemon.service.signals import SignalStreams

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_STREAMS = 64
"""Signal streams open at once, per process (as the board's: each read takes a pooled
connection); one more is refused with 503 ``too_many_streams``."""
KEEPALIVE = 15.0


def streams(ctx: ApiContext) -> SignalStreams:
    """The context's shared stream state, made at the first stream."""
    if ctx.signal_streams is None:
        ctx.signal_streams = SignalStreams(ctx.pool)
    return ctx.signal_streams


def _number(raw: str | None, name: str, default: int, *, low: int, high: int) -> int:
    if raw is None or not raw.strip():
        return default
    if not RECORD_ID.match(raw.strip()) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter",
                       f"{name} must be a whole number from {low} to {high}")
    return int(raw)


async def page(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    people = await ctx.integration.people()
    user = named_user(people, request)
    after = _number(request.query.get("after"), "after", 0, low=0, high=10**18)
    limit = _number(request.query.get("limit"), "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    async with ctx.pool.acquire() as conn:
        found = await service.signals_after(conn, user, people.visibility, after, limit=limit)
    return web.json_response({"user": user.id, **found.as_json()})


async def stream(ctx: ApiContext, request: web.Request, _body: None) -> web.StreamResponse:
    shared = streams(ctx)
    user = named_user(await ctx.integration.people(), request)  # 401/403 before streaming
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    cursor: int | None = None
    if raw is not None and raw.strip():
        cursor = _number(raw, "Last-Event-ID", 0, low=0, high=10**18)
    if shared.open >= MAX_STREAMS:
        raise ApiError(503, "too_many_streams",
                       f"{MAX_STREAMS} signal streams are open, the most this daemon serves;"
                       " try again later", headers={"Retry-After": str(RETRY_MS // 1000)},
                       limit=MAX_STREAMS)
    shared.open += 1
    try:
        if cursor is None:
            async with ctx.pool.acquire() as conn:
                cursor = await service.last_seq(conn)
        response = await event_stream(request)
        with contextlib.suppress(ConnectionError):
            async with shared.notifier.subscribe("") as sub:
                while not shared.stopping and not sub.lost:
                    sub.wake.clear()  # before reading: a notification from here on counts
                    people = await ctx.integration.people()
                    current = people.users.get(user.id)
                    if current is None:
                        await response.write(sse_frame(
                            "gone", {"code": "unknown_crm_user",
                                     "message": f"CRM user {user.id} is no longer known"}))
                        break
                    async with ctx.pool.acquire() as conn:
                        found = await service.signals_after(
                            conn, current, people.visibility, cursor, limit=MAX_LIMIT)
                    for signal in found.signals:
                        await response.write(sse_frame("signal", signal,
                                                       event_id=signal["seq"]))
                    cursor = found.cursor
                    if found.more:
                        continue
                    if request.transport is None or request.transport.is_closing():
                        break
                    try:
                        await asyncio.wait_for(sub.wake.wait(), ctx.signal_keepalive)
                    except TimeoutError:
                        await response.write(b": keepalive\n\n")
        return response
    finally:
        shared.open -= 1
