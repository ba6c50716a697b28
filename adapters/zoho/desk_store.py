"""Zoho Desk as the desk side of the sync: the adapter (``desk``) for reads and
writes, its change capture (``desk_capture``: the poll, the webhook and its
intake), the board's ticket actions (``desk_tickets``), the CRM users' ticket actions
(``desk_actions``) and the check of its access
(``desk_check``), wired as one ``RemoteStore``."""

from __future__ import annotations

import datetime as dt
import functools

import asyncpg

from adapters.command_writer import Backoff
from adapters.remote_capture import RemoteCapture
from adapters.remote_store import RemoteStore, RootTask
from adapters.zoho import desk_check
from adapters.zoho.desk import ZohoDesk, ZohoDeskOptions
from adapters.zoho.desk_actions import ZohoDeskActions
from adapters.zoho.desk_capture import DeskWebhookIntake, Webhooks, ZohoDeskPoll
from adapters.zoho.desk_tickets import ZohoDeskTickets


def zoho_desk_store(options: ZohoDeskOptions, *, concurrency: int = 5,
                    backoff: Backoff | None = None, poll_interval: float = 60.0,
                    first_window: dt.timedelta = dt.timedelta(days=30),
                    webhooks: Webhooks | None = None) -> tuple[RemoteStore, ZohoDesk]:
    """Zoho Desk as the desk side (``Overrides.remote``), its capture the poll every
    ``poll_interval`` seconds and, with ``webhooks``, the webhook's callbacks; and its
    client (to close)."""
    desk = ZohoDesk(options)

    def capture(pool: asyncpg.Pool) -> RootTask:
        return ZohoDeskPoll(desk, RemoteCapture(pool, "desk"), interval=poll_interval,
                            first_window=first_window, webhooks=webhooks).run

    intake = None if webhooks is None else DeskWebhookIntake(
        webhooks.token, sync_key_field=options.sync_key_field)
    return RemoteStore(reads=desk, target=desk, concurrency=concurrency,
                       backoff=backoff or Backoff(), capture=capture, intake=intake,
                       tickets=lambda pool: ZohoDeskTickets(desk, pool),
                       actions=lambda pool: ZohoDeskActions(desk, pool),
                       budget=desk.client.budget,
                       access=functools.partial(desk_check.access, desk)), desk
