"""The handshake board over HTTP (HS-04 … HS-07): read it, follow it, act from it.

A sub-application, mounted at ``/api/v1/handshake``::

    GET  /{department}                             the board: columns with their tickets
    GET  /{department}/stream                      server-sent events: the board, then moves
    POST /{department}/tickets/{ticket}/close      close a ticket (HS-07)
    POST /{department}/tickets/{ticket}/replies    reply to a ticket (HS-07)

``department`` is a desk department id, or its name (case-insensitive).

Access: an ``authorize`` hook admits or refuses each request; in the daemon it is
:func:`admin_api_roles` (the admin API's bearer tokens: ``viewer`` reads,
``operator`` closes and replies). Then HS-06: a deleted integration answers 404,
the free edition 403. Errors have the admin API's shape,
``{"error": {"code", "message"}}``.

The stream is exactly-once and in order without any state here: the projection
allocates move sequence numbers under a lock held to commit, so moves become
visible in sequence order; a reader that asks for "moves after N" in one
snapshot never skips one, and ``Last-Event-ID`` resumes after the last move a
client saw. ``pg_notify`` (sent by the projection inside its transaction, so on
commit) only wakes readers early; every reader also polls at the keep-alive
interval, so a lost notification delays a move but never loses it. One pooled
connection LISTENs for all streams while any is open.

Close and reply are a person's edits of the desk store (origin ``user``): capture
makes them events like any other edit, and the board follows from those events.

It is a sub-application rather than a list of routes because streams are long:
its shutdown hook ends them, so the daemon stops within its deadline instead of
waiting for aiohttp's handler timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import asyncpg
from aiohttp import web

from projections.db import Conn
from projections.handshake import COLUMN_TITLES, COLUMNS, NOTIFY_CHANNEL, STANDARD_STATUSES

API_PREFIX = "/api/v1/handshake"
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

_RECORD_ID = re.compile(r"^[0-9]{1,18}$")


def _problem(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """An error in the admin API's shape: ``{"error": {"code", "message", ...}}``."""
    return web.json_response({"error": {"code": code, "message": message, **extra}},
                             status=status)


Action = Literal["read", "act"]
"""``read``: the board and its stream; ``act``: close and reply (HS-07)."""


class Caller(NamedTuple):
    name: str | None


Authorize = Callable[[web.Request, Action], "web.Response | Caller"]
"""Admits a request for an action (returning who it is) or refuses it (a response)."""


def open_access(_request: web.Request, _action: Action) -> Caller:
    """No authentication: for tests, or behind a proxy that authenticates."""
    return Caller(None)


def admin_api_roles(*, read: str = "viewer", act: str = "operator") -> Authorize:
    """The admin API's bearer tokens: its middleware (``daemon.api``) puts the caller's
    name and role on the request; no token is 401, too low a role 403."""
    from daemon.api import RANK, ROLE, WHO

    def check(request: web.Request, action: Action) -> web.Response | Caller:
        need = read if action == "read" else act
        have = request.get(ROLE)
        if have is None:
            return _problem(401, "unauthorized", "a bearer token is required")
        if RANK[have] < RANK[need]:
            return _problem(403, "forbidden", f"this needs the {need} role")
        return Caller(request.get(WHO))

    return check


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@dataclass(frozen=True, slots=True)
class Department:
    id: str
    name: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


async def resolve_department(conn: Conn, ref: str) -> Department | web.Response:
    """A department by id (digits) or by name; a response when there is none."""
    if _RECORD_ID.match(ref):
        name = await conn.fetchval(
            "SELECT name FROM handshake.departments WHERE department_id = $1", ref)
        return Department(ref, name)
    if not ref.strip() or len(ref) > 200 or "\x00" in ref:
        return _problem(404, "not_found", f"no department {ref[:200]!r}")
    rows = await conn.fetch(
        "SELECT department_id, name FROM handshake.departments"
        " WHERE lower(btrim(name)) = lower(btrim($1)) ORDER BY department_id LIMIT 2", ref)
    if not rows:
        return _problem(404, "not_found", f"no department named {ref!r}")
    if len(rows) > 1:
        return _problem(409, "ambiguous_department",
                        f"more than one department is named {ref!r}; use its id",
                        ids=[r["department_id"] for r in rows])
    return Department(rows[0]["department_id"], rows[0]["name"])


