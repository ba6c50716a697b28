"""The integration's commands and state (OPS-05), thin over ``IntegrationService``.

Every command is recorded with who gave it (``by``) and audited; a refused
command raises ``InvalidCommand`` and records nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from adapters.integration_store import IntegrationService
from daemon.service import NotFound
from projections.catalog import Side
from projections.integration import InvalidMapping
from projections.mapping import MappingError, build_mapping


async def state(integration: IntegrationService) -> dict[str, Any]:
    """The integration's configuration, at the position it was read at."""
    current = await integration.current()
    if current is None:
        raise NotFound("not_set_up", "the integration is not set up")
    cfg = current.to_sync_config()
    return {
        "position": await integration.position(),
        "desk_portal": current.desk_portal, "crm_org": current.crm_org,
        "mode": current.mode, "sync_type": current.direction, "paused": current.paused,
        "deleted": current.deleted, "match_secondary_email": current.match_secondary_email,
        "products_department_id": current.products_department_id,
        "related_list_modules": current.related_list_modules,
        "mappings": {m: [{"desk": p.desk_field.name, "crm": p.crm_field.name,
                          "desk_type": p.desk_field.type, "crm_type": p.crm_field.type}
                         for p in mapping.pairs]
                     for m, mapping in cfg.mappings.items()},
    }


async def audit(integration: IntegrationService) -> list[dict[str, Any]]:
    """Who changed what, when."""
    return [entry.as_dict() for entry in await integration.audit()]


async def set_up(integration: IntegrationService, desk_portal: str, crm_org: str, *,
                 by: str) -> None:
    await integration.set_up(desk_portal, crm_org, by=by)


async def choose_sync_type(integration: IntegrationService,
                           sync_type: Literal["two_way", "crm_to_desk"], *, by: str) -> None:
    await integration.choose_sync_type(sync_type, by=by)


async def start_legacy_import(integration: IntegrationService, *, by: str) -> None:
    await integration.start_legacy_import(by=by)


async def switch_to_sync(integration: IntegrationService, *, by: str) -> None:
    await integration.switch_to_sync(by=by)


MappingCheck = Callable[[str, list[str]], Awaitable[str | None]]
"""A hosted store's check of the custom fields a mapping names on its side
(``RemoteStore.mapping_check``): why it cannot hold them, or None."""


async def change_field_mapping(integration: IntegrationService, module: str,
                               entries: list[dict[str, Any]] | None, *, by: str,
                               checks: Mapping[Side, MappingCheck] | None = None) -> None:
    """Change a module's mapping; a hosted store's ``checks`` refuse custom fields it
    does not have (``InvalidMapping`` with its reason) before anything is recorded."""
    if entries is not None and checks:
        try:
            mapping = build_mapping(module, entries)
        except MappingError as err:
            raise InvalidMapping(module, str(err)) from None
        for side, check in checks.items():
            problem = await check(module, mapping.custom_keys(side))
            if problem is not None:
                raise InvalidMapping(module, f"{side} {problem}")
    await integration.change_field_mapping(module, entries, by=by)


async def change_matching_options(integration: IntegrationService,
                                  match_secondary_email: bool, *, by: str) -> None:
    await integration.change_matching_options(match_secondary_email, by=by)


async def choose_products_department(integration: IntegrationService, department_id: int, *,
                                     by: str) -> None:
    await integration.choose_products_department(department_id, by=by)


async def choose_related_list_modules(integration: IntegrationService, modules: list[str], *,
                                      by: str) -> None:
    await integration.choose_related_list_modules(modules, by=by)


async def pause(integration: IntegrationService, *, by: str) -> None:
    await integration.pause(by=by)


async def resume(integration: IntegrationService, *, by: str) -> None:
    await integration.resume(by=by)


async def delete(integration: IntegrationService, *, by: str) -> None:
    await integration.delete(by=by)
