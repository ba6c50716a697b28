"""``syncd users`` and ``syncd profiles``: the integration's people (OPS-06, TICKET-04,
TICKET-08, TICKET-09, PERM-01 … PERM-03), through the running daemon's admin API like
the other operator commands. Changing them needs an admin's token, except a CRM
user's own signals (``syncd users signals ID … --as ID``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click
from tabulate import tabulate

from daemon.cli.admin import client_of, json_option, request
from projections.people import ACCESSES, ITEMS, ROLES, SIGNALS, VISIBILITIES

as_option = click.option("--as", "acting_as", default=None, metavar="CRM_USER",
                         help="The CRM user (id or e-mail) the command acts for.")


def _echo(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text)


def format_user(user: dict[str, Any]) -> str:
    return tabulate([
        ["user", f"{user['id']} {user['name']} <{user['email']}>"],
        ["role", user["role"] or "(not invited)"],
        ["desk account", ("active" if user["desk_active"] else "none")
         + (" (mutual user)" if user["mutual"] else "")],
        ["departments", ", ".join(user["departments"]) or "-"],
        ["signals", ", ".join(user["signals"]) or "-"],
        ["may", ", ".join(user["permissions"])],
    ], tablefmt="plain")


def format_people(data: dict[str, Any]) -> str:
    users = [[u["id"], u["name"], u["email"], u["role"] or "-",
              "yes" if u["desk_active"] else "no", "yes" if u["mutual"] else "",
              ",".join(u["departments"]), ",".join(u["permissions"])]
             for u in data["users"]]
    lines = [f"ticket visibility: {data['ticket_visibility']}", "",
             tabulate(users, headers=["user", "name", "email", "role", "desk account",
                                      "mutual", "departments", "may"]) if users
             else "no CRM users"]
    if data["profiles"]:
        lines += ["", format_profiles(data["profiles"])]
    return "\n".join(lines)


def format_profiles(profiles: list[dict[str, Any]]) -> str:
    rows = [[p["name"], "yes" if p["visible"] else "no", p["shows"],
             *(p["access"][item] for item in ITEMS), "yes" if p["configures"] else ""]
            for p in profiles]
    return tabulate(rows, headers=["profile", "visible", "shows", *ITEMS, "configures"])


def _user_path(user: str, tail: str = "") -> str:
    return f"/people/users/{quote(user, safe='')}{tail}"


@click.group()
def users() -> None:
    """CRM users: invitations, roles, departments, sales signals (OPS-06)."""


@users.command("list")
@json_option
@click.pass_context
def list_users(ctx: click.Context, as_json: bool) -> None:
    """Every CRM user the integration knows (mutual users marked) and the profiles."""
    data = request(client_of(ctx), "GET", "/people")
    _echo(data, as_json, format_people(data))


@users.command("me")
@as_option
@json_option
@click.pass_context
def me(ctx: click.Context, acting_as: str | None, as_json: bool) -> None:
    """The CRM user ``--as`` names, and what the user may do."""
    data = request(client_of(ctx), "GET", "/people/me", acting_as=acting_as)
    _echo(data, as_json, format_user(data))


@users.command("add")
@click.argument("user_id")
@click.option("--name", required=True)
@click.option("--email", required=True)
@click.option("--mutual", is_flag=True, help="The user is in the desk already.")
@json_option
@click.pass_context
def add(ctx: click.Context, user_id: str, name: str, email: str, mutual: bool,
        as_json: bool) -> None:
    """Record a CRM user the integration knows (its CRM user id)."""
    data = request(client_of(ctx), "PUT", _user_path(user_id),
                   {"name": name, "email": email, "mutual": mutual})
    _echo(data, as_json, format_user(data))


@users.command("invite")
@click.argument("user_id")
@click.option("--role", required=True, type=click.Choice(ROLES))
@json_option
@click.pass_context
def invite(ctx: click.Context, user_id: str, role: str, as_json: bool) -> None:
    """Invite a CRM user to the desk with a role, or change the role."""
    data = request(client_of(ctx), "PUT", _user_path(user_id, "/role"), {"role": role})
    _echo(data, as_json, format_user(data))


@users.command("activate")
@click.argument("user_id")
@click.option("--off", "inactive", is_flag=True, help="Deactivate the desk account.")
@json_option
@click.pass_context
def activate(ctx: click.Context, user_id: str, inactive: bool, as_json: bool) -> None:
    """The user's desk account is active (the invitation accepted), or not (--off)."""
    data = request(client_of(ctx), "PUT", _user_path(user_id, "/desk-account"),
                   {"active": not inactive})
    _echo(data, as_json, format_user(data))


