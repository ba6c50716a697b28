"""The handshake board over HTTP (HS-04 … HS-07): read it, follow it, act from it.

Its routes are in the route table (``routes.BOARD_ROUTES``), under
``BOARD_PREFIX`` (``/api/v1/handshake``)::

    GET  /{department}                             the board: columns with their tickets
    GET  /{department}/stream                      server-sent events: the board, then moves
    POST /{department}/tickets/{ticket}/close      close a ticket (HS-07)
    POST /{department}/tickets/{ticket}/replies    reply to a ticket (HS-07)

``department`` is a desk department id, or its name (case-insensitive).

Access: the table's roles (``viewer`` reads, ``operator`` closes and replies),
checked by the context's ``authorize`` (``auth.by_role`` in the daemon). Then
HS-06: a deleted integration answers 404, the free edition 403.

The stream is exactly-once and in order (see ``daemon.service.board``);
``Last-Event-ID`` resumes after the last move a client saw. Every reader also
polls at the keep-alive interval, so a lost notification delays a move but never
loses it. One pooled connection LISTENs for all streams while any is open. At
shutdown the context's hook ends every open stream, so the daemon stops within
its deadline instead of waiting for aiohttp's handler timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from daemon.http.auth import Authorize, by_role, who
from daemon.http.errors import ApiError
from daemon.service import board as service
from daemon.service.board import RECORD_ID, Department, Subscription
from projections.stores.desk_tickets import DeskTickets
from projections.stores.embedded_tickets import EmbeddedDeskTickets

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
STREAM_PAGE = 500
MAX_REPLY_CHARS = 65_536
RETRY_MS = 2000
MAX_STREAMS = 64
"""Board streams open at once, per process; one more is refused with 503
``too_many_streams`` (and ``Retry-After``). Each open stream takes a pooled connection
for every read (a move, a keep-alive poll), so the cap keeps a crowd of viewers from
queueing without end on the readers' pool; the daemon gives readers a pool of their
own (``daemon.app.READER_POOL_SIZE``), apart from the batches'."""

FREE_EDITION = "free"
REASON_FREE = ("the handshake board is not available in the free edition (HS-06);"
               " it comes with the standard, professional and enterprise editions")
REASON_GONE = "the handshake board is gone: the CRM integration was deleted (HS-06)"


class BoardContext:
    """What the board's handlers share: the readers' pool, the edition, whether the
    integration is there, the desk's ticket actions (the embedded desk's unless the
    composition gives a hosted desk's), the open streams and their notifier."""

    def __init__(self, pool: asyncpg.Pool, *, edition: str,
                 integration_active: Callable[[], bool], authorize: Authorize = by_role,
                 keepalive: float = 15.0, max_streams: int = MAX_STREAMS,
                 tickets: DeskTickets | None = None) -> None:
        self.pool = pool
        self.tickets: DeskTickets = tickets or EmbeddedDeskTickets(pool)
        self.max_streams = max_streams
        self.streams = 0  # open now
        self.edition = edition
        self.authorize = authorize
        self.integration_active = integration_active
        self.keepalive = keepalive
        self.notifier = service.MoveNotifier(pool)
        self.stopping = False

    def admit(self) -> None:
        """HS-06, after authentication: gone once the integration is deleted; absent
        from the free edition."""
        if not self.integration_active():
            raise ApiError(404, "integration_deleted", REASON_GONE)
        if self.edition == FREE_EDITION:
            raise ApiError(403, "not_in_edition", REASON_FREE, edition=self.edition)

    async def department(self, request: web.Request) -> Department:
        async with self.pool.acquire() as conn:
            return await service.resolve_department(conn, request.match_info["department"])

    async def on_shutdown(self, _app: web.Application) -> None:
        self.stopping = True
        self.notifier.wake_all()

    async def on_cleanup(self, _app: web.Application) -> None:
        await self.notifier.close()


