"""The integration's people as use cases (OPS-06, TICKET-04, TICKET-08, TICKET-09,
PERM-01 … PERM-04): list them, record a CRM user, invite one with a role, activate or
deactivate a desk account, set a user's departments and signals, choose the ticket
visibility, define and remove desk profiles. Each is an integration command
(``projections.integration``): recorded with who gave it, refused with a reason
(``InvalidCommand``) and nothing recorded.
"""

from __future__ import annotations

from typing import Any

from adapters.integration_store import IntegrationService
from daemon.service import NotFound


async def listing(integration: IntegrationService) -> dict[str, Any]:
    """Every CRM user (mutual users marked), every profile, the ticket visibility."""
    people = await integration.people()
    answer = people.as_json()
    answer["mutual_users"] = sorted(u.id for u in people.users.values() if u.mutual)
    return answer


async def user(integration: IntegrationService, user_id: str) -> dict[str, Any]:
    found = (await integration.people()).users.get(user_id)
    if found is None:
        raise NotFound("unknown_user", f"no CRM user {user_id!r}")
    return found.as_json()


async def record_user(integration: IntegrationService, user_id: str, *, name: str,
                      email: str, mutual: bool, by: str) -> dict[str, Any]:
    await integration.change_people("record_crm_user", user_id=user_id, name=name,
                                    email=email, mutual=mutual, by=by)
    return await user(integration, user_id)


async def invite(integration: IntegrationService, user_id: str, role: str, *, by: str
                 ) -> dict[str, Any]:
    await integration.change_people("invite_user", user_id=user_id, role=role, by=by)
    return await user(integration, user_id)


async def desk_account(integration: IntegrationService, user_id: str, active: bool, *,
                       by: str) -> dict[str, Any]:
    await integration.change_people("set_desk_account", user_id=user_id, active=active,
                                    by=by)
    return await user(integration, user_id)


async def departments(integration: IntegrationService, user_id: str, chosen: list[str], *,
                      by: str) -> dict[str, Any]:
    await integration.change_people("set_user_departments", user_id=user_id,
                                    departments=chosen, by=by)
    return await user(integration, user_id)


async def signals(integration: IntegrationService, user_id: str, chosen: list[str], *,
                  by: str) -> dict[str, Any]:
    await integration.change_people("choose_user_signals", user_id=user_id, signals=chosen,
                                    by=by)
    return await user(integration, user_id)


async def ticket_visibility(integration: IntegrationService, visibility: str, *, by: str
                            ) -> dict[str, Any]:
    await integration.change_people("choose_ticket_visibility", visibility=visibility, by=by)
    return await listing(integration)


async def profile(integration: IntegrationService, name: str) -> dict[str, Any]:
    found = (await integration.people()).profiles.get(name)
    if found is None:
        raise NotFound("unknown_profile", f"no desk profile {name!r}")
    return found.as_json()


async def set_profile(integration: IntegrationService, name: str, *, visible: bool,
                      shows: str, access: dict[str, str], configures: bool, by: str
                      ) -> dict[str, Any]:
    await integration.change_people("set_profile", name=name, visible=visible, shows=shows,
                                    access=access, configures=configures, by=by)
    return await profile(integration, name)


async def remove_profile(integration: IntegrationService, name: str, *, by: str) -> None:
    await integration.change_people("remove_profile", name=name, by=by)
