"""The desk's side of the CRM users' ticket actions, as a port (TICKET-02, TICKET-03,
TICKET-05, TICKET-10): what the ``ticket_actions`` projection asks of the desk, on the
batch's connection.

Why a port of its own rather than more of ``Store``: the store port is the sync's
(match, read, guarded write of synced records); an action is not a sync of a record
but a person's edit of the desk made on the CRM user's behalf, applied once, in the
batch that logs its event. The embedded desk's adapter
(``projections.stores.embedded_actions``) writes its tables in the batch transaction,
as a person's edits (captured, origin ``user``), so the board, the statistics and the
CRM follow from their events like from any edit made on the desk. A hosted desk has no
adapter yet: the projection fails its actions with a reason (docs/tickets.md).

Every method writes nothing when it returns None or raises ``DeskRefused``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from projections.stores.desk_tickets import DeskRefused
from projections.ticket_requests import Attachment

__all__ = ["DeskActions", "DeskRefused", "Ticket"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A live desk ticket, as an action needs it."""

    id: str
    status: str
    status_type: str | None
    priority: str | None
    requester_email: str | None


class DeskActions(Protocol):
    async def ticket(self, ticket_id: str) -> Ticket | None:
        """The live ticket (not deleted, not in the recycle bin), or None, locked for
        the rest of the batch."""
        ...

    async def contact_email(self, contact_id: str) -> tuple[bool, str | None]:
        """Whether the desk contact is live, and its e-mail."""
        ...

    async def create_contact(self, *, first_name: str | None, last_name: str,
                             email: str | None, phone: str | None) -> str:
        """A new desk contact; its id."""
        ...

    async def create_ticket(self, *, department_id: str, subject: str, contact_id: str,
                            requester_email: str | None, priority: str | None,
                            due_date: dt.datetime | None) -> str:
        """A new ticket, status Open; its id. ``DeskRefused`` for a department the desk
        does not have."""
        ...

    async def add_thread(self, ticket_id: str, *, direction: str, kind: str,
                         author: str | None, content: str,
                         recipients: Sequence[str] | None) -> str:
        """A thread of the ticket, on its channel; its id."""
        ...

    async def attach(self, ticket_id: str, thread_id: str | None,
                     attachments: Sequence[Attachment]) -> list[str]:
        """The attachments' references, on the ticket (or one of its threads); their ids."""
        ...

    async def update_ticket(self, ticket_id: str, fields: dict[str, Any]) -> None:
        """Set the fields (``projections.ticket_requests.TICKET_FIELDS``, ``due_date``,
        ``custom.<key>``; a custom field set to null is removed). ``DeskRefused`` for a
        status the desk does not know or a department it does not have."""
        ...

    async def delete_ticket(self, ticket_id: str) -> None:
        """Move the ticket to the recycle bin."""
        ...
