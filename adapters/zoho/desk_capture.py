"""Zoho Desk's change capture: webhooks in, a poll behind them.

- **Webhooks.** The poller keeps one webhook subscribed (``POST /api/v1/webhooks``)
  for the contacts', accounts' and tickets' events (tickets for the handshake board,
  captured in the embedded desk's shape, ``desk_fields``), its URL the daemon's
  ``/webhooks/zoho-desk?token=…``, its ``ignoreSourceId`` the source id every write
  of the sync carries, so the sync's own writes raise none (SYNC-14). Zoho checks
  the URL when the webhook is created (a GET, answered 200). It is looked for again
  every ``RECHECK`` (an administrator may delete it; Zoho deletes one whose
  callback answered 410) and subscribed again if gone. A callback (an array of
  ``{"eventType", "payload", ...}``) is checked for the URL's token, its records
  captured into the desk's outbox (``remote_capture``: only what changed is a
  change), and only then answered: Zoho gives a callback 5 seconds.
- **A ticket's conversation** (its threads and comments, as ``desk.ticket_threads``
  rows: ``desk_fields.thread_values``) comes by ``Ticket_Thread_Add`` and
  ``Ticket_Comment_Add``/``_Update``, and by the poll: the threads and comments of
  each ticket modified since the cursor.
- **A ticket's customer rating** (``rating``, as the embedded desk's
  ``desk.tickets.rating``: ``good``, ``okay``, ``bad``) comes by the poll alone:
  Zoho Desk keeps its customers' happiness ratings in a list of their own, by the
  time each was given (``GET /api/v1/customerHappiness``,
  https://desk.zoho.com/DeskAPIDocument#CustomerHappiness); a rating is documented
  neither as moving its ticket's ``modifiedTime`` nor as a webhook event. So each
  round reads the ratings given since a cursor of their own (``tickets/ratings``),
  one list call for every ticket, and captures each as its ticket's change of
  ``rating`` (``remote_capture.amended``) — a ticket's record names no rating, so
  its copies leave the rating as it was. A rating of a ticket the capture never saw
  (older than the first poll's window) is not captured; the first round's ratings,
  given before the daemon read any, are the first sync's (origin ``import``: no
  sales signal).
- **The poll** (``adapters.remote_poll``, the search's ``modifiedTimeRange``) catches
  whatever a webhook missed (a callback lost, the daemon down, an edition without
  webhooks: Free and Standard have none) and is the only capture of products and
  departments (Zoho Desk has no events for them).
- **Deletes** come by the webhook only (``Contact_Delete``, ``Ticket_Delete``, …:
  the record's id) and are captured as deletes (``remote_capture.deleted``); the
  poll does not see records leave, so a delete made while no webhook could reach
  the daemon is not seen (see docs/hosted.md).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog
from pydantic import SecretStr

from adapters.remote_capture import RemoteCapture
from adapters.remote_poll import MODULES, OVERLAP, RemotePoll
from adapters.write_errors import WriteError
from adapters.zoho.desk import API_PATH, ZohoDesk
from adapters.zoho.desk_fields import (
    BOARD_MODULES,
    EVENT_MODULES,
    RATINGS,
    THREAD_EVENTS,
    THREADS,
    desk_time,
    from_desk,
    thread_values,
)
from projections.stores.port import Values

log = structlog.get_logger(__name__)

EVENTS = ("Contact_Add", "Contact_Update", "Contact_Delete",
          "Account_Add", "Account_Update", "Account_Delete",
          "Ticket_Add", "Ticket_Update", "Ticket_Delete", *THREAD_EVENTS)
DESK_MODULES = (*MODULES, *BOARD_MODULES, RATINGS, THREADS)
"""What the desk's poll captures: the synced modules, the board's, the tickets'
ratings and conversations (after the tickets: each names its ticket)."""
RECHECK = dt.timedelta(hours=6)
WEBHOOK_NAME = "syncd"


@dataclass(frozen=True)
class Webhooks:
    url: str
    """The daemon's ``/webhooks/zoho-desk`` as Zoho reaches it (without the token)."""
    token: SecretStr

    def callback(self) -> str:
        return f"{self.url}?token={self.token.get_secret_value()}"


class DeskWebhook:
    """The desk's webhook subscription (a ``remote_poll.Subscription``)."""

    def __init__(self, desk: ZohoDesk, webhooks: Webhooks) -> None:
        self.desk = desk
        self.webhooks = webhooks
        self.webhook_id: str | None = None

    async def keep(self) -> dt.datetime | None:
        try:
            listed = await self.desk.client.call("GET", f"{API_PATH}/webhooks")
            ours = [w for w in (listed.get("data") or []) if isinstance(listed, dict)
                    and w.get("url") == self.webhooks.callback()]
            if ours and ours[0].get("ignoreSourceId") == self.desk.options.source_id \
                    and set(EVENTS) <= set(ours[0].get("subscriptions") or {}):
                self.webhook_id = str(ours[0]["id"])
                return dt.datetime.now(dt.UTC) + RECHECK
            body = {"name": WEBHOOK_NAME, "url": self.webhooks.callback(),
                    "description": "deskcrm-sync: the desk's changes, for the CRM",
                    "ignoreSourceId": self.desk.options.source_id,
                    "subscriptions": {e: ({"includePrevState": False}
                                          if e.endswith("_Update") else None)
                                      for e in EVENTS}}
            if ours:
                made = await self.desk.client.call(
                    "PATCH", f"{API_PATH}/webhooks/{ours[0]['id']}", json=body)
            else:
                made = await self.desk.client.call("POST", f"{API_PATH}/webhooks", json=body)
        except WriteError as err:
            log.warning("webhook_subscription_failed", store="desk",
                        error=f"{type(err).__name__}: {err}")
            return None
        self.webhook_id = str(made.get("id")) if isinstance(made, dict) else None
        log.info("webhook_subscribed", store="desk", webhook_id=self.webhook_id)
        return dt.datetime.now(dt.UTC) + RECHECK


