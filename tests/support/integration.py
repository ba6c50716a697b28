"""Set the integration up and enable sync, as an administrator would (the first sync
and every change wait until then)."""

from __future__ import annotations

from adapters.integration_store import IntegrationService


async def enable_sync(dsn: str, sync_type: str = "two_way", *, by: str = "test-admin") -> None:
    service = await IntegrationService.open(dsn)
    try:
        if await service.current() is None:
            await service.set_up("test-desk", "test-crm", by=by)
        await service.choose_sync_type(sync_type, by=by)
    finally:
        await service.close()
