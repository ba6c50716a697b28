"""``GET /api/v1/crm-view/{contacts|accounts}/{record}?profile=NAME``: what a desk
profile's agents see of the CRM for a desk contact or account (PERM-01 … PERM-03).

The route is the desk's side of the integration: the record is a *desk* contact's or
account's id, the profile a desk profile's name. An unknown profile, a profile that does
not see the integration, a record linked to nothing: 404 with the reason
(``daemon.service.crm_view.NothingToShow``), never an empty 200.

A token bound to a desk profile (``api_tokens[].profile``) is an agent's: it sees the
CRM as its own profile only (``?profile=`` may be left out, or must name it), so a
restricted agent cannot ask for a fuller profile's view.
"""

from __future__ import annotations

from aiohttp import web

from daemon.http.api import ApiContext, dumps, record_of
from daemon.http.auth import PROFILE
from daemon.http.errors import ApiError
from daemon.service import crm_view


def _profile_name(request: web.Request) -> str | None:
    bound = request.get(PROFILE)
    name = request.query.get("profile", bound)
    if bound is not None and name != bound:
        raise ApiError(403, "forbidden", f"this token is bound to desk profile {bound!r}:"
                       " it sees the CRM as that profile only")
    return name


async def crm_view_of(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    """PERM-01 … PERM-03: the linked CRM information, as the profile may see it."""
    record = record_of(request)
    module: crm_view.DeskModule = (
        "contacts" if request.match_info["module"] == "contacts" else "accounts")
    profile = crm_view.profile_named(await ctx.desk_profiles(), _profile_name(request))
    return web.json_response(await crm_view.crm_view(ctx.pool, profile, module, record),
                             dumps=dumps)