def _ticket_json(row: Any) -> dict[str, Any]:
    ticket = dict(json.loads(row["summary"]))
    ticket["column"] = row["board_column"]
    ticket["matched_by"] = row["matched_by"]
    return ticket


async def read_board(conn: Conn, department: Department, *, limit: int) -> dict[str, Any]:
    """The board with the stream position it reflects, from one snapshot.

    Columns in standing order; an empty column is left out (HS-04). Each column
    lists at most ``limit`` tickets, oldest first; ``count`` is its full size.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        counts = {r["board_column"]: r["n"] for r in await conn.fetch(
            "SELECT board_column, count(*) AS n FROM handshake.board"
            " WHERE department_id = $1 GROUP BY board_column", department.id)}
        rows = await conn.fetch(
            "SELECT b.* FROM unnest($2::text[]) WITH ORDINALITY AS c(name, ord)"
            " CROSS JOIN LATERAL (SELECT ticket_id, board_column, matched_by, summary"
            "   FROM handshake.board WHERE department_id = $1"
            "   AND board_column = c.name ORDER BY created_at, ticket_id LIMIT $3) b"
            " ORDER BY c.ord", department.id, list(COLUMNS), limit)
        cursor = await conn.fetchval(
            "SELECT greatest(coalesce((SELECT max(seq) FROM handshake.moves), 0),"
            " (SELECT pruned_through FROM handshake.stream_state))")
    tickets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        tickets.setdefault(row["board_column"], []).append(_ticket_json(row))
    columns = [{"column": name, "title": COLUMN_TITLES[name], "count": counts[name],
                "tickets": tickets.get(name, [])}
               for name in COLUMNS if counts.get(name)]
    return {"department": department.as_json(), "cursor": cursor,
            "total": sum(counts.values()), "columns": columns}


def move_json(row: Any) -> dict[str, Any]:
    """One move as the stream sends it."""
    before, after = row["from_column"], row["to_column"]
    kind = "added" if before is None else "removed" if after is None else "moved"
    return {"seq": row["seq"], "department": row["department_id"],
            "ticket": json.loads(row["ticket"]), "kind": kind, "from": before, "to": after,
            "at": _iso(row["event_time"])}


def sse_frame(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in json.dumps(data).splitlines())
    return ("\n".join(lines) + "\n\n").encode()


@dataclass(eq=False)
class _Subscription:
    department: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


class MoveNotifier:
    """One LISTEN connection shared by every open stream, held only while any is open.

    If that connection dies, every stream it served is told (``lost``) and ends;
    clients reconnect with ``Last-Event-ID`` and a new connection is taken.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._conn: Any = None
        self._dead: list[Any] = []
        self._subs: set[_Subscription] = set()
        self._lock = asyncio.Lock()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        for sub in self._subs:
            if sub.department == payload:
                sub.wake.set()

    def _terminated(self, _conn: object) -> None:
        # Only the current listening connection carries this callback.
        if self._conn is not None:
            self._dead.append(self._conn)
            self._conn = None
        for sub in self._subs:
            sub.lost = True
            sub.wake.set()

    def wake_all(self) -> None:
        for sub in self._subs:
            sub.wake.set()

    async def _release_dead(self) -> None:
        while self._dead:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.pool.release(self._dead.pop())

    @contextlib.asynccontextmanager
    async def subscribe(self, department: str) -> AsyncIterator[_Subscription]:
        sub = await self._join(department)
        try:
            yield sub
        finally:
            # Shielded: a stream cancelled at shutdown must still give the connection back.
            await asyncio.shield(self._leave(sub))

    async def _join(self, department: str) -> _Subscription:
        sub = _Subscription(department)
        async with self._lock:
            await self._release_dead()
            if self._conn is None:
                conn = await self.pool.acquire()
                try:
                    await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                    conn.add_termination_listener(self._terminated)
                except BaseException:
                    await self.pool.release(conn)
                    raise
                self._conn = conn
            self._subs.add(sub)
        return sub

    async def _leave(self, sub: _Subscription) -> None:
        async with self._lock:
            self._subs.discard(sub)
            await self._release_dead()
            if not self._subs and self._conn is not None:
                conn, self._conn = self._conn, None
                conn.remove_termination_listener(self._terminated)
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._notified)
                await self.pool.release(conn)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._dead.append(self._conn)
                self._conn = None
            await self._release_dead()


