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
SyncState = Literal["running", "paused", "sync_not_enabled", "not_set_up", "deleted"]


def default_mappings() -> dict[str, ModuleMapping]:
    return {module: build_mapping(module) for module in SYNCED_MODULES}


@dataclass(frozen=True)
class SyncConfig:
    direction: Direction = "two_way"
    mappings: dict[str, ModuleMapping] = field(default_factory=default_mappings)
    match_secondary_email: bool = False
    products_department_id: int | None = None
    paused: bool = False
    """Changes wait in ``sync.deferred``: an operator paused sync, or it is not enabled."""
    active: bool = True  # False once the integration is deleted (OPS-02)
    set_up: bool = True
    """The integration is set up (a desk portal linked with a CRM organisation)."""
    enabled: bool = True
    """Sync is enabled on the integration (a sync type chosen, or an import switched to
    sync): the first sync starts then, and changes are applied from then on."""

    @property
    def state(self) -> SyncState:
        """What the sync does now, for ``syncd status`` and ``/readyz``."""
        if not self.active:
            return "deleted"
        if not self.set_up:
            return "not_set_up"
        if not self.enabled:
            return "sync_not_enabled"
        return "paused" if self.paused else "running"

    @property
    def waiting_for(self) -> str | None:
        """Why changes are not applied, in words; None while they are."""
        return _WAITING.get(self.state)


_WAITING: dict[str, str] = {
    "deleted": "the integration was deleted: sync has stopped for good",
    "not_set_up": "the integration is not set up: changes are captured and wait until an"
                  " administrator sets it up and enables sync (syncd integration setup,"
                  " then syncd integration sync-type)",
    "sync_not_enabled": "sync is not enabled yet: changes are captured and wait until an"
                        " administrator chooses a sync type (syncd integration sync-type)"
                        " or switches the import to sync",
    "paused": "sync is paused: changes are captured and wait until it is resumed",
}


NOT_SET_UP = SyncConfig(paused=True, set_up=False, enabled=False)
"""The configuration before any set-up: nothing is applied, changes wait (issue 15:
the first sync follows the integration, not the daemon's first start)."""
