"""The board's ticket actions as a port (HS-07): close a ticket, reply to it. The
embedded desk's adapter (``embedded_tickets``) writes its tables; a hosted desk's
(``adapters/zoho/desk_tickets.py``) calls its API. The composition picks the one of
the desk store's kind, and the board's service speaks only to this port.

Either way an action is a person's edit that the desk's capture turns into events,
and the board follows from those events, never from the action's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Closed:
    """The ticket's status before the close, and whether the close changed it."""

    previous_status: str
    changed: bool


class DeskUnavailable(Exception):
    """The desk cannot be asked now (credentials, scope or licence refused, out of
    reach, its credits spent): nothing was done; the message says why."""


class DeskRefused(Exception):
    """The desk refused the action as it stands (the message: what it said)."""


class DeskTickets(Protocol):
    async def close(self, department_id: int, ticket_id: int) -> Closed | None:
        """Set an open ticket of the department to Closed; ``None`` if the department
        has no such live ticket; ``changed`` false if it was closed already."""
        ...

    async def reply(self, department_id: int, ticket_id: int, *, content: str,
                    author: str | None) -> str | None:
        """Send an agent's reply on the ticket; the new thread's id, or ``None`` if the
        department has no such live ticket."""
        ...