class HandshakeApi:
    def __init__(self, pool: asyncpg.Pool, *, edition: str,
                 integration_active: Callable[[], bool], authorize: Authorize,
                 keepalive: float, max_streams: int = MAX_STREAMS) -> None:
        self.pool = pool
        self.max_streams = max_streams
        self.streams = 0  # open now
        self.edition = edition
        self.authorize = authorize
        self.integration_active = integration_active
        self.keepalive = keepalive
        self.notifier = MoveNotifier(pool)
        self.stopping = False

    def admit(self, request: web.Request, action: Action) -> web.Response | Caller:
        """Who asks, or why not: authentication first, then HS-06 (gone once the
        integration is deleted; absent from the free edition)."""
        caller = self.authorize(request, action)
        if isinstance(caller, web.Response):
            return caller
        if not self.integration_active():
            return _problem(404, "integration_deleted", REASON_GONE)
        if self.edition == FREE_EDITION:
            return _problem(403, "not_in_edition", REASON_FREE, edition=self.edition)
        return caller

    async def _department(self, request: web.Request) -> Department | web.Response:
        async with self.pool.acquire() as conn:
            return await resolve_department(conn, request.match_info["department"])

    # -- reading ---------------------------------------------------------------

    async def board(self, request: web.Request) -> web.Response:
        caller = self.admit(request, "read")
        if isinstance(caller, web.Response):
            return caller
        raw = request.query.get("limit", str(DEFAULT_LIMIT))
        if not _RECORD_ID.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
            return _problem(400, "invalid_parameter",
                            f"limit must be a whole number from 1 to {MAX_LIMIT}")
        async with self.pool.acquire() as conn:
            department = await resolve_department(conn, request.match_info["department"])
            if isinstance(department, web.Response):
                return department
            board = await read_board(conn, department, limit=int(raw))
        return web.json_response(board)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        caller = self.admit(request, "read")
        if isinstance(caller, web.Response):
            return caller
        raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        cursor: int | None = None
        if raw is not None and raw.strip():
            if not _RECORD_ID.match(raw.strip()):
                return _problem(400, "invalid_parameter",
                                "Last-Event-ID must be a move sequence number")
            cursor = int(raw.strip())
        if self.streams >= self.max_streams:
            refused = _problem(
                503, "too_many_streams",
                f"{self.max_streams} board streams are open, the most this daemon serves;"
                f" try again later", limit=self.max_streams)
            refused.headers["Retry-After"] = str(RETRY_MS // 1000)
            return refused
        self.streams += 1  # counted from here: the checks below wait on the pool too
        try:
            department = await self._department(request)
            if isinstance(department, web.Response):
                return department
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                await response.write(f"retry: {RETRY_MS}\n\n".encode())
                async with self.notifier.subscribe(department.id) as sub:
                    await self._follow(request, response, department, sub, cursor)
            return response
        finally:
            self.streams -= 1

    async def _follow(self, request: web.Request, response: web.StreamResponse,
                      department: Department, sub: _Subscription, cursor: int | None) -> None:
        while not self.stopping and not sub.lost:
            sub.wake.clear()  # before reading: a notification from here on is not lost
            async with self.pool.acquire() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    pruned = await conn.fetchval(
                        "SELECT pruned_through FROM handshake.stream_state")
                    rows = [] if cursor is None or cursor < pruned else await conn.fetch(
                        "SELECT seq, department_id, ticket_id, from_column, to_column,"
                        " event_time, ticket FROM handshake.moves"
                        " WHERE department_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                        department.id, cursor, STREAM_PAGE)
                if cursor is None or cursor < pruned:
                    # First connection, or moves after the client's position are gone:
                    # the whole board, from which the client follows on.
                    board = await read_board(conn, department, limit=DEFAULT_LIMIT)
                    await response.write(sse_frame("board", board, event_id=board["cursor"]))
                    cursor = board["cursor"]
                    continue
            for row in rows:
                await response.write(sse_frame("move", move_json(row), event_id=row["seq"]))
                cursor = row["seq"]
            if len(rows) == STREAM_PAGE:
                continue
            if not self.integration_active():
                await response.write(sse_frame(
                    "gone", {"code": "integration_deleted", "message": REASON_GONE}))
                return
            if request.transport is None or request.transport.is_closing():
                return
            try:
                await asyncio.wait_for(sub.wake.wait(), self.keepalive)
            except TimeoutError:
                await response.write(b": keepalive\n\n")

    # -- acting (HS-07) ----------------------------------------------------------

    async def _ticket_ids(self, request: web.Request
                          ) -> tuple[Caller, Department, int, int] | web.Response:
        caller = self.admit(request, "act")
        if isinstance(caller, web.Response):
            return caller
        department = await self._department(request)
        if isinstance(department, web.Response):
            return department
        ticket = request.match_info["ticket"]
        if not _RECORD_ID.match(ticket) or not _RECORD_ID.match(department.id):
            return _problem(404, "not_found",
                            f"no ticket {ticket[:200]!r} in department {department.id}")
        return caller, department, int(department.id), int(ticket)

    async def close(self, request: web.Request) -> web.Response:
        found = await self._ticket_ids(request)
        if isinstance(found, web.Response):
            return found
        _caller, department, department_id, ticket_id = found
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('syncd.origin', 'user', true)")
            row = await conn.fetchrow(
                "SELECT status, status_type FROM desk.tickets"
                " WHERE id = $1 AND department_id = $2 AND NOT deleted FOR UPDATE",
                ticket_id, department_id)
            if row is None:
                return _problem(404, "not_found",
                                f"no ticket {ticket_id} in department {department.id}")
            if row["status_type"] == STANDARD_STATUSES["closed"]:
                return web.json_response({"ticket": str(ticket_id), "status": row["status"],
                                          "changed": False})
            await conn.execute("UPDATE desk.tickets SET status = 'Closed' WHERE id = $1",
                               ticket_id)
        return web.json_response({"ticket": str(ticket_id), "status": "Closed",
                                  "previous_status": row["status"], "changed": True},
                                 status=202)

    async def reply(self, request: web.Request) -> web.Response:
        found = await self._ticket_ids(request)
        if isinstance(found, web.Response):
            return found
        caller, department, department_id, ticket_id = found
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "invalid_body", "the body must be a JSON object")
        problem = reply_problem(body)
        if problem is not None:
            return _problem(400, "invalid_body", problem)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('syncd.origin', 'user', true)")
            thread_id = await conn.fetchval(
                "INSERT INTO desk.ticket_threads (ticket_id, direction, kind, author, channel,"
                " content) SELECT t.id, 'out', 'reply', $3, t.channel, $4 FROM desk.tickets t"
                " WHERE t.id = $1 AND t.department_id = $2 AND NOT t.deleted RETURNING id",
                ticket_id, department_id, body.get("author") or caller.name, body["content"])
        if thread_id is None:
            return _problem(404, "not_found",
                            f"no ticket {ticket_id} in department {department.id}")
        return web.json_response({"ticket": str(ticket_id), "thread": str(thread_id)},
                                 status=202)

    # -- lifecycle ---------------------------------------------------------------

    async def on_shutdown(self, _app: web.Application) -> None:
        self.stopping = True
        self.notifier.wake_all()

    async def on_cleanup(self, _app: web.Application) -> None:
        await self.notifier.close()


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


def handshake_app(pool: asyncpg.Pool, *, edition: str, integration_active: Callable[[], bool],
                  authorize: Authorize = open_access, keepalive: float = 15.0,
                  max_streams: int = MAX_STREAMS) -> web.Application:
    """The sub-application to mount at :data:`API_PREFIX`; at most ``max_streams``
    board streams are open at once (:data:`MAX_STREAMS`)."""
    api = HandshakeApi(pool, edition=edition, integration_active=integration_active,
                       authorize=authorize, keepalive=keepalive, max_streams=max_streams)
    app = web.Application()
    app.add_routes([
        web.get("/{department}", api.board),
        web.get("/{department}/stream", api.stream),
        web.post("/{department}/tickets/{ticket}/close", api.close),
        web.post("/{department}/tickets/{ticket}/replies", api.reply),
    ])
    app.on_shutdown.append(api.on_shutdown)
    app.on_cleanup.append(api.on_cleanup)
    return app
