"""What a desk profile's agents see of the CRM for a desk contact or account
(PERM-01 … PERM-04), assembled at read time.

The CRM view projection (``projections/crm_view.py``) keeps the CRM's contacts,
accounts, deals, notes and activities from the event log; this finds the CRM record a
desk contact or account is linked to through the mapping table as it is now
(``sync.links``: it is not a projection of the log, so it is joined here, as the
customer statistics do), picks the record the profile shows (PERM-02), and passes each
item through the profile's access (PERM-03, ``projections.people.restrict``): full,
restricted to ``RESTRICTED_FIELDS``, or left out.

What is shown, by the desk record asked for and what the profile shows:

* desk contact, ``contacts``: its linked CRM contact;
* desk contact, ``accounts``: that CRM contact's account;
* desk account, ``accounts``: its linked CRM account;
* desk account, ``contacts``: that CRM account's contacts (each on its own, ordered by
  id): a profile that shows contacts is shown the people, whatever the agent opened.

A shown record's deals, notes, calls, events and tasks are those that hang off it
directly (a contact's deals are those naming the contact; an account's, those naming
the account), and the notes, calls, events and tasks attached to those deals, among the
record's own, each naming its deal (``parent_module`` 'deals', ``parent_id``). They are
matched at read time, so they follow a deal given to another contact or account; each
goes through its own item's access, as every note or activity does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from daemon.service import NotFound
from projections.crm_view import ACTIVITIES
from projections.db import loads_json
from projections.people import ITEMS, DeskProfile, Item, restrict

DeskModule = Literal["contacts", "accounts"]
LISTED_ITEMS: tuple[Item, ...] = tuple(item for item in ITEMS if item != "info")
"""The items that are lists of records (every item but the record's information)."""


class NothingToShow(NotFound):
    """The view is empty for a reason the caller is told (a 404 with it, never an
    empty 200: "not visible" and "nothing linked" must not look like "no data");
    ``code`` is one of ``no_profile``, ``not_visible``, ``not_linked``, ``not_in_view``."""


@dataclass(frozen=True, slots=True)
class CrmRecord:
    """A shown CRM contact or account, and what hangs off it, in full."""

    info: dict[str, Any]
    items: Mapping[Item, Sequence[dict[str, Any]]] = field(default_factory=dict)


def profile_named(profiles: Mapping[str, DeskProfile], name: str | None) -> DeskProfile:
    if not name:
        raise NothingToShow("no_profile", "name the desk profile (?profile=NAME)")
    profile = profiles.get(name)
    if profile is None:
        raise NothingToShow("no_profile", f"no desk profile is named {name!r}")
    return profile


def hidden(profile: DeskProfile) -> NothingToShow:
    """PERM-01: the profile's agents do not see the integration."""
    return NothingToShow("not_visible",
                         f"the CRM integration is hidden from desk profile {profile.name!r}")


def view_of(record: CrmRecord, profile: DeskProfile) -> dict[str, Any]:
    """One shown record as ``profile`` may see it: each item full, restricted or left
    out. Even the record's id is inside ``info``: with no access to the information, an
    agent is not told which CRM record it is."""
    shown: dict[str, Any] = {}
    info = restrict("info", profile.access_to("info"), record.info)
    if info is not None:
        shown["info"] = info
    for item in LISTED_ITEMS:
        access = profile.access_to(item)
        if access != "none":
            shown[item] = [restrict(item, access, values) for values in record.items.get(item, ())]
    return shown


def assemble(profile: DeskProfile, desk_module: DeskModule, desk_id: str,
             records: Sequence[CrmRecord]) -> dict[str, Any]:
    """The answer: what was asked, the profile's rules, and each shown record."""
    if not profile.visible:
        raise hidden(profile)
    return {"desk": {"module": desk_module, "id": desk_id}, "profile": profile.name,
            "shows": profile.shows,
            "access": {item: profile.access_to(item) for item in ITEMS},
            "records": [view_of(record, profile) for record in records]}


async def crm_view(pool: asyncpg.Pool, profile: DeskProfile, desk_module: DeskModule,
                   desk_id: str) -> dict[str, Any]:
    """What ``profile`` sees of the CRM for a desk contact or account; ``NothingToShow``
    (with the reason) when it sees nothing."""
    if not profile.visible:  # before any read: a hidden integration reveals no link
        raise hidden(profile)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        records = await _shown(conn, profile, desk_module, desk_id)
    return assemble(profile, desk_module, desk_id, records)


_LINKED = "SELECT crm_id FROM sync.links WHERE module = $1 AND desk_id = $2"
_RECORD = ('SELECT record_id, "values", account_id FROM crm_view.records'
           " WHERE module = $1 AND record_id = $2")
_CONTACTS_OF = ('SELECT record_id, "values", account_id FROM crm_view.records'
                " WHERE module = 'contacts' AND account_id = $1"
                " ORDER BY length(record_id), record_id")


def _hanging_off(column: str, own_modules: str) -> str:
    """The records hanging off the contacts or accounts ``column`` names (any of $1),
    each with its ``owner``: those naming it, and the notes and activities of the deals
    naming it (an activity names its deal in its values: ``parent_module`` 'deals',
    ``parent_id``; matched here, at read time, so it follows the deal to whichever
    contact and account the deal names now)."""
    return ('SELECT owner, module, record_id, "values" FROM ('
            f'SELECT {column} AS owner, module, record_id, "values" FROM crm_view.records'
            f" WHERE {column} = ANY($1::text[]) AND module NOT IN {own_modules}"
            f' UNION ALL SELECT d.{column}, a.module, a.record_id, a."values"'
            " FROM crm_view.records d JOIN crm_view.records a"
            " ON a.\"values\"->>'parent_module' = 'deals'"
            " AND a.\"values\"->>'parent_id' = d.record_id"
            f" WHERE d.module = 'deals' AND d.{column} = ANY($1::text[])"
            f" AND a.module IN {ACTIVITIES!r}) AS hanging")


_HANGING_OFF = {"contacts": _hanging_off("contact_id", "('contacts')"),
                "accounts": _hanging_off("account_id", "('contacts', 'accounts')")}
_ACCOUNT_NAMES = ('SELECT record_id, "values"->>\'account_name\' AS name FROM crm_view.records'
                  " WHERE module = 'accounts' AND record_id = ANY($1::text[])")
_ORDER = " ORDER BY \"values\"->>'created_time' DESC NULLS LAST, length(record_id), record_id"


async def _shown(conn: Any, profile: DeskProfile, desk_module: DeskModule, desk_id: str
                 ) -> list[CrmRecord]:
    singular = desk_module[:-1]
    crm_id = await conn.fetchval(_LINKED, desk_module, desk_id)
    if crm_id is None:
        raise NothingToShow("not_linked",
                            f"desk {singular} {desk_id} is linked to no CRM {singular}")
    linked = await conn.fetchrow(_RECORD, desk_module, crm_id)
    if linked is None:
        raise NothingToShow("not_in_view",
                            f"CRM {singular} {crm_id} (linked to desk {singular} {desk_id})"
                            " is not in the CRM view: deleted, or not captured yet")
    if profile.shows == desk_module:
        rows = [linked]
    elif profile.shows == "accounts":  # a desk contact, shown as its CRM contact's account
        account = (None if linked["account_id"] is None
                   else await conn.fetchrow(_RECORD, "accounts", linked["account_id"]))
        if account is None:
            raise NothingToShow("not_in_view",
                                f"CRM contact {crm_id} (linked to desk contact {desk_id})"
                                " has no account in the CRM view")
        rows = [account]
    else:  # a desk account, shown as its CRM account's contacts
        rows = list(await conn.fetch(_CONTACTS_OF, crm_id))
    return await _records(conn, profile.shows, rows)


async def _records(conn: Any, module: DeskModule, rows: list[Any]) -> list[CrmRecord]:
    """The records of ``rows`` with what hangs off them: two queries however many (an
    account's contacts share one account, and each has its notes and activities)."""
    ids = [row["record_id"] for row in rows]
    items: dict[str, dict[Item, list[dict[str, Any]]]] = {
        record_id: {item: [] for item in LISTED_ITEMS} for record_id in ids}
    for hanging in await conn.fetch(_HANGING_OFF[module] + _ORDER, ids):
        items[hanging["owner"]][hanging["module"]].append(
            with_id(hanging["record_id"], loads_json(hanging["values"])))
    names: dict[str, str | None] = {}
    if module == "contacts":
        accounts = sorted({row["account_id"] for row in rows if row["account_id"] is not None})
        names = {r["record_id"]: r["name"] for r in await conn.fetch(_ACCOUNT_NAMES, accounts)}
    records = []
    for row in rows:
        info = with_id(row["record_id"], loads_json(row["values"]))
        info = (contact_info(info, names.get(row["account_id"])) if module == "contacts"
                else account_info(info))
        records.append(CrmRecord(info, items[row["record_id"]]))
    return records


def with_id(record_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """A record's values with its id as text, as events and the links give ids."""
    return {**values, "id": record_id}


def contact_info(values: dict[str, Any], account_name: str | None) -> dict[str, Any]:
    """A CRM contact's information: its values, ``name`` (first and last names) and
    ``account_name`` (its account's name), the two a restricted view keeps."""
    parts = [values.get("first_name"), values.get("last_name")]
    name = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip()) or None
    return {**values, "name": name, "account_name": account_name}


def account_info(values: dict[str, Any]) -> dict[str, Any]:
    """A CRM account's information: its values, and ``name`` (its account name)."""
    name = values.get("account_name")
    return {**values, "name": name if isinstance(name, str) else None}
