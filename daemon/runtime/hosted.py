"""The hosted stores the settings name (``crm_store = "zoho"``, ``desk_store =
"zoho"``): each side's adapter built once from ``Settings``, for the daemon
(``daemon.app``: the remote store and its client) and for ``syncd integration
check`` (its checks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from adapters.call_budget import ApiLimits
from adapters.remote_store import RemoteStore
from adapters.store_access import Check
from adapters.zoho import crm_check, desk_check
from adapters.zoho.crm import ZohoCrm, ZohoCrmOptions
from adapters.zoho.crm_poll import Notifications
from adapters.zoho.crm_store import zoho_crm_store
from adapters.zoho.desk import ZohoDesk, ZohoDeskOptions
from adapters.zoho.desk_capture import Webhooks
from adapters.zoho.desk_store import zoho_desk_store
from adapters.zoho.oauth import Credentials
from daemon.runtime.settings import Settings
from projections.catalog import Side
from projections.config import SyncConfig

Client = ZohoCrm | ZohoDesk


def hosted_sides(settings: Settings) -> list[Side]:
    """The sides the settings make hosted stores."""
    kinds: dict[Side, str] = {"desk": settings.desk_store, "crm": settings.crm_store}
    return [side for side, kind in kinds.items() if kind == "zoho"]


def hosted_store(settings: Settings, side: Side, config: Callable[[], SyncConfig]
                 ) -> tuple[RemoteStore, Client]:
    """The side's remote store (``Overrides.remote``) and its client, to close.
    ``config``: the sync's configuration as the daemon follows it (its mapping)."""
    window = dt.timedelta(days=settings.initial_sync_window_days)
    if side == "crm":
        return zoho_crm_store(
            zoho_crm_options(settings), concurrency=settings.zoho_crm_concurrency,
            poll_interval=settings.zoho_crm_poll_interval, first_window=window,
            notifications=zoho_crm_notifications(settings),
            bulk_read=settings.zoho_crm_bulk_read, config=config)
    return zoho_desk_store(
        zoho_desk_options(settings), concurrency=settings.zoho_desk_concurrency,
        poll_interval=settings.zoho_desk_poll_interval, first_window=window,
        webhooks=zoho_desk_webhooks(settings))


async def hosted_checks(settings: Settings, side: Side) -> list[Check]:
    """``syncd integration check`` of the side's hosted store, on a client of its own."""
    if side == "crm":
        crm = ZohoCrm(zoho_crm_options(settings))
        try:
            return await crm_check.check(crm, notifications=zoho_crm_notifications(settings),
                                         bulk_read=settings.zoho_crm_bulk_read)
        finally:
            await crm.close()
    desk = ZohoDesk(zoho_desk_options(settings))
    try:
        return await desk_check.check(desk, webhooks=zoho_desk_webhooks(settings))
    finally:
        await desk.close()


def _setting(settings: Settings, side: Side, name: str) -> Any:
    return getattr(settings, f"zoho_{side}_{name}")


def _credentials(settings: Settings, side: Side) -> Credentials:
    client_id, secret, token = (_setting(settings, side, n)
                                for n in ("client_id", "client_secret", "refresh_token"))
    assert client_id and secret and token  # the settings' validation
    return Credentials(client_id=client_id, client_secret=secret, refresh_token=token,
                       data_centre=_setting(settings, side, "data_centre"),
                       accounts_url=_setting(settings, side, "accounts_url"))


def _limits(settings: Settings, side: Side) -> ApiLimits:
    return ApiLimits(concurrency=_setting(settings, side, "concurrency"),
                     calls_per_second=_setting(settings, side, "calls_per_second"),
                     credits=_setting(settings, side, "credits"),
                     credit_window=_setting(settings, side, "credit_hours") * 3600)


def zoho_crm_options(settings: Settings) -> ZohoCrmOptions:
    return ZohoCrmOptions(_credentials(settings, "crm"), api_url=settings.zoho_crm_api_url,
                          sync_key_field=settings.zoho_crm_sync_key_field,
                          limits=_limits(settings, "crm"))


def zoho_crm_notifications(settings: Settings) -> Notifications | None:
    if not (settings.zoho_crm_notify_url and settings.zoho_crm_channel_token):
        return None
    return Notifications(
        notify_url=settings.zoho_crm_notify_url, token=settings.zoho_crm_channel_token,
        channel_id=settings.zoho_crm_channel_id,
        span=dt.timedelta(hours=settings.zoho_crm_channel_hours))


def zoho_desk_options(settings: Settings) -> ZohoDeskOptions:
    assert settings.zoho_desk_org_id  # the settings' validation
    return ZohoDeskOptions(
        _credentials(settings, "desk"), org_id=settings.zoho_desk_org_id,
        api_url=settings.zoho_desk_api_url, sync_key_field=settings.zoho_desk_sync_key_field,
        source_id=settings.zoho_desk_source_id, limits=_limits(settings, "desk"))


def zoho_desk_webhooks(settings: Settings) -> Webhooks | None:
    if not (settings.zoho_desk_webhook_url and settings.zoho_desk_webhook_token):
        return None
    return Webhooks(url=settings.zoho_desk_webhook_url, token=settings.zoho_desk_webhook_token)
