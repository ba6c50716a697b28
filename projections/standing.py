"""A customer's standing in the CRM, as a pure function: the handshake's rule (HS-01,
HS-02) for code that must decide it in Python, event by event.

Why it exists: the handshake board computes standings in SQL, set-based, for the
tickets a batch touches (``projections.handshake``: ``INSERT_KEYS``, ``STANDINGS``,
``PLACEMENT`` and ``handshake.contact_standing``). A sales signal (TICKET-09) needs the
standing *at the moment of one event* inside a batch, which that SQL cannot give, so
the same rule is written here once more, as a function of values, and tested against
the board on random streams (tests/integration/test_sales_signals_standing.py):

* a lead stands at 1; a contact at 3 with a won deal, else 2 with an open deal, else 1;
* a ticket's standing is the best among the CRM records holding its requester's
  e-mail key; failing any, its phone key; failing both, 0 (``new``: not in the CRM).

The origin a signal is tagged with (``projections.people.Origin``) is that standing
told apart by kind: ``customer`` at 3, ``contact`` when any matching record is a
contact (standing 1 or 2: a contact with no won deal), else ``lead``; None when nothing
matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from projections.people import Origin

Kind = Literal["contact", "lead"]


def contact_standing(stages: Iterable[str]) -> int:
    """``handshake.contact_standing``: 3 with a won deal, 2 with an open one, else 1."""
    seen = set(stages)
    if "won" in seen:
        return 3
    if "open" in seen:
        return 2
    return 1


def record_standing(kind: Kind, stages: Iterable[str]) -> int:
    """A CRM record's standing (``INSERT_KEYS``): a lead's deals do not count."""
    return 1 if kind == "lead" else contact_standing(stages)


def origin(by_email: Iterable[tuple[Kind, int]], by_phone: Iterable[tuple[Kind, int]]
           ) -> Origin | None:
    """The origin of a ticket whose requester's e-mail key is held by ``by_email`` and
    phone key by ``by_phone`` (each ``(kind, standing)``): the e-mail decides when it
    matches anything (``PLACEMENT``)."""
    matches = list(by_email) or list(by_phone)
    if not matches:
        return None
    if max(standing for _, standing in matches) == 3:
        return "customer"
    if any(kind == "contact" for kind, _ in matches):
        return "contact"
    return "lead"
