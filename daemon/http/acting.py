"""Who acts on the CRM side: the CRM user a request names, and the check of what that
user's role allows (OPS-06, TICKET-04, TICKET-08).

The CRM-side application calls with its bearer token (the route's token role) and
names the person it acts for in the ``X-Syncd-Crm-User`` header: a CRM user's id, or
e-mail, as the integration knows them (``syncd users``). Roles and visibility are then
enforced per person: a permission the user lacks is a 403 whose ``code`` names it
(``needs_<permission>``), recorded as refused in the integration's audit trail, with
nothing else changed.
"""

from __future__ import annotations

from aiohttp import web

from adapters.integration_store import IntegrationService
from daemon.http.auth import who
from daemon.http.errors import ApiError
from projections.people import CrmUser, People, Permission

CRM_USER_HEADER = "X-Syncd-Crm-User"


def named_user(people: People, request: web.Request) -> CrmUser:
    """The CRM user the request names (id, or e-mail case-insensitively): 401 when it
    names none, 403 when the integration does not know that user."""
    named = request.headers.get(CRM_USER_HEADER, "").strip()
    if not named:
        raise ApiError(401, "crm_user_required",
                       f"name the acting CRM user in the {CRM_USER_HEADER} header")
    user = people.users.get(named)
    if user is None:
        lowered = named.lower()
        user = next((u for u in people.users.values() if u.email.lower() == lowered), None)
    if user is None:
        raise ApiError(403, "unknown_crm_user",
                       f"the integration knows no CRM user {named[:200]!r} (syncd users)")
    return user


async def acting_user(integration: IntegrationService, request: web.Request) -> CrmUser:
    """The CRM user the request acts for, as the integration knows them now."""
    return named_user(await integration.people(), request)


async def require(integration: IntegrationService, request: web.Request, user: CrmUser,
                  permission: Permission, *, action: str, target: str) -> None:
    """Pass when ``user`` may ``permission``; else record the refusal in the audit trail
    (who: the token's name, for the user) and answer 403 ``needs_<permission>``."""
    missing = user.missing(permission)
    if missing is None:
        return
    await integration.record_refusal(user.id, action, target, missing,
                                     by=who(request) or user.email)
    reason = ("has no active desk account, so may only comment"
              if not user.desk_active or user.role is None
              else f"has the role {user.role}, which may not {missing}")
    raise ApiError(403, f"needs_{missing}",
                   f"CRM user {user.id} ({user.email}) {reason} (TICKET-04)",
                   permission=missing)
