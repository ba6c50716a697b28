"""Zoho Desk REST v1 as a remote store (``adapters.remote_store.RemoteStore``): what
the batch reads of it (``find``, ``read``), what its capture polls
(``modified_since``) and the target its command writer delivers to (``write``).
Field names are translated by ``desk_fields``. Every call carries the
organisation's ``orgId`` header.

- Reads: ``GET /api/v1/{module}/{id}`` per record (the list calls leave out
  ``modifiedTime`` and ``cf``); ``GET /api/v1/contacts/search?email=…`` (the
  primary e-mail; with ``secondary``, ``_all=…`` too, every column) and
  ``GET /api/v1/accounts/search?accountName=…``, one call per key; what comes back
  is checked against the sync's own normalised keys. 204 is "nothing".
- Changes since a time: ``GET /api/v1/{module}/search`` with
  ``modifiedTimeRange=since,now`` and ``sortBy=modifiedTime``, by ``from``/``limit``
  (100); search pages no further than ``from`` 999, so past it the range starts
  again at the newest time seen (the capture takes what it fetched twice for old news).
  Tickets the same way (for the handshake board); departments have no modified time
  and no search, so every poll lists them all (``GET /api/v1/departments``) and the
  capture keeps only what changed.
- Ratings since a time: ``GET /api/v1/customerHappiness`` with
  ``department=allDepartment``, ``startTime`` (milliseconds), ``sortBy=ratedTime``
  and ``include=tickets``, by ``from``/``limit`` (100): one list for every ticket's
  ratings, not a call a ticket (``rated_since``).
- Writes: a create first looks its sync key up in the custom field that holds it
  (``customField1=cf_syncd_key:…``), so a create delivered twice is one record; an
  update reads the record's ``modifiedTime`` first (the guard: Zoho Desk has no
  conditional write) and sends ``PATCH``. The answer is the record as the desk
  holds it now, which is what landed. Every write carries ``sourceId``, the
  webhook's ``ignoreSourceId``, so that it raises no webhook (SYNC-14).
- Errors: 429, 5xx, timeouts and lost connections are transient; an expired token
  (401 ``INVALID_OAUTH``) is refreshed once; ``INVALID_DATA`` (a mandatory field
  missing: ``MANDATORY_NOT_FOUND``'s reason) and other 4xx refuse the write with the
  failure log's reason; credentials, scopes, the organisation or the licence
  refused are ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.call_budget import ApiLimits
from adapters.command_writer import Landed
from adapters.remote_store import find_by_keys
from adapters.write_errors import (
    Refused,
    Stale,
    Transient,
    WriteError,
)
from adapters.zoho.client import Dialect, ZohoClient
from adapters.zoho.desk_fields import (
    MANDATORY,
    THREADS,
    desk_time,
    from_desk,
    happiness_rating,
    module_path,
    thread_values,
    to_desk,
)
from adapters.zoho.oauth import Credentials
from projections.catalog import Side
from projections.mapping import REASON_MANDATORY
from projections.stores.commands import Command
from projections.stores.port import Found, Held, Values, is_placeholder

API_PATH = "/api/v1"
PAGE = 100
"""Records a call returns at most (``limit``)."""
SEARCH_REACH = 1000
"""Search pages no further than ``from`` 999."""
READS_AT_ONCE = 5
DESK_HOSTS = {
    "com": "https://desk.zoho.com", "eu": "https://desk.zoho.eu",
    "in": "https://desk.zoho.in", "com.au": "https://desk.zoho.com.au",
    "jp": "https://desk.zoho.jp", "com.cn": "https://desk.zoho.com.cn"}
UNAVAILABLE_CODES = frozenset({"UNAUTHORIZED", "SCOPE_MISMATCH", "OAUTH_ORG_MISMATCH",
                               "FORBIDDEN", "LICENSE_ACCESS_LIMITED", "INVALID_OAUTH"})
"""Whole-call errors only a person can mend (``INVALID_OAUTH`` after the one refresh)."""
SOURCE_HEADER = "sourceId"
"""The header naming the client a write comes from, for ``ignoreSourceId``."""


@dataclass(frozen=True)
class ZohoDeskOptions:
    credentials: Credentials
    org_id: str
    api_url: str | None = None
    """The desk host (``https://desk.zoho.eu``, say); by default the data centre's."""
    sync_key_field: str = "cf_syncd_key"
    source_id: str = "5f1c2a7e-8d3b-4c6a-9e0f-73736e636400"
    timeout: float = 30.0
    limits: ApiLimits = field(default_factory=ApiLimits)

    def host(self) -> str:
        return self.api_url or DESK_HOSTS[self.credentials.data_centre]


class ZohoDesk:
    """One Zoho Desk organisation: its reads and its writes, on one HTTP session."""

    store: Side = "desk"

    def __init__(self, options: ZohoDeskOptions) -> None:
        self.options = options
        self.client = ZohoClient(options.credentials, DIALECT, api_url=options.host(),
                                 timeout=options.timeout, budget=options.limits.budget("desk"),
                                 headers={"orgId": options.org_id})

    async def close(self) -> None:
        await self.client.close()

    # -- reads (RemoteReads) ---------------------------------------------------

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        if module not in ("contacts", "accounts") or not keys:
            return []

        async def search(chunk: list[str]) -> list[Values]:
            (key,) = chunk  # the desk's search takes one value a call
            queries = [{"email": key}, *([{"_all": key}] if secondary else [])] \
                if module == "contacts" else [{"accountName": key}]
            return [self._values(module, record)
                    for query in queries for record in await self._search(module, query)]

        return await find_by_keys(module, keys, secondary=secondary, search=search,
                                  at_once=READS_AT_ONCE)

    async def read(self, module: str, ids: Sequence[str]) -> dict[str, Held]:
        wanted = list(dict.fromkeys(ids))
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def one(record_id: str) -> tuple[str, Held] | None:
            async with gate:
                record = await self.record(module, record_id)
            if record is None:
                return None
            values = self._values(module, record)
            return values["id"], Held(values, desk_time(record["modifiedTime"]))

        return dict(r for r in await asyncio.gather(*(one(i) for i in wanted)) if r)

    async def modified_since(self, module: str, since: dt.datetime
                             ) -> list[tuple[str, Values]]:
        if module == "departments":
            return await self._departments()
        if module == THREADS:
            return await self._conversations(since)
        out: dict[str, Values] = {}
        start = since
        while True:
            newest: dt.datetime | None = None
            # The range ends a day ahead: a desk's clock ahead of ours loses nothing.
            until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
            for offset in range(0, SEARCH_REACH, PAGE):
                page = await self._search(module, {
                    "modifiedTimeRange": f"{_range_time(start)},{_range_time(until)}",
                    "sortBy": "modifiedTime", "from": str(offset), "limit": str(PAGE)})
                for record in page:
                    values = self._values(module, record)
                    record_id = values.pop("id")
                    del values["deleted"]
                    out[record_id] = values
                    newest = desk_time(record["modifiedTime"])
                if len(page) < PAGE:
                    return sorted(out.items(), key=lambda r: r[1]["modified_time"])
            # Search reaches 1,000 records: the range starts again at the newest seen.
            if newest is None or newest <= start:
                raise Transient(f"over {SEARCH_REACH} {module} modified at"
                                f" {start.isoformat()}: the search cannot page past them")
            start = newest

    async def _conversations(self, since: dt.datetime) -> list[tuple[str, Values]]:
        """The threads and comments added or edited after ``since``: those of the
        tickets modified after it (a thread or comment moves its ticket's
        ``modifiedTime``), two lists a ticket. A list gives a thread's ``summary``,
        not its content (its callback gives the content)."""
        out: list[tuple[str, Values]] = []
        for ticket_id, _ in await self.modified_since("tickets", since):
            for kind, path in (("reply", "threads"), ("comment", "comments")):
                for item in await self._listed(f"{API_PATH}/tickets/{ticket_id}/{path}"):
                    values = thread_values(item, kind=kind, ticket_id=ticket_id)
                    if values["modified_time"] and desk_time(values["modified_time"]) > since:
                        out.append((str(item["id"]), values))
        return sorted(out, key=lambda r: r[1]["modified_time"])

    async def rated_since(self, since: dt.datetime
                          ) -> list[tuple[str, str, dt.datetime]]:
        """The customers' happiness ratings given after ``since``, oldest first, as
        ``(ticket id, rating, rated time)`` (``desk_fields.happiness_rating``).

        Zoho Desk's API reference documents them as a list of their own, by the time
        each was given (``GET /api/v1/customerHappiness``, its ``startTime`` and
        ``endTime`` in milliseconds, ``sortBy`` ``ratedTime``:
        https://desk.zoho.com/DeskAPIDocument#CustomerHappiness), and not as a field
        of the ticket (``Ticket.json`` has none); nothing there says a rating moves its
        ticket's ``modifiedTime``, and no webhook event is documented for it. So
        the poll reads this list from a cursor of its own, in one list call (a page of
        100) for every ticket, rather than read each ticket's ratings."""
        # The range ends a day ahead, as the search's does.
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        items = await self._listed(f"{API_PATH}/customerHappiness", {
            "department": "allDepartment", "startTime": str(_millis(since)),
            "endTime": str(_millis(until)), "sortBy": "ratedTime", "include": "tickets"})
        found = [r for r in map(happiness_rating, items) if r is not None and r[2] > since]
        return sorted(found, key=lambda r: r[2])

    async def _listed(self, path: str, query: dict[str, str] | None = None
                      ) -> list[dict[str, Any]]:
        """Every item of an offset-paged list (``from``, ``limit``)."""
        out: list[dict[str, Any]] = []
        while True:
            answer = await self.client.call("GET", path, params={
                **(query or {}), "from": str(len(out)), "limit": str(PAGE)})
            page = list(answer.get("data") or []) if isinstance(answer, dict) else []
            out += page
            if len(page) < PAGE:
                return out

    async def _departments(self) -> list[tuple[str, Values]]:
        """Every department, stamped with the time it was listed (Zoho gives none):
        a department seen before is a change only if its name changed."""
        listed = dt.datetime.now(dt.UTC).isoformat()
        out: list[tuple[str, Values]] = []
        for record in await self._listed(f"{API_PATH}/departments"):
            values = self._values("departments", record)
            del values["deleted"]
            out.append((values.pop("id"), {**values, "modified_time": listed}))
        return out

    def _values(self, module: str, record: dict[str, Any]) -> Values:
        values = from_desk(module, record, sync_key_field=self.options.sync_key_field)
        values["id"] = str(record["id"])
        return values

    # -- writes (Target) ---------------------------------------------------------

    async def write(self, command: Command) -> Landed:
        # The write's look-ups and the write itself, charged at once (its key or its
        # guard, each placeholder's id): a write that must park spends nothing first.
        looked_up = 1 if command.record_id is None or command.seen is not None else 0
        with self.client.budget.held(1 + looked_up + len(_placeholders(command))):
            return await self._written(command)

    async def _written(self, command: Command) -> Landed:
        module, path = command.module, module_path(command.module)
        resolved = await self._resolve(command)
        record = to_desk(module, command.payload, sync_key_field=self.options.sync_key_field,
                         resolved=resolved)
        if command.record_id is None:
            existing = await self.by_sync_key(module, command.record_key, for_write=True)
            if existing is not None and _holds(existing, record):
                return self._landed(module, existing)  # delivered before: one record
            if existing is not None:
                # An update the batch decided before the create landed (it knew the
                # record by its key only): that record, changed, as an upsert would.
                answer = await self.send("PATCH", f"/{path}/{existing['id']}", record)
                return self._landed(module, answer)
            record.setdefault("cf", {})[self.options.sync_key_field] = command.record_key
            answer = await self.send("POST", f"/{path}", record)
        else:
            if command.seen is not None:
                current = await self.record(module, command.record_id, for_write=True)
                if current is not None:
                    moved = desk_time(current["modifiedTime"])
                    if moved > command.seen:
                        raise Stale(f"{path} {command.record_id} was modified at"
                                    f" {current['modifiedTime']}", modified_time=moved)
            answer = await self.send("PATCH", f"/{path}/{command.record_id}", record)
        return self._landed(module, answer)

    def _landed(self, module: str, record: dict[str, Any]) -> Landed:
        values = self._values(module, record)
        record_id = values.pop("id")
        modified = desk_time(record["modifiedTime"])
        created = desk_time(record["createdTime"]) if record.get("createdTime") else modified
        return Landed(record_id=record_id, values=values, modified_time=modified,
                      created_time=created)

    async def _resolve(self, command: Command) -> dict[str, str]:
        """The Zoho ids of the placeholders a command names (its writer waited for
        their creates to land): found by the custom field holding the sync key."""
        resolved: dict[str, str] = {}
        for value in _placeholders(command):
            found = await self.by_sync_key("accounts", value, for_write=True)
            if found is None:
                raise Transient(f"the accounts record created as {value} is not found yet")
            resolved[value] = str(found["id"])
        return resolved

    async def by_sync_key(self, module: str, key: str, *,
                          for_write: bool = False) -> dict[str, Any] | None:
        found = await self._search(module, {
            "customField1": f"{self.options.sync_key_field}:{key}"}, for_write=for_write)
        return next((r for r in found
                     if (r.get("cf") or {}).get(self.options.sync_key_field) == key), None)

    # -- HTTP ----------------------------------------------------------------------

    async def _search(self, module: str, query: dict[str, str], *,
                      for_write: bool = False) -> list[dict[str, Any]]:
        answer = await self.client.call("GET", f"{API_PATH}/{module_path(module)}/search",
                                        params=query, for_write=for_write)
        return list(answer.get("data") or []) if isinstance(answer, dict) else []

    async def record(self, module: str, record_id: str, *,
                     for_write: bool = False) -> dict[str, Any] | None:
        """One record as the desk holds it; None if there is none."""
        try:
            answer = await self.client.call(
                "GET", f"{API_PATH}/{module_path(module)}/{record_id}", for_write=for_write)
        except Refused as err:
            if "URL_NOT_FOUND" in err.detail:
                return None
            raise
        return answer if isinstance(answer, dict) and answer.get("id") else None

    async def send(self, method: str, path: str, record: dict[str, Any]) -> dict[str, Any]:
        """A write (``path`` after ``/api/v1``) carrying the source id; the record
        (or thread) it answers with."""
        try:
            answer = await self.client.call(method, API_PATH + path, json=record,
                                            extra_headers={SOURCE_HEADER: self.options.source_id})
        except Refused as err:
            raise _refusal(err, record) from None
        if not isinstance(answer, dict) or not answer.get("id"):
            raise Transient(f"an answer without the record: {str(answer)[:200]}")
        return answer

    async def from_address(self, department_id: str) -> str | None:
        """The department's default active From address (else its first active one):
        Zoho refuses an e-mail reply from any other (``GET /api/v1/mailReplyAddress``)."""
        answer = await self.client.call(
            "GET", f"{API_PATH}/mailReplyAddress", for_write=True,
            params={"departmentId": department_id, "isActive": "true", "limit": "100"})
        addresses = list(answer.get("data") or []) if isinstance(answer, dict) else []
        chosen = next((a for a in addresses if a.get("isDepartmentDefault")),
                      addresses[0] if addresses else None)
        return None if chosen is None else str(chosen["address"])

    async def sample(self, module: str) -> int:
        """One record of ``module``: whether the records can be read."""
        answer = await self.client.call("GET", f"{API_PATH}/{module_path(module)}",
                                        params={"from": "0", "limit": "1"})
        return len(answer.get("data") or []) if isinstance(answer, dict) else 0

    @property
    def token_refreshes(self) -> int:
        return self.client.token_refreshes


def _refusal(err: Refused, record: dict[str, Any]) -> WriteError:
    """A 422 ``INVALID_DATA`` naming a mandatory field left empty is the failure log's
    *mandatory field* reason, not an incorrect value."""
    if "INVALID_DATA" in err.detail and any(
            f"/{field}" in err.detail and record.get(field) in (None, "")
            for field in MANDATORY.values()):
        return Refused(REASON_MANDATORY, err.detail)
    return err


def _millis(value: dt.datetime) -> int:
    """Milliseconds since the epoch (the customer happiness list's times)."""
    return int(value.timestamp() * 1000)


def _range_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{value.microsecond // 1000:03d}Z"


def _code(answer: Any) -> str | None:
    return answer.get("errorCode") if isinstance(answer, dict) else None


DIALECT = Dialect(name="Zoho Desk", expired=frozenset({"INVALID_OAUTH"}),
                  unavailable=UNAVAILABLE_CODES, code=_code)


def _holds(existing: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether the desk's record already holds each value of ``record`` (a write in
    the desk's names; its custom fields one by one)."""
    custom = existing.get("cf") or {}
    return all(custom.get(k) == v for k, v in (record.get("cf") or {}).items()) and all(
        existing.get(k) == v for k, v in record.items() if k != "cf")


def _placeholders(command: Command) -> list[str]:
    """The accounts a command names that the sync is still creating (by placeholder)."""
    value = command.payload.get("account_id")
    return [value] if isinstance(value, str) and is_placeholder(value) else []
