"""Zoho CRM's change capture: the remote poll (``adapters.remote_poll``) of its
modules, woken by its notifications: the synced ones, the leads and deals the
handshake board reads (``crm_fields.STANDING_MODULES``; a deal's stage as its
forecast type says, a lead listed converted or not), and the notes, calls, events and
tasks desk agents see of a CRM record (``crm_fields.ACTIVITY_MODULES``: polled every
interval, not watched by the channel).

Zoho's times have whole seconds: the poll's one-second overlap fetches again a
record changed later in the same second as the newest one seen, rather than miss
it. With ``Notifications``, the poller subscribes the channel (``actions/watch``,
its token checked on every callback by the HTTP intake, which wakes the poll) and
renews it when a quarter of its span is left; a channel Zoho let expire is
subscribed again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydantic import SecretStr

from adapters.remote_bulk import BulkReadable
from adapters.remote_capture import RemoteCapture
from adapters.remote_poll import MODULES, RemotePoll
from adapters.write_errors import WriteError
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_fields import ACTIVITY_MODULES, STANDING_MODULES, module_name

log = structlog.get_logger(__name__)

MAX_CHANNEL_SPAN = dt.timedelta(days=7)  # Zoho v4 and later


@dataclass(frozen=True)
class Notifications:
    notify_url: str
    """Where Zoho posts: the daemon's ``/webhooks/zoho-crm``, as Zoho reaches it."""
    token: SecretStr
    channel_id: int
    span: dt.timedelta = dt.timedelta(days=1)


class CrmChannel:
    """The notification channel (a ``remote_poll.Subscription``)."""

    def __init__(self, crm: ZohoCrm, notifications: Notifications,
                 modules: Sequence[str]) -> None:
        if notifications.span > MAX_CHANNEL_SPAN:
            raise ValueError("a Zoho CRM notification channel lasts a week at most")
        self.crm = crm
        self.notifications = notifications
        self.modules = modules
        self.expiry: dt.datetime | None = None

    async def keep(self) -> dt.datetime | None:
        n = self.notifications
        now = dt.datetime.now(dt.UTC)
        renew = self.expiry is not None and now < self.expiry
        try:
            self.expiry = await self.crm.watch(
                channel_id=n.channel_id, notify_url=n.notify_url,
                token=n.token.get_secret_value(), expiry=now + n.span, renew=renew,
                events=[f"{module_name(m)}.all" for m in self.modules])
        except WriteError as err:
            log.warning("notification_channel_failed", store="crm",
                        error=f"{type(err).__name__}: {err}")
            return None
        log.info("notification_channel_renewed" if renew else "notification_channel_subscribed",
                 store="crm", channel_id=n.channel_id, expires=self.expiry.isoformat())
        return self.expiry - n.span / 4


class ZohoCrmPoll(RemotePoll):
    def __init__(self, crm: ZohoCrm, capture: RemoteCapture, *, interval: float = 60.0,
                 first_window: dt.timedelta = dt.timedelta(days=30),
                 modules: Sequence[str] = (*MODULES, *STANDING_MODULES, *ACTIVITY_MODULES),
                 notifications: Notifications | None = None,
                 bulk: BulkReadable | None = None) -> None:
        self.crm = crm
        watched = [m for m in modules if m not in ACTIVITY_MODULES]
        self.channel = None if notifications is None else CrmChannel(crm, notifications,
                                                                     watched)
        super().__init__(crm, capture, interval=interval, first_window=first_window,
                         modules=modules, subscription=self.channel, bulk=bulk)
