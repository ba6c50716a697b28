"""Field mapping per module (SYNC-04) and its type checks (SYNC-05).

A mapping pairs a desk field with a CRM field. Standard fields are named by
the catalogue; custom fields are ``custom.<key>`` with a declared type, the key
the field's name in its store as the store spells it (letters, digits and
underscores, case kept: a hosted store's API name). Mappings are checked when
configured (types must be compatible) and values are checked when applied: a
value that does not fit its target field is a failure with its own message,
never a silent coercion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.catalog import (
    FIELD_TYPES,
    IDENTIFIER,
    STANDARD_FIELDS,
    SYNCED_MODULES,
    Field,
    FieldType,
    Side,
    default_field_pairs,
)

REASON_MANDATORY = "mandatory field missing"

# A value of the source type may be written to a field of these target types.
_COMPATIBLE: dict[FieldType, set[FieldType]] = {
    "text": {"text"},
    "email": {"email", "text"},
    "integer": {"integer", "numeric", "text"},
    "numeric": {"numeric", "text"},
    "boolean": {"boolean", "text"},
}


class MappingError(ValueError):
    """A mapping cannot be configured; the message names the field and why."""


@dataclass(frozen=True, slots=True)
class FieldPair:
    desk_field: Field
    crm_field: Field

    @property
    def key(self) -> str:
        """The name the merged state uses for this pair."""
        return f"{self.desk_field.name}>{self.crm_field.name}"

    def on(self, side: Side) -> Field:
        return self.desk_field if side == "desk" else self.crm_field


def resolve_field(side: Side, module: str, name: str, declared: str | None = None) -> Field:
    """Turn a field name from outside into a catalogue field, or refuse it."""
    if name is None:
        raise MappingError(f"{side} field is missing")
    if not isinstance(name, str):
        raise MappingError(f"{side} field name must be text, not {type(name).__name__}")
    if name.startswith("custom."):
        ident = name.removeprefix("custom.")
        if not IDENTIFIER.match(ident):
            raise MappingError(f"{side} field {name!r}: not a valid key (a custom field's key"
                               " is its API name: letters, digits and underscores, not"
                               " starting with a digit)")
        if declared not in FIELD_TYPES:
            raise MappingError(
                f"{side} field {name!r}: custom fields need a type, one of {list(FIELD_TYPES)}")
        return Field(name, declared)
    standard = STANDARD_FIELDS[(side, module)].get(name)
    if standard is None:
        known = ", ".join(STANDARD_FIELDS[(side, module)])
        raise MappingError(f"{side} field {name!r} does not exist in {module} (standard"
                           f" fields: {known}; or custom.<key> with {side}_type)")
    return standard


@dataclass(frozen=True, slots=True)
class ModuleMapping:
    module: str
    pairs: tuple[FieldPair, ...]

    def fields(self, side: Side) -> list[Field]:
        return [pair.on(side) for pair in self.pairs]

    def custom_keys(self, side: Side) -> list[str]:
        """The keys of the custom fields mapped on ``side`` (``custom.<key>``)."""
        return [f.name.removeprefix("custom.") for f in self.fields(side)
                if f.name.startswith("custom.")]


def build_mapping(module: str, entries: list[dict[str, Any]] | None = None) -> ModuleMapping:
    """Validate a module's mapping; ``None`` gives the default (standard) mapping.

    Each entry: ``{"desk": name, "crm": name}`` plus ``"desk_type"``/``"crm_type"``
    for custom fields. The secondary e-mail is always mapped (SYNC-04).
    """
    if module not in SYNCED_MODULES:
        raise MappingError(f"module {module!r} is not synced; one of {list(SYNCED_MODULES)}")
    if entries is None:
        entries = [{"desk": d, "crm": c} for d, c in default_field_pairs(module)]
    pairs: list[FieldPair] = []
    seen_desk: set[str] = set()
    seen_crm: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise MappingError("each mapping entry must be an object")
        desk_f = resolve_field("desk", module, entry.get("desk"), entry.get("desk_type"))  # type: ignore[arg-type]
        crm_f = resolve_field("crm", module, entry.get("crm"), entry.get("crm_type"))  # type: ignore[arg-type]
        if crm_f.type not in _COMPATIBLE[desk_f.type] or desk_f.type not in _COMPATIBLE[crm_f.type]:
            raise MappingError(
                f"desk {desk_f.name} ({desk_f.type}) and crm {crm_f.name} ({crm_f.type}) "
                "have incompatible types")
        if desk_f.name in seen_desk or crm_f.name in seen_crm:
            raise MappingError(f"field mapped twice: {desk_f.name} / {crm_f.name}")
        seen_desk.add(desk_f.name)
        seen_crm.add(crm_f.name)
        pairs.append(FieldPair(desk_f, crm_f))
    if module == "contacts" and "secondary_email" not in seen_desk:
        std = STANDARD_FIELDS[("desk", module)]["secondary_email"]
        if "secondary_email" not in seen_crm:
            pairs.append(FieldPair(std, STANDARD_FIELDS[("crm", module)]["secondary_email"]))
    return ModuleMapping(module, tuple(pairs))


def value_problem(value: Any, target: Field) -> str | None:
    """Why ``value`` cannot be written to ``target``, or None when it fits."""
    if value is None or value == "":
        return REASON_MANDATORY if target.mandatory else None
    kind = _kind(value)
    if target.type == "integer":
        if kind == "integer":
            return None
        return f"{kind} value given for an integer field"
    if target.type == "numeric":
        return None if kind in ("integer", "numeric") else f"{kind} value given for a numeric field"
    if target.type == "boolean":
        return None if kind == "boolean" else f"{kind} value given for a boolean field"
    if target.type == "email":
        if kind != "text":
            return f"{kind} value given for an email field"
        return None if "@" in value else "incorrect parameter or value"
    return None if kind == "text" else f"{kind} value given for a text field"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "numeric"
    if isinstance(value, str):
        return "text"
    return "structured"