async def event_stream(request: web.Request) -> web.StreamResponse:
    """A server-sent-events answer, started, with the client's reconnection delay sent
    first (a client that lost the connection at once still waits ``RETRY_MS``)."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return response


def sse_frame(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in json.dumps(data).splitlines())
    return ("\n".join(lines) + "\n\n").encode()


# -- reading ---------------------------------------------------------------------

async def board(ctx: BoardContext, request: web.Request, _body: None) -> web.Response:
    ctx.admit()
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not RECORD_ID.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter",
                       f"limit must be a whole number from 1 to {MAX_LIMIT}")
    async with ctx.pool.acquire() as conn:
        department = await service.resolve_department(conn, request.match_info["department"])
        return web.json_response(await service.read_board(conn, department, limit=int(raw)))


async def stream(ctx: BoardContext, request: web.Request, _body: None) -> web.StreamResponse:
    ctx.admit()
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    cursor: int | None = None
    if raw is not None and raw.strip():
        if not RECORD_ID.match(raw.strip()):
            raise ApiError(400, "invalid_parameter",
                           "Last-Event-ID must be a move sequence number")
        cursor = int(raw.strip())
    if ctx.streams >= ctx.max_streams:
        raise ApiError(
            503, "too_many_streams",
            f"{ctx.max_streams} board streams are open, the most this daemon serves;"
            f" try again later", headers={"Retry-After": str(RETRY_MS // 1000)},
            limit=ctx.max_streams)
    ctx.streams += 1  # counted from here: the checks below wait on the pool too
    try:
        department = await ctx.department(request)
        response = await event_stream(request)
        with contextlib.suppress(ConnectionError):
            async with ctx.notifier.subscribe(department.id) as sub:
                await _follow(ctx, request, response, department, sub, cursor)
        return response
    finally:
        ctx.streams -= 1


async def _follow(ctx: BoardContext, request: web.Request, response: web.StreamResponse,
                  department: Department, sub: Subscription, cursor: int | None) -> None:
    while not ctx.stopping and not sub.lost:
        sub.wake.clear()  # before reading: a notification from here on is not lost
        async with ctx.pool.acquire() as conn:
            moves = await service.moves_after(conn, department, cursor, limit=STREAM_PAGE)
            if moves is None:
                # First connection, or moves after the client's position are gone:
                # the whole board, from which the client follows on.
                board = await service.read_board(conn, department, limit=DEFAULT_LIMIT)
                await response.write(sse_frame("board", board, event_id=board["cursor"]))
                cursor = board["cursor"]
                continue
        for move in moves:
            await response.write(sse_frame("move", move, event_id=move["seq"]))
            cursor = move["seq"]
        if len(moves) == STREAM_PAGE:
            continue
        if not ctx.integration_active():
            await response.write(sse_frame(
                "gone", {"code": "integration_deleted", "message": REASON_GONE}))
            return
        if request.transport is None or request.transport.is_closing():
            return
        try:
            await asyncio.wait_for(sub.wake.wait(), ctx.keepalive)
        except TimeoutError:
            await response.write(b": keepalive\n\n")


# -- acting (HS-07) ------------------------------------------------------------------

async def close(ctx: BoardContext, request: web.Request, _body: None) -> web.Response:
    ctx.admit()
    department = await ctx.department(request)
    ticket = service.ticket_id(department, request.match_info["ticket"])
    closed = await service.close_ticket(ctx.tickets, department, ticket)
    return web.json_response(closed, status=202 if closed["changed"] else 200)


async def reply(ctx: BoardContext, request: web.Request, _body: None) -> web.Response:
    ctx.admit()
    department = await ctx.department(request)
    ticket = service.ticket_id(department, request.match_info["ticket"])
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_body", "the body must be a JSON object") from None
    problem = reply_problem(body)
    if problem is not None:
        raise ApiError(400, "invalid_body", problem)
    answer = await service.reply(ctx.tickets, department, ticket, content=body["content"],
                                 author=body.get("author") or who(request))
    return web.json_response(answer, status=202)


def reply_problem(body: Any) -> str | None:
    """What is wrong with a reply body, or None (fields: content, author)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - {"content", "author"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        return "content must be a non-empty string"
    if len(content) > MAX_REPLY_CHARS:
        return f"content is longer than {MAX_REPLY_CHARS} characters"
    author = body.get("author")
    if author is not None and (not isinstance(author, str) or not 1 <= len(author) <= 200):
        return "author must be a string of 1 to 200 characters"
    if "\x00" in content or (author and "\x00" in author):
        return "NUL character in a text value"
    return None
