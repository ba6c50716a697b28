"""The hosted stores the settings name (``crm_store = "zoho"``, ``desk_store =
"zoho"``): their adapters' options, built once from ``Settings`` for the daemon
(``daemon.app``) and for ``syncd integration check``."""

from __future__ import annotations

import datetime as dt

from adapters.call_budget import ApiLimits
from adapters.zoho.crm import ZohoCrmOptions
from adapters.zoho.crm_poll import Notifications
from adapters.zoho.desk import ZohoDeskOptions
from adapters.zoho.desk_capture import Webhooks
from adapters.zoho.oauth import Credentials
from daemon.runtime.settings import Settings


def zoho_crm_options(settings: Settings) -> ZohoCrmOptions:
    assert settings.zoho_crm_client_id and settings.zoho_crm_client_secret \
        and settings.zoho_crm_refresh_token  # the settings' validation
    return ZohoCrmOptions(
        Credentials(client_id=settings.zoho_crm_client_id,
                    client_secret=settings.zoho_crm_client_secret,
                    refresh_token=settings.zoho_crm_refresh_token,
                    data_centre=settings.zoho_crm_data_centre,
                    accounts_url=settings.zoho_crm_accounts_url),
        api_url=settings.zoho_crm_api_url, sync_key_field=settings.zoho_crm_sync_key_field,
        limits=ApiLimits(concurrency=settings.zoho_crm_concurrency,
                         calls_per_second=settings.zoho_crm_calls_per_second,
                         credits=settings.zoho_crm_credits,
                         credit_window=settings.zoho_crm_credit_hours * 3600))


def zoho_crm_notifications(settings: Settings) -> Notifications | None:
    if not (settings.zoho_crm_notify_url and settings.zoho_crm_channel_token):
        return None
    return Notifications(
        notify_url=settings.zoho_crm_notify_url, token=settings.zoho_crm_channel_token,
        channel_id=settings.zoho_crm_channel_id,
        span=dt.timedelta(hours=settings.zoho_crm_channel_hours))


def zoho_desk_options(settings: Settings) -> ZohoDeskOptions:
    assert settings.zoho_desk_client_id and settings.zoho_desk_client_secret \
        and settings.zoho_desk_refresh_token and settings.zoho_desk_org_id  # validated
    return ZohoDeskOptions(
        Credentials(client_id=settings.zoho_desk_client_id,
                    client_secret=settings.zoho_desk_client_secret,
                    refresh_token=settings.zoho_desk_refresh_token,
                    data_centre=settings.zoho_desk_data_centre,
                    accounts_url=settings.zoho_desk_accounts_url),
        org_id=settings.zoho_desk_org_id, api_url=settings.zoho_desk_api_url,
        sync_key_field=settings.zoho_desk_sync_key_field,
        source_id=settings.zoho_desk_source_id,
        limits=ApiLimits(concurrency=settings.zoho_desk_concurrency,
                         calls_per_second=settings.zoho_desk_calls_per_second,
                         credits=settings.zoho_desk_credits,
                         credit_window=settings.zoho_desk_credit_hours * 3600))


def zoho_desk_webhooks(settings: Settings) -> Webhooks | None:
    if not (settings.zoho_desk_webhook_url and settings.zoho_desk_webhook_token):
        return None
    return Webhooks(url=settings.zoho_desk_webhook_url, token=settings.zoho_desk_webhook_token)
