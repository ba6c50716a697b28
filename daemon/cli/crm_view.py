"""``syncd crm-view --contact ID | --account ID --profile NAME``: what a desk profile's
agents see of the CRM for a desk contact or account (PERM-01 … PERM-03).

It asks the running daemon's admin API (a viewer's token is enough), like the other
operator commands. The ids are the *desk's*. Text for people: each item the profile
sees, its fields one per line; ``--json`` for scripts. A profile that sees nothing is
the API's 404, with its reason, as the command's error.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from daemon.cli.admin import client_of, json_option, request

ORDER = ("info", "deals", "notes", "calls", "events", "tasks")


def _fields(values: dict[str, Any]) -> list[str]:
    return [f"    {name}: {json.dumps(value, ensure_ascii=False)}"
            for name, value in values.items()]


def format_view(view: dict[str, Any]) -> str:
    """The profile's rules, then each shown record's items (left-out items say so)."""
    desk = view["desk"]
    access = ", ".join(f"{item} {level}" for item, level in view["access"].items())
    lines = [f"desk {desk['module'][:-1]} {desk['id']}, as desk profile {view['profile']}"
             f" sees it (CRM {view['shows']}; {access})"]
    if not view["records"]:
        lines.append("no CRM record to show")
    for number, record in enumerate(view["records"], 1):
        lines.append(f"\nCRM {view['shows'][:-1]} {number}")
        for item in ORDER:
            if item not in record:
                lines.append(f"  {item}: not shown to this profile")
            elif item == "info":
                lines += ["  info", *_fields(record["info"])]
            else:
                lines.append(f"  {item}: {len(record[item])}")
                for entry in record[item]:
                    lines += [*_fields(entry), ""]
    return "\n".join(lines).rstrip()


@click.command("crm-view")
@click.option("--contact", default=None, help="A desk contact's id.")
@click.option("--account", default=None, help="A desk account's id.")
@click.option("--profile", default=None,
              help="The desk profile's name (a token bound to a profile may leave it out).")
@json_option
@click.pass_context
def crm_view(ctx: click.Context, contact: str | None, account: str | None,
             profile: str | None, as_json: bool) -> None:
    """What a desk profile sees of the CRM for a desk contact or account (PERM-01..03)."""
    if (contact is None) == (account is None):
        raise click.UsageError("give one of --contact ID or --account ID")
    module, record = ("contacts", contact) if contact is not None else ("accounts", account)
    assert record is not None
    data = request(client_of(ctx), "GET", f"/crm-view/{module}/{quote(record, safe='')}",
                   query={"profile": profile} if profile is not None else None)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json
               else format_view(data))
