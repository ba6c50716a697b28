"""``syncd integration check`` for Zoho Desk: what the daemon needs of the desk, each
checked with one call, each problem said with what to do.

Checked: the credentials and the organisation (a token refreshed, ``orgId``
accepted), reading each synced module and the handshake board's departments and
tickets (their scopes and the agent's profile), the
custom field holding the sync's key on each module (a search by it: Zoho Desk
refuses one naming a field it does not have): ``access``, which the daemon also
runs when it starts (``adapters.store_access``); and the webhook URL (Zoho's GET
check answered, and a callback with the token accepted). Not checked: the API
credits left, which Zoho Desk's API does not report to a client (its API
dashboard does).
"""

from __future__ import annotations

import aiohttp

from adapters.remote_poll import MODULES
from adapters.store_access import Check, failed
from adapters.write_errors import Unavailable, WriteError
from adapters.zoho.desk import ZohoDesk
from adapters.zoho.desk_capture import Webhooks
from adapters.zoho.desk_fields import BOARD_MODULES

SCOPES = ("Desk.contacts.ALL, Desk.products.ALL, Desk.tickets.ALL, Desk.search.READ,"
          " Desk.basic.READ and Desk.settings.ALL")
"""What the daemon's refresh token needs (tickets: the board's capture, close and reply)."""


async def check(desk: ZohoDesk, *, webhooks: Webhooks | None) -> list[Check]:
    checks = await access(desk)
    if not checks[0].ok:
        return checks  # nothing else can be asked
    checks.append(await _webhook(webhooks))
    checks.append(Check("API credits", True, "not checked: Zoho Desk's API does not report"
                        " the credits left (see Setup > Developer Space > API Dashboard)"))
    return checks


async def access(desk: ZohoDesk) -> list[Check]:
    """What the daemon needs before it reads or writes: the credentials and the
    organisation, each module readable, the sync key's custom field."""
    checks = [await _credentials(desk)]
    if not checks[0].ok:
        return checks  # nothing else can be asked
    for module in MODULES:
        checks.append(await _readable(desk, module))
        checks.append(await _sync_key_field(desk, module))
    for module in BOARD_MODULES:
        checks.append(await _readable(desk, module))
    return checks


async def _credentials(desk: ZohoDesk) -> Check:
    try:
        await desk.sample("accounts")
    except WriteError as err:
        return failed("credentials", err, "create a refresh token for the integration"
                      f" agent with the scopes {SCOPES}, and check SYNCD_ZOHO_DESK_ORG_ID")
    return Check("credentials", True, "a token was granted and the organisation took it")


async def _readable(desk: ZohoDesk, module: str) -> Check:
    try:
        await desk.sample(module)
    except WriteError as err:
        return failed(f"read {module}", err, "give the integration agent's profile access"
                      f" to {module}")
    return Check(f"read {module}", True, "readable")


async def _sync_key_field(desk: ZohoDesk, module: str) -> Check:
    wanted = desk.options.sync_key_field
    name = f"{module}.{wanted}"
    try:
        await desk.by_sync_key(module, "new:check")
    except Unavailable as err:
        return failed(name, err, "the sync searches by it: add the scope Desk.search.READ"
                      " to the refresh token")
    except WriteError as err:
        return failed(name, err, f"add to {module} a single-line custom field whose API"
                      f" name is {wanted}")
    return Check(name, True, "a custom field the sync can search")


async def _webhook(webhooks: Webhooks | None) -> Check:
    if webhooks is None:
        return Check("webhook", True, "not configured: changes are captured by the poll"
                     " alone")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(webhooks.url,
                                   timeout=aiohttp.ClientTimeout(total=10)) as response:
                checked = response.status
            async with session.post(webhooks.callback(), json=[],
                                    timeout=aiohttp.ClientTimeout(total=10)) as response:
                called = response.status
    except (aiohttp.ClientError, TimeoutError) as err:
        return Check("webhook", False, f"{webhooks.url} is not reachable"
                     f" ({type(err).__name__}): Zoho could not call it either")
    if checked != 200 or called != 200:
        return Check("webhook", False, f"{webhooks.url} answered {checked} to Zoho's check"
                     f" and {called} to a callback: is the daemon running with"
                     " SYNCD_DESK_STORE=zoho and this webhook token?")
    return Check("webhook", True, "the daemon answers Zoho's check and takes its callbacks")
