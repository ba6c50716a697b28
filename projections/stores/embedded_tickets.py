"""A person's ticket actions on the embedded desk (``desk.tickets`` and
``desk.ticket_threads``): close a ticket, reply to it (the ``desk_tickets`` port).
Each runs in its own transaction as a person's edit (``syncd.origin = 'user'``), so
the desk's capture puts it in the outbox like any change made on the desk.

With ``projections.stores.embedded``, the only module outside the migrations that
names the desk's ticket tables.
"""

from __future__ import annotations

import asyncpg

from projections.handshake import STANDARD_STATUSES
from projections.stores.desk_tickets import Closed


class EmbeddedDeskTickets:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def close(self, department_id: int, ticket_id: int) -> Closed | None:
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
                    author: str | None) -> str | None:
        """An outgoing reply in ``desk.ticket_threads``, on the ticket's channel."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('syncd.origin', 'user', true)")
            thread_id: int | None = await conn.fetchval(
                "INSERT INTO desk.ticket_threads (ticket_id, direction, kind, author,"
                " channel, content) SELECT t.id, 'out', 'reply', $3, t.channel, $4"
                " FROM desk.tickets t WHERE t.id = $1 AND t.department_id = $2"
                " AND NOT t.deleted RETURNING id",
                ticket_id, department_id, author, content)
        return None if thread_id is None else str(thread_id)