class ZohoDeskPoll(RemotePoll):
    def __init__(self, desk: ZohoDesk, capture: RemoteCapture, *, interval: float = 60.0,
                 first_window: dt.timedelta = dt.timedelta(days=30),
                 modules: Sequence[str] = DESK_MODULES,
                 webhooks: Webhooks | None = None) -> None:
        self.desk = desk
        self.webhook = None if webhooks is None else DeskWebhook(desk, webhooks)
        super().__init__(desk, capture, interval=interval, first_window=first_window,
                         modules=modules, subscription=self.webhook)

    async def poll(self, module: str) -> int:
        if module != RATINGS:
            return await super().poll(module)
        since = await self.capture.cursor(RATINGS)
        first = since is None
        if since is None:
            since = dt.datetime.now(dt.UTC) - self.first_window
        rated = await self.desk.rated_since(since)
        appended = await self.capture.amended(
            "tickets", [(ticket, {"rating": rating}, when) for ticket, rating, when in rated],
            origin="import" if first else "user")
        newest = max((when for _, _, when in rated), default=since + OVERLAP)
        await self.capture.advance(RATINGS, newest - OVERLAP)
        if appended:
            log.info("capture_polled", store=self.capture.store, module=RATINGS,
                     records=len(rated), changes=appended)
        return appended


class DeskWebhookIntake:
    """Zoho Desk's callbacks (``POST /webhooks/zoho-desk``), for the HTTP intake."""

    name = "zoho-desk"

    def __init__(self, token: SecretStr, *, sync_key_field: str) -> None:
        self.token = token.get_secret_value().encode()
        self.sync_key_field = sync_key_field

    def authentic(self, query: Mapping[str, str]) -> bool:
        return hmac.compare_digest(query.get("token", "").encode(), self.token)

    async def accept(self, pool: asyncpg.Pool, raw: bytes) -> int:
        """Capture the callback's records; return the changes appended. Raises
        ``ValueError`` for a body that is not Zoho Desk's events."""
        try:
            events = msgspec.json.decode(raw)
        except msgspec.DecodeError as err:
            raise ValueError(str(err)) from None
        if isinstance(events, dict):
            events = [events]
        if not isinstance(events, list):
            raise ValueError("not an array of events")
        records: dict[str, list[tuple[str, Values]]] = {}
        deletes: dict[str, list[tuple[str, dt.datetime, bool]]] = {}
        for event in events:
            if isinstance(event, dict) and event.get("eventType") in THREAD_EVENTS:
                records.setdefault(THREADS, []).append(_thread(event))
                continue
            module, action = _event(event)
            if action == "Delete":
                deletes.setdefault(module, []).append(_deleted(event))
                continue
            payload = event.get("payload")
            if not isinstance(payload, dict) or not payload.get("id") \
                    or not payload.get("modifiedTime"):
                raise ValueError(f"a {event.get('eventType')} event without its record")
            values = from_desk(module, payload, sync_key_field=self.sync_key_field)
            del values["deleted"]
            records.setdefault(module, []).append((str(payload["id"]), values))
        capture = RemoteCapture(pool, "desk")
        appended = 0
        # Accounts first (contacts name them), tickets before their conversations.
        for module in ("accounts", "contacts", "tickets", THREADS):
            appended += await capture.observed(module, records.get(module, []))
            appended += await capture.deleted(module, deletes.get(module, []))
        return appended


def _thread(event: dict[str, Any]) -> tuple[str, Values]:
    """A ``Ticket_Thread_Add`` or ``Ticket_Comment_*`` event's thread or comment."""
    payload = event.get("payload")
    if not isinstance(payload, dict) or not payload.get("id") or not payload.get("ticketId"):
        raise ValueError(f"a {event['eventType']} event without its record and ticket")
    values = thread_values(payload, kind=THREAD_EVENTS[event["eventType"]],
                           ticket_id=str(payload["ticketId"]))
    if not values["modified_time"]:
        raise ValueError(f"a {event['eventType']} event without its time")
    return str(payload["id"]), values


def _deleted(event: dict[str, Any]) -> tuple[str, dt.datetime, bool]:
    """A ``*_Delete`` event's record (its payload names its id) and when: the
    event's time (milliseconds since the epoch, or ISO 8601), else now. Zoho Desk
    moves a deleted record to its recycle bin."""
    payload = event.get("payload")
    if not isinstance(payload, dict) or not payload.get("id"):
        raise ValueError(f"a {event.get('eventType')} event without its record's id")
    raw = event.get("eventTime")
    when = desk_time(raw) if isinstance(raw, (int, float, str)) and raw != "" \
        else dt.datetime.now(dt.UTC)
    return str(payload["id"]), when, False


def _event(event: Any) -> tuple[str, str]:
    if not isinstance(event, dict) or not isinstance(event.get("eventType"), str):
        raise ValueError("an event without its eventType")
    prefix, _, action = event["eventType"].partition("_")
    if prefix not in EVENT_MODULES or action not in ("Add", "Update", "Delete"):
        raise ValueError(f"an event this intake does not take: {event['eventType']}")
    return EVENT_MODULES[prefix], action
