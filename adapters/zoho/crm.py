"""Zoho CRM REST v8 as a remote store (``adapters.remote_store.RemoteStore``): what
the batch reads of it (``find``, ``read``) and the target its command writer
delivers to (``write``). Field names are translated by ``crm_fields``.

- Reads: ``GET /crm/v8/{Module}?ids=…`` (at most 100 ids a call) and
  ``GET /crm/v8/{Module}/search`` with ``criteria`` joining up to ten conditions by
  ``or`` (``((Email:equals:a)or(Email:equals:b))``; a contact's ``Email``, and its
  ``Secondary_Email`` when secondary e-mails match, an account's ``Account_Name``):
  ten keys a call (five with secondary e-mails), as many calls at once as the
  budget's concurrency; what comes back is checked against the sync's own
  normalised keys (Zoho's matching is not the sync's). 204 is "nothing". Zoho's ``equals``
  ignores case but not inner spaces: an account named with two spaces where the
  other side has one is not found (the sync's key collapses them).
- Writes, up to 100 records a call (``write_many``; the writer groups them by module
  and kind): records the sync creates are upserted by their external-id field
  (``POST …/upsert`` with ``duplicate_check_fields``), so a create delivered twice
  is one record; updates of records with an id are one ``PUT /crm/v8/{Module}``,
  each record with its ``id``. Zoho has no conditional write, so the guard is a
  read of the records' ``Modified_Time`` (one call) just before (a change in
  between is the store's capture's to report). Each record's outcome is its own.
  ``trigger: []`` keeps the CRM's workflows, approvals and blueprints out of the
  sync's writes (set ``workflow_triggers`` to let them run).
- Errors: 429, 5xx, timeouts and lost connections are transient (``Retry-After``
  honoured); an expired access token (401 ``INVALID_TOKEN``) is refreshed once and
  the call made again; a record's error code (``MANDATORY_NOT_FOUND``,
  ``INVALID_DATA``, ``DUPLICATE_DATA``, …) is a refusal with the failure log's
  reason (``write_errors.REASON_BY_CODE``); credentials, scopes, permissions or the
  licence refused are ``Unavailable``: every write waits, none fails.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.call_budget import ApiLimits
from adapters.command_writer import Landed
from adapters.remote_store import find_by_keys
from adapters.write_errors import (
    REASON_BY_CODE,
    REASON_REFUSED,
    Refused,
    Stale,
    Transient,
)
from adapters.zoho.client import Dialect, ZohoClient
from adapters.zoho.crm_fields import (
    ACTIVITY_MODULES,
    FIELDS,
    PARENTS,
    from_zoho,
    module_name,
    stage_kind,
    to_zoho,
    zoho_time,
)
from adapters.zoho.oauth import Credentials
from projections.catalog import Side
from projections.stores.commands import Command
from projections.stores.port import SYNC_KEY_FIELD, Found, Held, Values, is_placeholder

IDS_PER_READ = 100
WRITES_A_CALL = 100
"""Records a write call carries (Zoho's most)."""
UNAVAILABLE_CODES = frozenset({"OAUTH_SCOPE_MISMATCH", "NO_PERMISSION", "AUTHENTICATION_FAILURE",
                               "INVALID_TOKEN", "LICENSE_LIMIT_EXCEEDED"})
"""Whole-call errors only a person can mend (a scope, a permission, the licence):
``Unavailable``, not a failure of each record (``AUTHENTICATION_FAILURE`` and
``INVALID_TOKEN`` after the one refresh)."""
SEARCH_CRITERIA = 10
"""Conditions a search's ``criteria`` may join (Zoho's limit): keys a call, by field."""
PAGED_RECORDS = 2000
"""Records a list call reaches by ``page``; past them, only ``page_token``."""
API_PATH = "/crm/v8"


@dataclass(frozen=True)
class ZohoCrmOptions:
    credentials: Credentials
    api_url: str | None = None
    """The API host (``https://www.zohoapis.eu``, say); by default the one the
    accounts server names with the token (``api_domain``)."""
    sync_key_field: str = "Syncd_Key"
    workflow_triggers: bool = False
    timeout: float = 30.0
    limits: ApiLimits = field(default_factory=ApiLimits)


class ZohoCrm:
    """One organisation's Zoho CRM: its reads and its writes, on one HTTP session."""

    store: Side = "crm"
    batch_size = WRITES_A_CALL

    def __init__(self, options: ZohoCrmOptions, *,
                 custom_fields: Callable[[str], Sequence[str]] = lambda _module: ()) -> None:
        """``custom_fields``: the API names of a module's custom fields the mapping
        names, asked for with the standard ones (read at each call: the mapping may
        change while the daemon runs)."""
        self.options = options
        self.custom_fields = custom_fields
        self.client = ZohoClient(options.credentials, DIALECT, api_url=options.api_url,
                                 timeout=options.timeout, budget=options.limits.budget("crm"))
        self._forecast_types: dict[str, str] = {}  # a deal stage's forecast type
        self._unlisted_stages: set[str] = set()  # stages the picklist did not name

    async def close(self) -> None:
        await self.client.close()

    # -- reads (RemoteReads) ---------------------------------------------------

    async def find(self, module: str, keys: Sequence[str], *,
                   secondary: bool) -> list[Found]:
        if module not in ("contacts", "accounts") or not keys:
            return []

        names = ["Account_Name"] if module == "accounts" else [
            "Email", *(["Secondary_Email"] if secondary else [])]

        async def search(chunk: list[str]) -> list[Values]:
            criteria = "or".join(f"({name}:equals:{_escape(key)})"
                                 for key in chunk for name in names)
            query = {"criteria": criteria if len(chunk) * len(names) == 1
                     else f"({criteria})"}
            return [self._values(module, record) for record in await self._records(
                "GET", f"/{module_name(module)}/search", params=query)]

        return await find_by_keys(module, keys, secondary=secondary, search=search,
                                  keys_a_call=SEARCH_CRITERIA // len(names),
                                  at_once=self.options.limits.concurrency)

    async def read(self, module: str, ids: Sequence[str], *,
                   for_write: bool = False) -> dict[str, Held]:
        held: dict[str, Held] = {}
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), IDS_PER_READ):
            chunk = wanted[start:start + IDS_PER_READ]
            for record in await self._records("GET", f"/{module_name(module)}",
                                              params={"ids": ",".join(chunk),
                                                      "fields": ",".join(self.fields_asked(
                                                          module))},
                                              for_write=for_write):
                values = self._values(module, record)
                held[values["id"]] = Held(values, zoho_time(record["Modified_Time"]))
        return held

    async def modified_since(self, module: str, since: dt.datetime, *,
                             per_page: int = 200) -> list[tuple[str, dict[str, Any]]]:
        """The records of ``module`` modified after ``since``, oldest first: ``GET
        /crm/v8/{Module}`` with ``If-Modified-Since``, ``sort_by=Modified_Time``, by
        ``page`` up to the 2,000th record, by ``page_token`` past it, with the fields
        ``fields_asked``."""
        if module == "notes":
            return await self._notes_since(since, per_page=per_page)
        params: dict[str, str] = {"fields": ",".join(self.fields_asked(module)),
                                  "sort_by": "Modified_Time",
                                  "sort_order": "asc", "per_page": str(per_page), "page": "1"}
        if module == "leads":
            params["converted"] = "both"  # a lead converted since is a change of it
        headers = {"If-Modified-Since": since.isoformat(timespec="seconds")}
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            answer = await self._call("GET", f"/{module_name(module)}", params=params,
                                      extra_headers=headers)
            for record in (answer.get("data") or []) if isinstance(answer, dict) else []:
                values = await self.standing_values(module, self.polled_values(module,
                                                                               record))
                out.append((values.pop("id"), values))
            info = answer.get("info") or {} if isinstance(answer, dict) else {}
            if not info.get("more_records"):
                return out
            page = int(params.get("page", "0")) + 1
            if "page" in params and page * per_page <= PAGED_RECORDS:
                params["page"] = str(page)
            else:  # past 2,000 records only the token pages on, and not with ``page``
                params.pop("page", None)
                params["page_token"] = str(info["next_page_token"])

    async def _notes_since(self, since: dt.datetime, *, per_page: int
                           ) -> list[tuple[str, dict[str, Any]]]:
        """Notes modified after ``since``, oldest first. Zoho's Notes API
        (``v8.0/notes.json``) takes no ``If-Modified-Since``: the notes are listed
        newest first (``sort_by=Modified_Time``) until one is not newer than ``since``."""
        params: dict[str, str] = {"fields": ",".join(self.fields_asked("notes")),
                                  "sort_by": "Modified_Time", "sort_order": "desc",
                                  "per_page": str(per_page), "page": "1"}
        out: list[tuple[str, dict[str, Any]]] = []
        while True:
            answer = await self._call("GET", "/Notes", params=params)
            for record in (answer.get("data") or []) if isinstance(answer, dict) else []:
                if zoho_time(record["Modified_Time"]) <= since:
                    return out[::-1]
                values = self.polled_values("notes", record)
                out.append((values.pop("id"), values))
            info = answer.get("info") or {} if isinstance(answer, dict) else {}
            if not info.get("more_records"):
                return out[::-1]
            page = int(params.get("page", "0")) + 1
            if "page" in params and page * per_page <= PAGED_RECORDS:
                params["page"] = str(page)
            else:
                params.pop("page", None)
                params["page_token"] = str(info["next_page_token"])

    async def deleted_since(self, module: str, since: dt.datetime, *,
                            per_page: int = 200) -> list[tuple[str, dt.datetime, bool]]:
        """The records of ``module`` deleted after ``since`` (``GET /crm/v8/{Module}/
        deleted?type=all`` with ``If-Modified-Since``): ``(id, deleted_time,
        permanently)``, the recycle bin's and the permanently deleted alike. Zoho
        documents no deleted-records list for notes: a note's delete is not captured."""
        if module == "notes":
            return []
        headers = {"If-Modified-Since": since.isoformat(timespec="seconds")}
        out: list[tuple[str, dt.datetime, bool]] = []
        page = 1
        while True:
            answer = await self._call("GET", f"/{module_name(module)}/deleted", params={
                "type": "all", "page": str(page), "per_page": str(per_page)},
                extra_headers=headers)
            for entry in (answer.get("data") or []) if isinstance(answer, dict) else []:
                out.append((str(entry["id"]), zoho_time(entry["deleted_time"]),
                            entry.get("type") == "permanent"))
            info = answer.get("info") or {} if isinstance(answer, dict) else {}
            if not info.get("more_records"):
                return out
            page += 1

    async def fields(self, module: str) -> list[dict[str, Any]]:
        """The module's field metadata (``GET /crm/v8/settings/fields?module=…``)."""
        answer = await self._call("GET", "/settings/fields",
                                  params={"module": module_name(module)})
        return list(answer.get("fields") or []) if isinstance(answer, dict) else []

    async def sample(self, module: str) -> int:
        """One page of one record of ``module``: whether the records can be read."""
        return len(await self._records("GET", f"/{module_name(module)}",
                                       params={"fields": "id", "per_page": "1"}))

    async def watch(self, *, channel_id: int, events: Sequence[str], notify_url: str,
                    token: str, expiry: dt.datetime, renew: bool) -> dt.datetime:
        """Subscribe the notification channel (``POST /crm/v8/actions/watch``), or
        renew it (``PATCH``), until ``expiry`` (a week at most); returns the expiry
        Zoho granted."""
        body = {"watch": [{"channel_id": channel_id, "events": list(events),
                           "notify_url": notify_url, "token": token,
                           "channel_expiry": expiry.isoformat(timespec="seconds")}]}
        answer = await self._call("PATCH" if renew else "POST", "/actions/watch", json=body)
        outcome = (answer.get("watch") or [{}])[0] if isinstance(answer, dict) else {}
        if outcome.get("code") != "SUCCESS":
            raise Refused(REASON_REFUSED, f"the notification channel was refused: {outcome}")
        granted = [e.get("channel_expiry") for e in outcome["details"].get("events", [])]
        return min((zoho_time(g) for g in granted if g), default=expiry)

    def _values(self, module: str, record: dict[str, Any]) -> dict[str, Any]:
        values = from_zoho(module, record, sync_key_field=self.options.sync_key_field)
        values["id"] = str(record["id"])
        return values

    def fields_asked(self, module: str, custom: Sequence[str] | None = None) -> list[str]:
        """What a read, the poll and the bulk read ask for (``fields``; Zoho CRM v8
        returns no other): the standard fields, the times, the external-id field and
        the custom fields (by default the mapped ones; ``crm_check.custom_fields``
        keeps them within Zoho's 50 a call)."""
        written = module not in ACTIVITY_MODULES  # activities have no external-id field
        return [*FIELDS[module].values(), *PARENTS.get(module, ()), "Modified_Time",
                "Created_Time", *([self.options.sync_key_field] if written else []),
                *(self.custom_fields(module) if custom is None else custom)]

    async def standing_values(self, module: str, values: dict[str, Any]) -> dict[str, Any]:
        """A deal's stage as the handshake reads it (``open``, ``won``, ``lost``), by the
        forecast type the org gives each stage (its picklist, read once and again
        when a stage is not in it); any other module's values as they are."""
        if module != "deals":
            return values
        stage = values.get("stage")
        if isinstance(stage, str) and stage.strip() not in self._forecast_types \
                and stage.strip() not in self._unlisted_stages:
            self._forecast_types = await self._stage_forecast_types()
            if stage.strip() not in self._forecast_types:  # by its name, not asked again
                self._unlisted_stages.add(stage.strip())
        return {**values, "stage": stage_kind(stage, self._forecast_types)}

    async def _stage_forecast_types(self) -> dict[str, str]:
        stage = next((f for f in await self.fields("deals") if f.get("api_name") == "Stage"),
                     {})
        return {str(v.get("actual_value")): str(v.get("forecast_type"))
                for v in stage.get("pick_list_values") or [] if v.get("forecast_type")}

    def polled_values(self, module: str, record: dict[str, Any]) -> dict[str, Any]:
        """A record as the poll and the bulk read capture it: the fields they ask for
        (the mapped custom fields under ``custom``; no ``deleted``), with its ``id``."""
        values = self._values(module, record)
        del values["deleted"]
        return values

    # -- writes (Target) ---------------------------------------------------------

    async def write(self, command: Command) -> Landed:
        (outcome,) = await self.write_many([command])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def write_many(self, commands: Sequence[Command]
                         ) -> list[Landed | BaseException]:
        """Up to ``WRITES_A_CALL`` commands of one module, all creates (one upsert) or
        all updates (one ``PUT /{Module}``, the records' guards read in one call)."""
        named = _placeholders(commands)
        guarded_any = any(c.record_id is not None and c.seen is not None for c in commands)
        # The call's look-ups and the write itself, charged at once (the placeholders'
        # searches, the guard read): a write that must park spends nothing first.
        searches = sum(-(-len(v) // SEARCH_CRITERIA) for v in named.values())
        with self.client.budget.held(1 + searches + int(guarded_any)):
            return await self._written(commands, named)

    async def _written(self, commands: Sequence[Command], named: dict[str, set[str]]
                       ) -> list[Landed | BaseException]:
        module = commands[0].module
        outcomes: list[Landed | BaseException | None] = [None] * len(commands)
        resolved = await self._resolve(commands, named, outcomes)
        guarded = [c.record_id for c, o in zip(commands, outcomes, strict=True)
                   if o is None and c.record_id is not None and c.seen is not None]
        current = await self.read(module, guarded, for_write=True) if guarded else {}
        sending: list[int] = []
        records: list[dict[str, Any]] = []
        for n, command in enumerate(commands):
            if outcomes[n] is not None:
                continue
            held = current.get(command.record_id or "")
            if held is not None and command.seen is not None \
                    and held.modified_time > command.seen:
                outcomes[n] = Stale(f"{module_name(module)} {command.record_id} was"
                                    f" modified at {held.modified_time.isoformat()}",
                                    modified_time=held.modified_time)
                continue
            record = to_zoho(module, command.payload,
                             sync_key_field=self.options.sync_key_field, resolved=resolved)
            if command.record_id is None:
                record[self.options.sync_key_field] = command.record_key
            else:
                record["id"] = command.record_id
            sending.append(n)
            records.append(record)
        if records:
            for n, item in zip(sending, await self._send(module, records,
                                                         create=commands[0].record_id is None),
                               strict=True):
                try:
                    outcomes[n] = _landed(commands[n], _outcome(item), resolved)
                except Refused as err:
                    outcomes[n] = err
        return [o if o is not None else Transient("not written") for o in outcomes]

    async def _send(self, module: str, records: list[dict[str, Any]], *,
                    create: bool) -> list[Any]:
        """One write call of ``records``; each record's outcome, in order."""
        body: dict[str, Any] = {"data": records}
        if not self.options.workflow_triggers:
            body["trigger"] = []
        if create:
            body["duplicate_check_fields"] = [self.options.sync_key_field]
            answer = await self._call("POST", f"/{module_name(module)}/upsert", json=body)
        else:
            answer = await self._call("PUT", f"/{module_name(module)}", json=body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(records):
            raise Transient(f"an answer without each record's outcome: {str(answer)[:200]}")
        return data

    async def _resolve(self, commands: Sequence[Command], named: dict[str, set[str]],
                       outcomes: list[Landed | BaseException | None]) -> dict[str, str]:
        """The Zoho ids of the placeholders the commands name (``named``, by the module
        they are records of; their writer waited for their creates to land), found by
        the external-id field, ten a search; a command naming one not found yet is
        transient (Zoho indexes new records for search a little later)."""
        resolved: dict[str, str] = {}
        key_field = self.options.sync_key_field
        for target, placeholders in named.items():
            wanted = sorted(placeholders)
            for start in range(0, len(wanted), SEARCH_CRITERIA):
                chunk = wanted[start:start + SEARCH_CRITERIA]
                criteria = "or".join(f"({key_field}:equals:{_escape(v)})" for v in chunk)
                for record in await self._records(
                        "GET", f"/{module_name(target)}/search", for_write=True,
                        params={"criteria": criteria if len(chunk) == 1 else f"({criteria})"}):
                    if record.get(key_field) in placeholders:
                        resolved[record[key_field]] = str(record["id"])
        for n, command in enumerate(commands):
            missing = sorted(v for k, v in command.payload.items() if k != SYNC_KEY_FIELD
                             and isinstance(v, str) and is_placeholder(v)
                             and v not in resolved)
            if missing:
                outcomes[n] = Transient(f"the record created as {missing[0]} is not found yet")
        return resolved

    # -- HTTP ----------------------------------------------------------------------

    async def _records(self, method: str, path: str, **request: Any) -> list[dict[str, Any]]:
        answer = await self._call(method, path, **request)
        return list(answer.get("data") or []) if isinstance(answer, dict) else []

    async def _call(self, method: str, path: str, **request: Any) -> Any:
        return await self.client.call(method, API_PATH + path, **request)

    @property
    def token_refreshes(self) -> int:
        return self.client.token_refreshes


def _placeholders(commands: Sequence[Command]) -> dict[str, set[str]]:
    """The records the commands name that the sync is still creating, by module."""
    named: dict[str, set[str]] = {}
    for command in commands:
        for ours, value in command.payload.items():
            if isinstance(value, str) and is_placeholder(value) and ours != SYNC_KEY_FIELD:
                target = "accounts" if ours == "account_id" else command.module
                named.setdefault(target, set()).add(value)
    return named


def _outcome(item: Any) -> dict[str, Any]:
    """A record's outcome in a write's answer: its details, or its refusal."""
    if not isinstance(item, dict):
        raise Transient(f"a record outcome that is not one: {str(item)[:200]}")
    code = str(item.get("code"))
    if code != "SUCCESS":
        detail = f"{code}: {item.get('message', '')} {item.get('details') or ''}".strip()
        raise Refused(REASON_BY_CODE.get(code, REASON_REFUSED), detail, code=code)
    return dict(item["details"])


def _landed(command: Command, details: dict[str, Any], resolved: dict[str, str]) -> Landed:
    """What a command's write left in Zoho, as the sync names it."""
    values = {**command.payload}
    if is_placeholder(command.record_key):
        values[SYNC_KEY_FIELD] = command.record_key
    for name in FIELDS[command.module]:
        values.setdefault(name, None)
    if isinstance(values.get("account_id"), str) and resolved:
        values["account_id"] = int(resolved[values["account_id"]])
    modified = zoho_time(details["Modified_Time"])
    created = zoho_time(details["Created_Time"]) if details.get("Created_Time") else modified
    values.update(deleted=False, modified_time=details["Modified_Time"],
                  created_time=details.get("Created_Time") or details["Modified_Time"])
    return Landed(record_id=str(details["id"]), values=values, modified_time=modified,
                  created_time=created)


def _code(answer: Any) -> str | None:
    return answer.get("code") if isinstance(answer, dict) else None


def _per_record(answer: Any) -> bool:
    """A write answered per record (``{"data": [{"code": …}]}``): a record's error
    is not the whole call's."""
    return isinstance(answer, dict) and isinstance(answer.get("data"), list) and bool(
        answer["data"]) and isinstance(answer["data"][0], dict) and "code" in answer["data"][0]


def _escape(value: str) -> str:
    """A value inside search ``criteria``: parentheses and commas escaped."""
    return "".join("\\" + c if c in "(),\\" else c for c in value)


DIALECT = Dialect(name="Zoho CRM", expired=frozenset({"INVALID_TOKEN", "AUTHENTICATION_FAILURE"}),
                  unavailable=UNAVAILABLE_CODES, code=_code, per_record=_per_record)
