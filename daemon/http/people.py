"""The people's handlers: CRM users, invitations and roles, departments, signals,
ticket visibility and desk profiles (``daemon.service.people``). Paths and roles are
in ``routes.py``: changing people and profiles is an admin's, except a CRM user's own
sales signals, which the user chooses (``X-Syncd-Crm-User``)."""

from __future__ import annotations

from aiohttp import web

from daemon.http import bodies
from daemon.http.acting import acting_user
from daemon.http.api import ApiContext
from daemon.http.auth import ROLE, WHO
from daemon.http.errors import ApiError
from daemon.service import people


def _name(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if len(value) > 200:
        raise ApiError(400, "invalid_parameter", f"{key} is at most 200 characters")
    return value


def _by(request: web.Request) -> str:
    return request[WHO]


async def listing(ctx: ApiContext, _request: web.Request, _body: None) -> web.Response:
    return web.json_response(await people.listing(ctx.integration))


async def me(ctx: ApiContext, request: web.Request, _body: None) -> web.Response:
    """The acting CRM user, with what the user may do."""
    return web.json_response((await acting_user(ctx.integration, request)).as_json())


async def record_user(ctx: ApiContext, request: web.Request, body: bodies.CrmUserBody
                      ) -> web.Response:
    return web.json_response(await people.record_user(
        ctx.integration, _name(request, "user"), name=body.name, email=body.email,
        mutual=body.mutual, by=_by(request)))


async def invite(ctx: ApiContext, request: web.Request, body: bodies.RoleBody
                 ) -> web.Response:
    return web.json_response(await people.invite(
        ctx.integration, _name(request, "user"), body.role, by=_by(request)))


async def desk_account(ctx: ApiContext, request: web.Request, body: bodies.DeskAccount
                       ) -> web.Response:
    return web.json_response(await people.desk_account(
        ctx.integration, _name(request, "user"), body.active, by=_by(request)))


async def departments(ctx: ApiContext, request: web.Request, body: bodies.Departments
                      ) -> web.Response:
    return web.json_response(await people.departments(
        ctx.integration, _name(request, "user"), body.departments, by=_by(request)))


async def signals(ctx: ApiContext, request: web.Request, body: bodies.Signals
                  ) -> web.Response:
    """An admin sets anyone's; otherwise the acting CRM user sets only their own."""
    user_id = _name(request, "user")
    if request.get(ROLE) != "admin":
        acting = await acting_user(ctx.integration, request)
        if acting.id != user_id:
            raise ApiError(403, "not_your_signals",
                           f"CRM user {acting.id} may choose only their own sales signals")
    return web.json_response(await people.signals(
        ctx.integration, user_id, body.signals, by=_by(request)))


async def ticket_visibility(ctx: ApiContext, request: web.Request,
                            body: bodies.TicketVisibility) -> web.Response:
    return web.json_response(await people.ticket_visibility(
        ctx.integration, body.visibility, by=_by(request)))


async def set_profile(ctx: ApiContext, request: web.Request, body: bodies.Profile
                      ) -> web.Response:
    return web.json_response(await people.set_profile(
        ctx.integration, _name(request, "profile"), visible=body.visible, shows=body.shows,
        access=body.access, configures=body.configures, by=_by(request)))


async def remove_profile(ctx: ApiContext, request: web.Request, _body: None
                         ) -> web.Response:
    await people.remove_profile(ctx.integration, _name(request, "profile"), by=_by(request))
    return web.json_response(await people.listing(ctx.integration))