@users.command("departments")
@click.argument("user_id")
@click.argument("department_ids", nargs=-1)
@json_option
@click.pass_context
def departments(ctx: click.Context, user_id: str, department_ids: tuple[str, ...],
                as_json: bool) -> None:
    """The desk departments a CRM user belongs to (none: no department)."""
    data = request(client_of(ctx), "PUT", _user_path(user_id, "/departments"),
                   {"departments": list(department_ids)})
    _echo(data, as_json, format_user(data))


@users.command("signals")
@click.argument("user_id")
@click.argument("chosen", nargs=-1, type=click.Choice(SIGNALS))
@as_option
@json_option
@click.pass_context
def signals(ctx: click.Context, user_id: str, chosen: tuple[str, ...],
            acting_as: str | None, as_json: bool) -> None:
    """The sales signals a CRM user enabled (none: all off)."""
    data = request(client_of(ctx), "PUT", _user_path(user_id, "/signals"),
                   {"signals": list(chosen)}, acting_as=acting_as)
    _echo(data, as_json, format_user(data))


@users.command("visibility")
@click.argument("visibility", type=click.Choice(VISIBILITIES))
@json_option
@click.pass_context
def visibility(ctx: click.Context, visibility: str, as_json: bool) -> None:
    """CRM users see every department's tickets, or only their departments'."""
    data = request(client_of(ctx), "PUT", "/people/ticket-visibility",
                   {"visibility": visibility})
    _echo(data, as_json, format_people(data))


@click.group()
def profiles() -> None:
    """Desk profiles: what their agents see of the CRM (PERM-01 … PERM-03)."""


def _access(values: tuple[str, ...]) -> dict[str, str]:
    access: dict[str, str] = {}
    for value in values:
        item, _, level = value.partition("=")
        if item not in ITEMS or level not in ACCESSES:
            raise click.BadParameter(f"{value!r}: ITEM=LEVEL, ITEM one of {', '.join(ITEMS)},"
                                     f" LEVEL one of {', '.join(ACCESSES)}",
                                     param_hint="--access")
        access[item] = level
    return access


@profiles.command("set")
@click.argument("name")
@click.option("--hidden", is_flag=True, help="The profile does not see the integration.")
@click.option("--shows", type=click.Choice(["contacts", "accounts"]), default="contacts",
              show_default=True)
@click.option("--access", multiple=True, metavar="ITEM=LEVEL",
              help="info, deals, notes, calls, events or tasks = full, restricted or none"
                   " (repeatable; unnamed items are full).")
@click.option("--configures", is_flag=True,
              help="The profile's agents may configure the integration (PERM-04).")
@json_option
@click.pass_context
def set_profile(ctx: click.Context, name: str, hidden: bool, shows: str,
                access: tuple[str, ...], configures: bool, as_json: bool) -> None:
    """Define or change a desk profile's view of the CRM."""
    data = request(client_of(ctx), "PUT", f"/people/profiles/{quote(name, safe='')}",
                   {"visible": not hidden, "shows": shows, "access": _access(access),
                    "configures": configures})
    _echo(data, as_json, format_profiles([data]))


@profiles.command("remove")
@click.argument("name")
@json_option
@click.pass_context
def remove_profile(ctx: click.Context, name: str, as_json: bool) -> None:
    data = request(client_of(ctx), "DELETE", f"/people/profiles/{quote(name, safe='')}")
    _echo(data, as_json, format_profiles(data["profiles"]) if data["profiles"]
          else "no desk profiles")
