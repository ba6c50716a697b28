"""Which CRM modules show a record's desk tickets in a related list (TICKET-01).

Why it exists: the sources let the administrator choose the modules whose records list
their tickets ("Listas relacionadas de CRM", "Listes associées à CRM"): Accounts,
Contacts and Deals come chosen, and only a module with an e-mail field qualifies,
because a ticket reaches a CRM record through its requester's e-mail: the desk contact
the sync matched (by e-mail) to a CRM contact. The integration aggregate keeps the
choice (``Integration.choose_related_list_modules``); this module only says which CRM
modules may be chosen, and why the others may not.
"""

from __future__ import annotations

DEFAULT_MODULES = ("contacts", "accounts", "deals")
"""Chosen from the start, as the sources pre-map them."""

CHOOSABLE: dict[str, str] = {
    "contacts": "its own e-mail field (the one the sync matches on)",
    "leads": "its own e-mail field",
    "accounts": "its contacts' e-mail (pre-mapped by the sources)",
    "deals": "its contacts' e-mail (pre-mapped by the sources)",
}
"""The CRM modules that qualify, each with the e-mail that makes it qualify."""

NO_EMAIL = ("products", "notes", "calls", "events", "tasks")
"""The CRM store's other modules: none has an e-mail field."""


def refusal(module: str) -> str | None:
    """Why ``module`` cannot show a related list of tickets, or None if it can."""
    if module in CHOOSABLE:
        return None
    if module in NO_EMAIL:
        return (f"{module} has no e-mail field: only a module with one can list tickets"
                f" (TICKET-01)")
    return f"{module!r} is not a CRM module; choose among {sorted(CHOOSABLE)}"


def in_order(modules: set[str]) -> list[str]:
    """The chosen modules in one fixed order (``CHOOSABLE``'s), so the same choice is
    recorded the same way."""
    return [m for m in CHOOSABLE if m in modules]
