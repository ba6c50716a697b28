"""The handshake board's ticket actions on Zoho Desk (the ``DeskTickets`` port of
``projections.stores.desk_tickets``): close is ``PATCH /api/v1/tickets/{id}`` with
``status: "Closed"``, reply is ``POST /api/v1/tickets/{id}/sendReply`` by e-mail to
the ticket's address, from the department's default From address (Zoho refuses an
e-mail reply without one of its From addresses; ``GET /api/v1/mailReplyAddress``).
Each first reads the ticket, which must be the department's.

Like every write of the daemon, both carry the source id the webhook ignores, so
the close raises no callback: its answer (the ticket as Zoho holds it now) is
captured into the desk's outbox at once, as a person's edit, and the board follows
it without waiting for the poll. A reply is not captured (threads are not on the
board); should Zoho change the ticket with it, the poll brings that change (the
source id keeps its callback away). Zoho's reply has no author field: it is the
agent whose token the daemon holds, whatever ``author`` says.

Zoho's answers become the port's: an unknown ticket is ``None``; a refusal
(``INVALID_DATA``, say) is ``DeskRefused``; credentials or scopes refused, the
service out of reach, its credits spent are ``DeskUnavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg

from adapters.remote_capture import RemoteCapture
from adapters.write_errors import Refused, WriteError
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_fields import from_desk
from projections.stores.desk_tickets import Closed, DeskRefused, DeskUnavailable

CLOSED = "Closed"
T = TypeVar("T")


class ZohoDeskTickets:
    def __init__(self, desk: ZohoDesk, pool: asyncpg.Pool) -> None:
        self.desk = desk
        self.capture = RemoteCapture(pool, "desk")

    async def close(self, department_id: int, ticket_id: int) -> Closed | None:
        ticket = await self._ticket(department_id, ticket_id)
        if ticket is None:
            return None
        if ticket.get("statusType") == CLOSED:
            return Closed(previous_status=str(ticket.get("status")), changed=False)
        answer = await _answered(self.desk.send("PATCH", f"/tickets/{ticket_id}",
                                                {"status": CLOSED}))
        await captured_ticket(self.capture, self.desk, answer)
        return Closed(previous_status=str(ticket.get("status")), changed=True)

    async def reply(self, department_id: int, ticket_id: int, *, content: str,
                    author: str | None) -> str | None:
        ticket = await self._ticket(department_id, ticket_id)
        if ticket is None:
            return None
        body = {"channel": "EMAIL", "fromEmailAddress": await self._from(department_id),
                "content": content, "contentType": "plainText"}
        if ticket.get("email"):
            body["to"] = ticket["email"]
        thread = await _answered(self.desk.send("POST", f"/tickets/{ticket_id}/sendReply",
                                                body))
        return str(thread["id"])

    async def _ticket(self, department_id: int, ticket_id: int) -> dict[str, Any] | None:
        ticket = await _answered(self.desk.record("tickets", str(ticket_id), for_write=True))
        if ticket is None or str(ticket.get("departmentId")) != str(department_id):
            return None
        return ticket

    async def _from(self, department_id: int) -> str:
        address = await _answered(self.desk.from_address(str(department_id)))
        if address is None:
            raise DeskRefused(f"department {department_id} has no active From address in"
                              " Zoho Desk to reply from: add one to the department")
        return address


async def captured_ticket(capture: RemoteCapture, desk: ZohoDesk,
                          ticket: dict[str, Any]) -> None:
    """A ticket as a write's answer gives it, captured at once as a person's edit (the
    write carried the source id the webhook ignores)."""
    values = from_desk("tickets", ticket, sync_key_field=desk.options.sync_key_field)
    del values["deleted"]
    await capture.observed("tickets", [(str(ticket["id"]), values)])


async def _answered(call: Awaitable[T]) -> T:
    """The desk's answer, its errors the port's."""
    try:
        return await call
    except WriteError as err:
        raise _port_error(err) from None


def _port_error(err: WriteError) -> Exception:
    if isinstance(err, Refused):
        return DeskRefused(f"Zoho Desk refused it: {err.detail}")
    return DeskUnavailable(f"Zoho Desk does not answer now ({type(err).__name__}:"
                           f" {err.detail}); try again later")
