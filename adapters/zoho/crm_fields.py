"""The Zoho CRM's names for the sync's modules and fields, both ways.

The sync speaks the embedded stores' names (``projections.catalog``): ``contacts``
with ``last_name``, ``email``, ``account_id``... Zoho CRM v8 names modules and
fields by their API names (``Contacts``, ``Last_Name``, ``Email``, the lookup
``Account_Name`` holding ``{"id", "name"}``). Standard fields are translated by
the tables below; any other field of a record that is not Zoho's own bookkeeping
is a custom field, kept under ``custom`` by its API name. The sync's key of a
record it created is kept in an external-id field (``sync_key_field``, a custom
field the administrator adds, ``Syncd_Key`` by default) and reported as
``SYNC_KEY_FIELD``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from projections.stores.port import SYNC_KEY_FIELD, Values

MODULES = {"contacts": "Contacts", "accounts": "Accounts", "products": "Products",
           "leads": "Leads", "deals": "Deals", "notes": "Notes", "calls": "Calls",
           "events": "Events", "tasks": "Tasks"}
STANDING_MODULES = ("leads", "deals")
"""Read for the handshake board (a requester's standing), never written: the poll
captures them beside the synced modules."""
ACTIVITY_MODULES = ("notes", "calls", "events", "tasks")
"""Read for what desk agents see of a CRM record (PERM-03), never written: the poll
captures them too, each with the record it hangs off (``parent_module``,
``parent_id``), named as the embedded CRM's ``crm.notes`` and its likes name them."""

FIELDS = {
    "contacts": {"first_name": "First_Name", "last_name": "Last_Name", "email": "Email",
                 "secondary_email": "Secondary_Email", "phone": "Phone",
                 "mobile": "Mobile", "account_id": "Account_Name"},
    "accounts": {"account_name": "Account_Name", "website": "Website", "phone": "Phone",
                 "industry": "Industry"},
    "products": {"product_name": "Product_Name", "product_code": "Product_Code",
                 "unit_price": "Unit_Price"},
    "leads": {"first_name": "First_Name", "last_name": "Last_Name", "email": "Email",
              "phone": "Phone", "company": "Company"},
    "deals": {"deal_name": "Deal_Name", "stage": "Stage", "amount": "Amount",
              "contact_id": "Contact_Name", "account_id": "Account_Name"},
    "notes": {"content": "Note_Content"},
    "calls": {"subject": "Subject", "duration_seconds": "Call_Duration_in_seconds"},
    "events": {"subject": "Event_Title", "starts_at": "Start_DateTime"},
    "tasks": {"subject": "Subject", "due_date": "Due_Date", "status": "Status"},
}
PARENTS = {"notes": ("Parent_Id",), "calls": ("Who_Id", "What_Id"),
           "events": ("Who_Id", "What_Id"), "tasks": ("Who_Id", "What_Id")}
"""The lookups naming the record an activity hangs off: a note's ``Parent_Id`` (with
its module), an activity's contact (``Who_Id``) or other record (``What_Id``, its
module in ``$se_module``). Asked for beside ``FIELDS``; never custom fields."""
LOOKUPS = {("contacts", "account_id"), ("deals", "contact_id"), ("deals", "account_id")}
"""Fields that are lookups in Zoho (``{"id": ...}``) and record ids in the sync."""
NUMBERS = {("products", "unit_price"), ("deals", "amount")}
"""Fields that are numbers in Zoho's JSON (and text in a bulk read's CSV)."""

MANDATORY = {"contacts": "Last_Name", "accounts": "Account_Name", "products": "Product_Name"}

SYSTEM_FIELDS = frozenset({
    "id", "Owner", "Created_By", "Modified_By", "Created_Time", "Modified_Time",
    "Last_Activity_Time", "Tag", "Record_Status__s", "Layout", "Full_Name",
    "Unsubscribed_Mode", "Unsubscribed_Time", "Locked__s", "Data_Source",
    "Data_Processing_Basis_Details", "Enrich_Status__s", "Change_Log_Time__s"})
"""Zoho's bookkeeping on every record: never a custom field of the sync's."""


STAGE_KINDS = {"Open": "open", "Closed Won": "won", "Closed Lost": "lost"}
"""A deal stage's ``forecast_type`` (its picklist value's, in the Stage field's
metadata) as the sync's stage."""


def stage_kind(stage: Any, forecast_types: dict[str, str]) -> str:
    """A Zoho deal stage as ``open``, ``won`` or ``lost``: by the org's picklist
    (``forecast_types``: value to forecast type), else by Zoho's standard names
    (``Closed Won``; ``Closed Lost``, ``Closed-Lost to Competition``)."""
    text = stage.strip() if isinstance(stage, str) else ""
    kind = STAGE_KINDS.get(forecast_types.get(text, ""))
    if kind is not None:
        return kind
    folded = text.lower().replace("-", " ")
    return "won" if folded.startswith("closed won") else (
        "lost" if folded.startswith("closed lost") else "open")


def module_name(module: str) -> str:
    try:
        return MODULES[module]
    except KeyError:
        raise ValueError(f"the Zoho CRM adapter does not sync {module!r}") from None


def zoho_time(value: str) -> dt.datetime:
    """Zoho's ISO 8601 times carry the org's offset (``2026-12-02T10:00:00+05:30``)."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def from_zoho(module: str, record: dict[str, Any], *, sync_key_field: str) -> Values:
    """A Zoho record as the port's values (the sync's names, ``custom``, the times)."""
    names = FIELDS[module]
    by_api = {api: ours for ours, api in names.items()}
    values: Values = {ours: None for ours in names}
    custom: dict[str, Any] = {}
    for api, value in record.items():
        if api in by_api:
            ours = by_api[api]
            if (module, ours) in LOOKUPS:
                value = int(value["id"]) if isinstance(value, dict) and value.get("id") \
                    else None
            values[ours] = value
        elif api == sync_key_field:
            values[SYNC_KEY_FIELD] = value
        elif api not in SYSTEM_FIELDS and api not in PARENTS.get(module, ()) \
                and not api.startswith("$"):
            custom[api] = value
    values["custom"] = custom
    if module in PARENTS:
        values["parent_module"], values["parent_id"] = parent_of(module, record)
    if module == "leads":  # listed with ``converted=both``: Zoho marks a converted one
        values["converted"] = bool(record.get("$converted"))
    values["deleted"] = False  # the recycle bin's records are not returned by reads
    values["created_time"] = record.get("Created_Time")
    values["modified_time"] = record.get("Modified_Time")
    return values


def parent_of(module: str, record: dict[str, Any]) -> tuple[str | None, int | None]:
    """The record an activity hangs off, as ``(module, id)`` in the sync's names: a
    note's parent; an activity's contact (``Who_Id``), else its ``What_Id`` record (an
    account, a deal, ...); ``(None, None)`` when it names none the sync knows."""
    def ours(zoho_module: Any) -> str | None:
        return next((m for m, z in MODULES.items() if z == zoho_module), None)

    if module == "notes":
        parent = record.get("Parent_Id") or {}
        named = (parent.get("module") or {}).get("api_name") or record.get("$se_module")
        found = ours(named), parent.get("id")
    elif (record.get("Who_Id") or {}).get("id"):
        found = "contacts", record["Who_Id"]["id"]
    else:
        found = ours(record.get("$se_module")), (record.get("What_Id") or {}).get("id")
    return (found[0], int(found[1])) if found[0] and found[1] else (None, None)


def from_bulk_row(module: str, row: dict[str, str]) -> dict[str, Any]:
    """A bulk read's CSV row as the record the JSON API would give: its ``Id`` the
    ``id``, an empty cell null, a lookup's id (what the CSV holds) as ``{"id": …}``, a
    number as a number; a copy fetched later by the JSON API then compares equal."""
    kinds = {api: (module, ours) for ours, api in FIELDS[module].items()}
    record: dict[str, Any] = {}
    for api, text in row.items():
        value: Any = None if text == "" else text
        if value is not None and kinds.get(api) in LOOKUPS:
            value = {"id": value}
        elif value is not None and kinds.get(api) in NUMBERS:
            value = float(value)
        record["id" if api == "Id" else api] = value
    return record


def to_zoho(module: str, payload: Values, *, sync_key_field: str,
            resolved: dict[str, str] | None = None) -> dict[str, Any]:
    """A command's values as a Zoho record. ``resolved``: the Zoho ids of placeholders
    the values name (a contact's account the sync created)."""
    names = FIELDS[module]
    record: dict[str, Any] = {}
    for ours, value in payload.items():
        if ours == "custom":
            record.update(value or {})
        elif ours == SYNC_KEY_FIELD:
            record[sync_key_field] = value
        elif ours in names:
            if (module, ours) in LOOKUPS:
                if isinstance(value, str) and resolved and value in resolved:
                    value = resolved[value]
                value = None if value is None else {"id": str(value)}
            record[names[ours]] = value
    return record
