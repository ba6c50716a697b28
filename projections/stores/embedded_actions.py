"""The embedded desk's adapter of the ticket-action port (``desk_actions.DeskActions``):
``desk.tickets``, ``desk.ticket_threads``, ``desk.ticket_attachments`` and
``desk.contacts``, written on the batch's connection, inside the batch transaction.

Every write is a person's edit (``syncd.origin = 'user'``): the desk's capture turns it
into events, as if the CRM user had made it on the desk, so the board, the statistics,
the status automation and the sync (a new contact) follow from the log. The sync, which
runs earlier in the batch, marks the transaction's writes as its own; each write here
sets the person's origin for itself and puts the earlier one back, so nothing after it
in the batch is captured as a person's.

With ``embedded`` and ``embedded_tickets``, the only module outside the migrations that
names the desk's tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from projections.db import Conn
from projections.stores.desk_actions import DeskRefused, Ticket
from projections.ticket_requests import DUE_DATE, TICKET_FIELDS, Attachment, parse_time


class EmbeddedDeskActions:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def _as_person(self) -> AsyncIterator[None]:
        before = await self.conn.fetchval("SELECT current_setting('syncd.origin', true)")
        await self.conn.execute("SELECT set_config('syncd.origin', 'user', true)")
        try:
            yield
        finally:
            await self.conn.execute("SELECT set_config('syncd.origin', $1, true)",
                                    before or "")

    async def ticket(self, ticket_id: str) -> Ticket | None:
        if not ticket_id.isdigit():
            return None
        row = await self.conn.fetchrow(
            "SELECT id::text AS id, status, status_type, priority, requester_email"
            " FROM desk.tickets WHERE id = $1 AND NOT deleted FOR UPDATE", int(ticket_id))
        return None if row is None else Ticket(**dict(row))

    async def contact_email(self, contact_id: str) -> tuple[bool, str | None]:
        row = await self.conn.fetchrow(
            "SELECT email FROM desk.contacts WHERE id = $1 AND NOT deleted",
            int(contact_id))
        return (False, None) if row is None else (True, row["email"])

    async def create_contact(self, *, first_name: str | None, last_name: str,
                             email: str | None, phone: str | None) -> str:
        async with self._as_person():
            contact_id = await self.conn.fetchval(
                "INSERT INTO desk.contacts (first_name, last_name, email, phone)"
                " VALUES ($1, $2, $3, $4) RETURNING id", first_name, last_name, email, phone)
        return str(contact_id)

    async def create_ticket(self, *, department_id: str, subject: str, contact_id: str,
                            requester_email: str | None, priority: str | None,
                            due_date: dt.datetime | None) -> str:
        await self._department(department_id)
        async with self._as_person():
            ticket_id = await self.conn.fetchval(
                "INSERT INTO desk.tickets (department_id, subject, status, priority, channel,"
                " requester_email, contact_id, due_date)"
                " VALUES ($1, $2, 'Open', $3, 'CRM', $4, $5, $6) RETURNING id",
                int(department_id), subject, priority, requester_email, int(contact_id),
                due_date)
        return str(ticket_id)

    async def add_thread(self, ticket_id: str, *, direction: str, kind: str,
                         author: str | None, content: str,
                         recipients: Sequence[str] | None) -> str:
        async with self._as_person():
            thread_id = await self.conn.fetchval(
                "INSERT INTO desk.ticket_threads (ticket_id, direction, kind, author, channel,"
                " content, recipients) SELECT t.id, $2, $3, $4, t.channel, $5, $6"
                " FROM desk.tickets t WHERE t.id = $1 RETURNING id",
                int(ticket_id), direction, kind, author, content,
                None if recipients is None else list(recipients))
        if thread_id is None:
            raise DeskRefused(f"ticket {ticket_id} is not in the desk")
        return str(thread_id)

    async def attach(self, ticket_id: str, thread_id: str | None,
                     attachments: Sequence[Attachment]) -> list[str]:
        if not attachments:
            return []
        async with self._as_person():
            rows = await self.conn.fetch(
                "INSERT INTO desk.ticket_attachments (ticket_id, thread_id, name, size,"
                " content_type, url, object_key)"
                " SELECT $1, $2, a.name, a.size, a.content_type, a.url, a.object_key"
                " FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[])"
                " WITH ORDINALITY AS a(name, size, content_type, url, object_key, n)"
                " ORDER BY a.n RETURNING id",
                int(ticket_id), None if thread_id is None else int(thread_id),
                [a.name for a in attachments], [a.size for a in attachments],
                [a.content_type.lower() for a in attachments], [a.url for a in attachments],
                [a.object_key for a in attachments])
        return [str(row["id"]) for row in rows]

    async def update_ticket(self, ticket_id: str, fields: dict[str, Any]) -> None:
        standard = {k: v for k, v in fields.items() if not k.startswith("custom.")}
        custom = {k.removeprefix("custom."): v for k, v in fields.items()
                  if k.startswith("custom.")}
        if "status" in standard and await self.conn.fetchval(
                "SELECT desk.status_type($1)", standard["status"]) is None:
            raise DeskRefused(f"status {standard['status']!r} is not a status of the desk")
        if "department_id" in standard:
            await self._department(str(standard["department_id"]))
        if DUE_DATE in standard:
            standard[DUE_DATE] = parse_time(standard[DUE_DATE], DUE_DATE)
        # Names come from the catalogue (ticket_requests.TICKET_FIELDS, checked before
        # this is called), never from outside as they are.
        names = sorted(standard)
        if set(names) - set(TICKET_FIELDS) - {DUE_DATE}:
            raise DeskRefused(f"not ticket fields: {sorted(set(names) - set(TICKET_FIELDS))}")
        sets = "".join(f"{name} = ${n + 3}, " for n, name in enumerate(names))
        async with self._as_person():
            await self.conn.execute(
                f"UPDATE desk.tickets SET {sets}"
                " custom = jsonb_strip_nulls(custom || $2::jsonb) WHERE id = $1",
                int(ticket_id), msgspec.json.encode(custom).decode(),
                *[standard[name] for name in names])

    async def delete_ticket(self, ticket_id: str) -> None:
        async with self._as_person():
            await self.conn.execute("UPDATE desk.tickets SET deleted = true WHERE id = $1",
                                    int(ticket_id))

    async def _department(self, department_id: str) -> None:
        if not await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM desk.departments WHERE id = $1 AND NOT deleted)",
                int(department_id)):
            raise DeskRefused(f"department {department_id} is not a department of the desk")
