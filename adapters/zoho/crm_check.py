"""``syncd integration check`` for Zoho CRM: what the daemon needs of the CRM, each
checked with one call, each problem said with what to do.

Checked: the credentials (a token refreshed), reading each synced module (its
scope and the user's permission), the external-id field on each module, the bulk
read's scope (when the first sync uses it): ``access``, which the daemon also runs
when it starts (``adapters.store_access``); and the notification URL answering
with the channel token. Not checked: the API credits
left, which Zoho CRM's API does not report to a client (its API dashboard does).
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from adapters.remote_poll import MODULES
from adapters.store_access import Check, failed
from adapters.write_errors import WriteError
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_bulk import CrmBulkRead
from adapters.zoho.crm_fields import FIELDS, STANDING_MODULES, SYSTEM_FIELDS, module_name
from adapters.zoho.crm_poll import Notifications

FIELDS_A_CALL = 50
"""Fields a records call may ask for (``fields``; Zoho's limit)."""


async def check(crm: ZohoCrm, *, notifications: Notifications | None,
                bulk_read: bool = True) -> list[Check]:
    checks = await access(crm, bulk_read=bulk_read)
    if not checks[0].ok:
        return checks  # nothing else can be asked
    checks.append(await _notifications(notifications))
    checks.append(Check("API credits", True, "not checked: Zoho CRM's API does not report"
                        " the credits left (see Setup > Developer Space > APIs)"))
    return checks


async def access(crm: ZohoCrm, *, bulk_read: bool = True) -> list[Check]:
    """What the daemon needs before it reads or writes: the credentials, each module
    readable, its external-id field, the bulk read's scope."""
    checks = [await _credentials(crm)]
    if not checks[0].ok:
        return checks  # nothing else can be asked
    for module in MODULES:
        checks.append(await _readable(crm, module))
        checks.append(await _sync_key_field(crm, module))
    for module in STANDING_MODULES:  # read for the handshake board, never written
        checks.append(await _readable(crm, module))
    if bulk_read:
        checks.append(await _bulk_read(crm))
    return checks


async def _credentials(crm: ZohoCrm) -> Check:
    try:
        await crm.sample("accounts")
    except WriteError as err:
        return failed("credentials", err, "create a refresh token for the integration user"
                      " with the scopes ZohoCRM.modules.ALL and ZohoCRM.settings.ALL")
    return Check("credentials", True, "a token was granted and used")


async def _readable(crm: ZohoCrm, module: str) -> Check:
    name = f"read {module_name(module)}"
    try:
        await crm.sample(module)
    except WriteError as err:
        return failed(name, err, "give the integration user's profile access to"
                      f" {module_name(module)}")
    return Check(name, True, "readable")


async def _sync_key_field(crm: ZohoCrm, module: str) -> Check:
    wanted = crm.options.sync_key_field
    name = f"{module_name(module)}.{wanted}"
    try:
        fields = await crm.fields(module)
    except WriteError as err:
        return failed(name, err, "the fields could not be read: add the scope"
                      " ZohoCRM.settings.ALL to the refresh token")
    field = next((f for f in fields if f.get("api_name") == wanted), None)
    if field is None:
        return Check(name, False, f"missing: add to {module_name(module)} a single-line field"
                     f" marked External with the API name {wanted}")
    if not (field.get("external") or {}).get("show"):
        return Check(name, False, f"{wanted} is not marked External: edit the field and"
                     " tick External Field")
    return Check(name, True, "an external-id field")


async def _bulk_read(crm: ZohoCrm) -> Check:
    try:
        await CrmBulkRead(crm).readable()
    except WriteError as err:
        return failed("bulk read", err, "add the scope ZohoCRM.bulk.READ to the refresh"
                      " token, or set SYNCD_ZOHO_CRM_BULK_READ=false")
    return Check("bulk read", True, "allowed (the first sync reads each module by it)")


async def _notifications(notifications: Notifications | None) -> Check:
    if notifications is None:
        return Check("notifications", True, "not configured: changes are captured by the"
                     " poll alone")
    body = {"channel_id": notifications.channel_id, "module": "Contacts",
            "operation": "update", "ids": [],
            "token": notifications.token.get_secret_value()}
    try:
        async with aiohttp.ClientSession() as session, session.post(
                notifications.notify_url, json=body,
                timeout=aiohttp.ClientTimeout(total=10)) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as err:
        return Check("notifications", False, f"{notifications.notify_url} is not reachable"
                     f" ({type(err).__name__}): Zoho could not call it either")
    if status != 200:
        return Check("notifications", False, f"{notifications.notify_url} answered {status}:"
                     " is the daemon running with this channel token?")
    return Check("notifications", True, f"{notifications.notify_url} takes the channel token")


async def custom_fields(crm: ZohoCrm, module: str, keys: Sequence[str]) -> str | None:
    """Why a mapping cannot name the custom fields ``keys`` (``custom.<key>``) of
    ``module``, or None: each must be a field of the module by its API name, which is
    case-sensitive (``GET /crm/v8/settings/fields``), other than those the sync maps
    itself, and all must fit in one call's ``fields`` with the standard ones."""
    if not keys:
        return None
    zoho = module_name(module)
    if len(asked := crm.fields_asked(module, keys)) > FIELDS_A_CALL:
        return (f"Zoho CRM returns at most {FIELDS_A_CALL} fields a call: map at most"
                f" {FIELDS_A_CALL - len(asked) + len(keys)} custom fields of {zoho}")
    taken = {*FIELDS[module].values(), *SYSTEM_FIELDS, crm.options.sync_key_field}
    try:
        names = {f.get("api_name") for f in await crm.fields(module)} - taken
    except WriteError as err:
        return f"the fields of {zoho} could not be read to check the mapping: {err.detail}"
    by_lower = {str(n).lower(): n for n in names}
    problems = []
    for key in keys:
        if key in names:
            continue
        problem = f"custom.{key}: {zoho} has no field the sync can map with the API name {key}"
        if key.lower() in by_lower:
            problem += f" (API names are case-sensitive: custom.{by_lower[key.lower()]})"
        problems.append(problem)
    return "; ".join(problems) + " (Setup > Developer Space > APIs > API names)" \
        if problems else None
