"""What the two stores hold: tables, fields, their types and which are mandatory.

Field names in a mapping are checked against this catalogue (or are
``custom.<key>`` with a declared type), so no name from outside is
ever pasted into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Side = Literal["desk", "crm"]
FieldType = Literal["text", "integer", "numeric", "boolean", "email"]
FIELD_TYPES: tuple[FieldType, ...] = ("text", "integer", "numeric", "boolean", "email")

SYNCED_MODULES = ("contacts", "accounts", "products")
OTHER: dict[Side, Side] = {"desk": "crm", "crm": "desk"}

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""A custom field's key (``custom.<key>``): its name in the store, case kept (a hosted
store's API name: Zoho CRM's ``Customer_Tier``, Zoho Desk's ``cf_region``)."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: FieldType
    mandatory: bool = False


def _fields(*items: Field) -> dict[str, Field]:
    return {f.name: f for f in items}


_CONTACT = (
    Field("first_name", "text"),
    Field("last_name", "text", mandatory=True),
    Field("email", "email"),
    Field("secondary_email", "email"),
    Field("phone", "text"),
    Field("mobile", "text"),
)
_ACCOUNT = (
    Field("account_name", "text", mandatory=True),
    Field("website", "text"),
    Field("phone", "text"),
    Field("industry", "text"),
)
_PRODUCT = (
    Field("product_name", "text", mandatory=True),
    Field("product_code", "text"),
    Field("unit_price", "numeric"),
)

STANDARD_FIELDS: dict[tuple[Side, str], dict[str, Field]] = {
    ("desk", "contacts"): _fields(*_CONTACT),
    ("crm", "contacts"): _fields(*_CONTACT),
    ("desk", "accounts"): _fields(*_ACCOUNT),
    ("crm", "accounts"): _fields(*_ACCOUNT),
    ("desk", "products"): _fields(*_PRODUCT),
    ("crm", "products"): _fields(*_PRODUCT),
}


def default_field_pairs(module: str) -> list[tuple[str, str]]:
    """Standard fields come pre-mapped, name to same name (SYNC-04)."""
    return [(name, name) for name in STANDARD_FIELDS[("desk", module)]]
