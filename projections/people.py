"""The people of the integration: CRM users (with their desk role, departments and
sales signals) and the desk's profiles (what their agents see of the CRM), and the
rules of what each may do and see (OPS-06, TICKET-04, TICKET-08, TICKET-09,
PERM-01 … PERM-04).

Why it exists: the sources let an administrator invite CRM users to the desk with a
role ("Invitación de usuarios de Zoho CRM a Desk": Agent, Light Agent, Admin), list
users in both as mutual users, show each user the tickets of all departments or only
of their own, let each user enable the SalesSignals they want, and give each desk
profile full or restricted access to the CRM's contact or account information,
potentials, notes and activities ("Definindo permissões no nível do perfil"). The
integration aggregate (``projections.integration``) records every change of them as
an event (who, when); this module holds the values and the rules, with no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Role = Literal["light_agent", "agent", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

Permission = Literal["comment", "reply", "forward", "assign", "create", "update", "close",
                     "delete", "link_deal"]
PERMISSIONS: tuple[Permission, ...] = get_args(Permission)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "light_agent": frozenset({"comment"}),
    "agent": frozenset({"comment", "reply", "forward"}),
    "admin": frozenset(PERMISSIONS),
}
"""OPS-06 as the sources word it: a Light Agent only comments; an Agent replies,
comments and forwards; an Admin assigns, replies, comments, forwards and does every
other action (creates, updates, closes, deletes tickets, links them to deals)."""

WITHOUT_DESK_ACCOUNT: frozenset[Permission] = frozenset({"comment"})
"""TICKET-04: a CRM user with no active desk account (not invited, invitation not
accepted, or deactivated) may only comment, whatever role the invitation named."""

Visibility = Literal["all", "departments"]
"""TICKET-08: CRM users see the tickets of every department, or only of their own."""
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)

Signal = Literal["new_ticket", "new_comment", "new_reply", "overdue_ticket",
                 "escalated_ticket", "new_rating"]
SIGNALS: tuple[Signal, ...] = get_args(Signal)
"""TICKET-09: the desk's SalesSignals a CRM user may enable (all are, by default)."""

Origin = Literal["lead", "contact", "customer"]
"""Whom a signal's ticket came from, by the customer's standing in the CRM (the
handshake's columns): a lead, a contact with no won deal, or a customer."""

CrmShows = Literal["contacts", "accounts"]
"""PERM-02: a desk profile shows the CRM's Contacts or its Accounts information."""

Item = Literal["info", "deals", "notes", "calls", "events", "tasks"]
ITEMS: tuple[Item, ...] = get_args(Item)
"""PERM-03: what a profile sees of a linked CRM record: its contact or account
information, its potentials (deals), notes, and each kind of activity on its own."""

Access = Literal["full", "restricted", "none"]
ACCESSES: tuple[Access, ...] = get_args(Access)
"""``full``: every field; ``restricted``: the fields ``RESTRICTED_FIELDS`` keeps;
``none``: the item is left out."""

RESTRICTED_FIELDS: dict[Item, tuple[str, ...]] = {
    "info": ("id", "name", "account_name"),
    "deals": ("id", "deal_name", "stage"),
    "notes": ("id", "created_time"),
    "calls": ("id", "subject", "created_time"),
    "events": ("id", "subject", "starts_at"),
    "tasks": ("id", "subject", "due_date", "status"),
}
"""What a restricted item keeps of each record: enough to know it exists and what it
is about, never contact details, amounts or contents."""


@dataclass(frozen=True, slots=True)
class CrmUser:
    """A CRM user the integration knows (the CRM's user id is ``id``)."""

    id: str
    name: str
    email: str
    role: Role | None = None
    """The desk role an invitation gave (None: never invited, and not a mutual user)."""
    desk_active: bool = False
    """Whether the user has an active desk account (an accepted invitation, or a user
    already in both: a mutual user)."""
    mutual: bool = False
    """In both the CRM and the desk before any invitation."""
    departments: frozenset[str] = frozenset()
    """The desk departments (ids) the user belongs to."""
    signals: frozenset[Signal] = frozenset(SIGNALS)
    """The SalesSignals the user enabled."""

    @property
    def permissions(self) -> frozenset[Permission]:
        if not self.desk_active or self.role is None:
            return WITHOUT_DESK_ACCOUNT
        return ROLE_PERMISSIONS[self.role]

    def missing(self, permission: Permission) -> Permission | None:
        """``permission`` if the user lacks it (the reason for a 403), else None."""
        return None if permission in self.permissions else permission

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "email": self.email, "role": self.role,
                "desk_active": self.desk_active, "mutual": self.mutual,
                "departments": sorted(self.departments), "signals": sorted(self.signals),
                "permissions": sorted(self.permissions)}


