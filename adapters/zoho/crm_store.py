"""Zoho CRM as the CRM side of the sync: the adapter (``crm``) for reads and writes,
its change capture (``crm_poll``), the checks of its access and of a mapping's
custom fields (``crm_check``), wired as one ``RemoteStore``."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence

import asyncpg

from adapters.command_writer import Backoff
from adapters.remote_capture import RemoteCapture
from adapters.remote_store import RemoteStore, RootTask
from adapters.zoho import crm_check
from adapters.zoho.crm import ZohoCrm, ZohoCrmOptions
from adapters.zoho.crm_bulk import CrmBulkRead
from adapters.zoho.crm_poll import Notifications, ZohoCrmPoll
from projections.config import SyncConfig


def zoho_crm_store(options: ZohoCrmOptions, *, concurrency: int = 5,
                   backoff: Backoff | None = None, poll_interval: float = 60.0,
                   first_window: dt.timedelta = dt.timedelta(days=30),
                   notifications: Notifications | None = None, bulk_read: bool = True,
                   config: Callable[[], SyncConfig] = SyncConfig
                   ) -> tuple[RemoteStore, ZohoCrm]:
    """Zoho CRM as the CRM side (``Overrides.remote``), its capture the poll every
    ``poll_interval`` seconds, woken by ``notifications`` (``crm_poll``), its first
    poll of a module by the bulk read unless ``bulk_read`` is false, and its client
    (to close). ``config``: the sync's current configuration, whose mapping names
    the custom fields the reads ask for."""
    def custom_fields(module: str) -> Sequence[str]:
        mapping = config().mappings.get(module)  # none for the board's leads and deals
        return () if mapping is None else mapping.custom_keys("crm")

    crm = ZohoCrm(options, custom_fields=custom_fields)

    def capture(pool: asyncpg.Pool) -> RootTask:
        return ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), interval=poll_interval,
                           first_window=first_window, notifications=notifications,
                           bulk=CrmBulkRead(crm) if bulk_read else None).run

    return RemoteStore(reads=crm, target=crm, concurrency=concurrency,
                       backoff=backoff or Backoff(), capture=capture,
                       budget=crm.client.budget,
                       access=functools.partial(crm_check.access, crm, bulk_read=bulk_read),
                       mapping_check=functools.partial(crm_check.custom_fields, crm)), crm
