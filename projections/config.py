"""The sync's configuration as the projection sees it: a frozen value.

The daemon derives it from the integration aggregate (OPS-05) and hands the
projection a function that returns the current one; a change applies to the
next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from projections.catalog import SYNCED_MODULES
from projections.mapping import ModuleMapping, build_mapping

Direction = Literal["two_way", "crm_to_desk"]


def default_mappings() -> dict[str, ModuleMapping]:
    return {module: build_mapping(module) for module in SYNCED_MODULES}


@dataclass(frozen=True)
class SyncConfig:
    direction: Direction = "two_way"
    mappings: dict[str, ModuleMapping] = field(default_factory=default_mappings)
    match_secondary_email: bool = False
    products_department_id: int | None = None
    paused: bool = False
    active: bool = True  # False once the integration is deleted (OPS-02)