def may_see(user: CrmUser, visibility: Visibility, department_id: str | None) -> bool:
    """TICKET-08: whether ``user`` sees a ticket of ``department_id`` (a ticket with no
    department is seen only when every department is)."""
    if visibility == "all":
        return True
    return department_id is not None and department_id in user.departments


@dataclass(frozen=True, slots=True)
class DeskProfile:
    """A desk profile's view of the CRM (PERM-01 … PERM-04)."""

    name: str
    visible: bool = True
    """PERM-01: the integration is visible to the profile's agents."""
    shows: CrmShows = "contacts"
    access: Mapping[Item, Access] = field(
        default_factory=lambda: dict.fromkeys(ITEMS, "full"))
    """PERM-03, per item; an item missing here is ``full``."""
    configures: bool = False
    """PERM-04: the profile's agents may configure the integration."""

    def access_to(self, item: Item) -> Access:
        return self.access.get(item, "full")

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "visible": self.visible, "shows": self.shows,
                "access": {item: self.access_to(item) for item in ITEMS},
                "configures": self.configures}


def restrict(item: Item, access: Access, record: Mapping[str, object]
             ) -> dict[str, object] | None:
    """What a profile with ``access`` to ``item`` sees of ``record`` (None: nothing)."""
    if access == "none":
        return None
    if access == "full":
        return dict(record)
    return {name: record.get(name) for name in RESTRICTED_FIELDS[item]}


@dataclass(frozen=True, slots=True)
class People:
    """The integration's people at one position of its events."""

    users: Mapping[str, CrmUser] = field(default_factory=dict)
    profiles: Mapping[str, DeskProfile] = field(default_factory=dict)
    visibility: Visibility = "all"

    def as_json(self) -> dict[str, object]:
        return {"ticket_visibility": self.visibility,
                "users": [u.as_json() for _, u in sorted(self.users.items())],
                "profiles": [p.as_json() for _, p in sorted(self.profiles.items())]}


# -- the aggregate's stored form ----------------------------------------------------------
# The integration aggregate keeps plain JSON values (its events are stored as JSON);
# these read them back as the values above, and check what a command is given.

class InvalidPeople(ValueError):
    """A value a people command may not record; the message says which and why."""


def user_of(user_id: str, stored: Mapping[str, Any]) -> CrmUser:
    role = stored.get("role")
    return CrmUser(
        id=user_id, name=str(stored["name"]), email=str(stored["email"]),
        role=role if role in ROLES else None,
        desk_active=bool(stored.get("desk_active")), mutual=bool(stored.get("mutual")),
        departments=frozenset(stored.get("departments") or ()),
        signals=frozenset(stored.get("signals", SIGNALS)))


def profile_of(name: str, stored: Mapping[str, Any]) -> DeskProfile:
    return DeskProfile(name=name, visible=bool(stored.get("visible", True)),
                       shows=stored.get("shows", "contacts"),
                       access=dict(stored.get("access") or {}),
                       configures=bool(stored.get("configures", False)))


def checked_role(role: object) -> Role:
    if role not in ROLES:
        raise InvalidPeople(f"role must be one of {list(ROLES)}, not {role!r}")
    return role


def checked_departments(departments: object) -> list[str]:
    """Department ids: digits (the desk's ids), each once, in order."""
    if not isinstance(departments, list) or not all(
            isinstance(d, (str, int)) and str(d).isdigit() and len(str(d)) <= 18
            for d in departments):
        raise InvalidPeople("departments must be a list of desk department ids (digits)")
    return sorted({str(d) for d in departments}, key=lambda d: (len(d), d))


def checked_signals(signals: object) -> list[str]:
    if not isinstance(signals, list) or not all(s in SIGNALS for s in signals):
        raise InvalidPeople(f"signals must be a list of {list(SIGNALS)}")
    return [s for s in SIGNALS if s in signals]


def checked_visibility(visibility: object) -> Visibility:
    if visibility not in VISIBILITIES:
        raise InvalidPeople(f"ticket visibility must be one of {list(VISIBILITIES)},"
                            f" not {visibility!r}")
    return visibility


def checked_profile(visible: object, shows: object, access: object,
                    configures: object) -> dict[str, object]:
    """A profile's stored form; ``access`` names some items (the others are full)."""
    if not isinstance(visible, bool) or not isinstance(configures, bool):
        raise InvalidPeople("visible and configures must be true or false")
    if shows not in ("contacts", "accounts"):
        raise InvalidPeople(f"shows must be 'contacts' or 'accounts', not {shows!r}")
    if not isinstance(access, dict):
        raise InvalidPeople(f"access must map items {list(ITEMS)} to {list(ACCESSES)}")
    for item, level in access.items():
        if item not in ITEMS or level not in ACCESSES:
            raise InvalidPeople(
                f"access: {item!r}: {level!r} is not one of items {list(ITEMS)} with"
                f" a level of {list(ACCESSES)}")
    return {"visible": visible, "shows": shows, "configures": configures,
            "access": {item: access.get(item, "full") for item in ITEMS}}
