"""The handshake board's use cases (HS-04 … HS-07): find a department, read the
board, read the moves after a stream position, close a ticket, reply to one; and
the one LISTEN connection that wakes every open stream.

The stream is exactly-once and in order without any state here: the projection
allocates move sequence numbers under a lock held to commit, so moves become
visible in sequence order; a reader that asks for "moves after N" in one
snapshot never skips one. ``pg_notify`` (sent by the projection inside its
transaction, so on commit) only wakes readers early.

Close and reply are a person's edits of the desk store (origin ``user``), through
the desk's ``DeskTickets`` port (the embedded desk's tables, or a hosted desk's
API): capture makes them events like any other edit, and the board follows from
those events. A hosted desk that refuses is a 409, one out of reach a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from daemon.service import Conflict, NotFound, Unavailable
from projections.db import Conn
from projections.handshake import COLUMN_TITLES, COLUMNS, NOTIFY_CHANNEL
from projections.stores.desk_tickets import DeskRefused, DeskTickets, DeskUnavailable

RECORD_ID = re.compile(r"^[0-9]{1,18}$")
"""A desk record id: digits, at most 18 (a bigint)."""


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


@dataclass(frozen=True, slots=True)
class Department:
    id: str
    name: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


async def resolve_department(conn: Conn, ref: str) -> Department:
    """A department by id (digits) or by name (case-insensitive); ``NotFound`` when
    there is none, ``Conflict`` when the name is not unique."""
    if RECORD_ID.match(ref):
        name = await conn.fetchval(
            "SELECT name FROM handshake.departments WHERE department_id = $1", ref)
        return Department(ref, name)
    if not ref.strip() or len(ref) > 200 or "\x00" in ref:
        raise NotFound("not_found", f"no department {ref[:200]!r}")
    rows = await conn.fetch(
        "SELECT department_id, name FROM handshake.departments"
        " WHERE lower(btrim(name)) = lower(btrim($1)) ORDER BY department_id LIMIT 2", ref)
    if not rows:
        raise NotFound("not_found", f"no department named {ref!r}")
    if len(rows) > 1:
        raise Conflict("ambiguous_department",
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


async def moves_after(conn: Conn, department: Department, cursor: int | None, *,
                      limit: int) -> list[dict[str, Any]] | None:
    """The department's moves after ``cursor`` (at most ``limit``, in order), read in
    one snapshot; None when the stream cannot continue from ``cursor`` (none yet, or
    the moves after it are pruned): the reader starts again from the whole board."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        pruned = await conn.fetchval("SELECT pruned_through FROM handshake.stream_state")
        if cursor is None or cursor < pruned:
            return None
        rows = await conn.fetch(
            "SELECT seq, department_id, ticket_id, from_column, to_column,"
            " event_time, ticket FROM handshake.moves"
            " WHERE department_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            department.id, cursor, limit)
    return [move_json(row) for row in rows]


def ticket_id(department: Department, ticket: str) -> int:
    """A ticket reference of a path as a desk id; ``NotFound`` if it cannot be one."""
    if not RECORD_ID.match(ticket) or not RECORD_ID.match(department.id):
        raise NotFound("not_found", f"no ticket {ticket[:200]!r} in department {department.id}")
    return int(ticket)


@contextlib.contextmanager
def _desk_answers() -> Iterator[None]:
    """The desk's refusals as the service's: 409 ``desk_refused``, 503
    ``desk_unavailable``."""
    try:
        yield
    except DeskRefused as err:
        raise Conflict("desk_refused", str(err)) from None
    except DeskUnavailable as err:
        raise Unavailable("desk_unavailable", str(err)) from None


async def close_ticket(tickets: DeskTickets, department: Department, ticket_id: int
                       ) -> dict[str, Any]:
    """Close an open ticket of the department (a person's edit); ``changed`` says
    whether it was open."""
    with _desk_answers():
        closed = await tickets.close(int(department.id), ticket_id)
    if closed is None:
        raise NotFound("not_found", f"no ticket {ticket_id} in department {department.id}")
    if not closed.changed:
        return {"ticket": str(ticket_id), "status": closed.previous_status, "changed": False}
    return {"ticket": str(ticket_id), "status": "Closed",
            "previous_status": closed.previous_status, "changed": True}


async def reply(tickets: DeskTickets, department: Department, ticket_id: int, *,
                content: str, author: str | None) -> dict[str, Any]:
    """Add an outgoing reply to a ticket of the department (a person's edit)."""
    with _desk_answers():
        thread_id = await tickets.reply(int(department.id), ticket_id, content=content,
                                        author=author)
    if thread_id is None:
        raise NotFound("not_found", f"no ticket {ticket_id} in department {department.id}")
    return {"ticket": str(ticket_id), "thread": thread_id}


@dataclass(eq=False)
class Subscription:
    department: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


class MoveNotifier:
    """One LISTEN connection shared by every open stream, held only while any is open.

    If that connection dies, every stream it served is told (``lost``) and ends;
    clients reconnect with ``Last-Event-ID`` and a new connection is taken.
    """

    def __init__(self, pool: asyncpg.Pool, *, channel: str = NOTIFY_CHANNEL,
                 by_payload: bool = True) -> None:
        self.pool = pool
        self.channel = channel
        # The board's payload names a department, which wakes its streams only; the
        # sales signals' wakes every stream (each filters what it reads).
        self.by_payload = by_payload
        self._conn: Any = None
        self._dead: list[Any] = []
        self._subs: set[Subscription] = set()
        self._lock = asyncio.Lock()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        for sub in self._subs:
            if not self.by_payload or sub.department == payload:
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
    async def subscribe(self, department: str) -> AsyncIterator[Subscription]:
        sub = await self._join(department)
        try:
            yield sub
        finally:
            # Shielded: a stream cancelled at shutdown must still give the connection back.
            await asyncio.shield(self._leave(sub))

    async def _join(self, department: str) -> Subscription:
        sub = Subscription(department)
        async with self._lock:
            await self._release_dead()
            if self._conn is None:
                conn = await self.pool.acquire()
                try:
                    await conn.add_listener(self.channel, self._notified)
                    conn.add_termination_listener(self._terminated)
                except BaseException:
                    await self.pool.release(conn)
                    raise
                self._conn = conn
            self._subs.add(sub)
        return sub

    async def _leave(self, sub: Subscription) -> None:
        async with self._lock:
            self._subs.discard(sub)
            await self._release_dead()
            if not self._subs and self._conn is not None:
                conn, self._conn = self._conn, None
                conn.remove_termination_listener(self._terminated)
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.remove_listener(self.channel, self._notified)
                await self.pool.release(conn)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._dead.append(self._conn)
                self._conn = None
            await self._release_dead()
