"""A person's ticket actions on the embedded desk (``desk.tickets`` and
``desk.ticket_threads``): close a ticket, reply to it. Each runs in its own
transaction as a person's edit (``syncd.origin = 'user'``), so the desk's capture
puts it in the outbox like any change made on the desk.

With ``projections.stores.embedded``, the only module outside the migrations that
names the desk's ticket tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.handshake import STANDARD_STATUSES


@dataclass(frozen=True, slots=True)
class Closed:
    """The ticket's status before the close, and whether the close changed it."""

    previous_status: str
    changed: bool


class EmbeddedDeskTickets:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def close(self, department_id: int, ticket_id: int) -> Closed | None:
        """Set an open ticket of the department to Closed; ``None`` if the department
        has no such ticket (or it is deleted); ``changed`` false if it was closed."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('syncd.origin', 'user', true)")
            row = await conn.fetchrow(
                "SELECT status, status_type FROM desk.tickets"
                " WHERE id = $1 AND department_id = $2 AND NOT deleted FOR UPDATE",
                ticket_id, department_id)
            if row is None:
                return None
            if row["status_type"] == STANDARD_STATUSES["closed"]:
                return Closed(previous_status=row["status"], changed=False)
            await conn.execute("UPDATE desk.tickets SET status = 'Closed' WHERE id = $1",
                               ticket_id)
        return Closed(previous_status=row["status"], changed=True)

    async def reply(self, department_id: int, ticket_id: int, *, content: str,
                    author: str | None) -> int | None:
        """Add an outgoing reply on the ticket's channel; the new thread's id, or
        ``None`` if the department has no such live ticket."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('syncd.origin', 'user', true)")
            thread_id: int | None = await conn.fetchval(
                "INSERT INTO desk.ticket_threads (ticket_id, direction, kind, author,"
                " channel, content) SELECT t.id, 'out', 'reply', $3, t.channel, $4"
                " FROM desk.tickets t WHERE t.id = $1 AND t.department_id = $2"
                " AND NOT t.deleted RETURNING id",
                ticket_id, department_id, author, content)
        return thread_id
