"""``syncd tickets create|comment|reply|forward|update|close|delete|link|unlink|action``:
a CRM user's actions on desk tickets (TICKET-02, TICKET-03, TICKET-05), through the
running daemon's API like every operator command, each ``--as`` the CRM user it acts
for (``X-Syncd-Crm-User``; the token needs the operator role).

An action is accepted, then applied by the projector: the command prints the action's
id, and ``--wait`` asks until it is applied or failed (``syncd tickets action ID`` asks
once). Registered on the ``tickets`` group (``daemon.cli.tickets``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import click

from daemon.cli.admin import client_of, json_option, request
from daemon.cli.tickets import tickets

F = TypeVar("F", bound=Callable[..., Any])

WAIT_SECONDS = 30.0


def _acting(function: F) -> F:
    """``--as CRM_USER``, ``--wait`` and ``--json``, shared by every action command."""
    function = click.option("--as", "acting_as", required=True, metavar="CRM_USER",
                            help="The CRM user who acts (id or e-mail).")(function)
    function = click.option("--wait", is_flag=True,
                            help=f"Wait (up to {WAIT_SECONDS:.0f} s) until it is applied"
                                 " or failed.")(function)
    return json_option(function)


def _attachments(values: tuple[str, ...]) -> list[Any]:
    out = []
    for value in values:
        try:
            out.append(json.loads(value))
        except ValueError:
            raise click.BadParameter(f"not JSON: {value[:80]}", param_hint="--attach") from None
    return out


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    line = f"action {answer['action_id']} ({answer.get('kind')}): {answer['status']}"
    if answer["status"] == "failed":
        line += f": {answer.get('reason')}: {answer.get('detail') or ''}".rstrip(": ")
    elif answer["status"] == "applied":
        line += " " + json.dumps(answer.get("result") or {}, sort_keys=True)
    click.echo(line)


def _act(ctx: click.Context, method: str, path: str, body: Any, *, acting_as: str,
         wait: bool, as_json: bool) -> None:
    client = client_of(ctx)
    answer = request(client, method, path, body, acting_as=acting_as)
    if wait:
        deadline = time.monotonic() + WAIT_SECONDS
        while answer["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            answer = request(client, "GET", f"/ticket-actions/{answer['action_id']}")
    _show(answer, as_json)
    if answer["status"] == "failed":
        ctx.exit(1)


def _ticket(ticket: str) -> str:
    return f"/tickets/{quote(ticket, safe='')}"


@tickets.command("create")
@click.option("--from", "origin", required=True, metavar="MODULE/ID",
              help="The CRM record it is created from: contacts/501, accounts/901, …")
@click.option("--subject", required=True)
@click.option("--department", required=True, help="The desk department's id.")
@click.option("--contact-id", default=None, help="An existing desk contact.")
@click.option("--crm-contact", default=None,
              help="A CRM contact (its linked desk contact); by default the --from contact.")
@click.option("--new-contact", default=None, metavar="JSON",
              help='A new contact: {"last_name": …, "first_name", "email", "phone"}.')
@click.option("--description", default=None)
@click.option("--priority", default=None)
@click.option("--due", default=None, help="Due date, RFC 3339 with a zone.")
@click.option("--attach", multiple=True, metavar="JSON",
              help='An attachment by reference: {"name", "size", "content_type", "url" or'
                   ' "object_key"}; repeatable.')
@_acting
@click.pass_context
def create(ctx: click.Context, origin: str, subject: str, department: str,
           contact_id: str | None, crm_contact: str | None, new_contact: str | None,
           description: str | None, priority: str | None, due: str | None,
           attach: tuple[str, ...], acting_as: str, wait: bool, as_json: bool) -> None:
    """Create a ticket from a CRM record (TICKET-02)."""
    module, _, record = origin.partition("/")
    if not module or not record:
        raise click.BadParameter("MODULE/ID, as contacts/501", param_hint="--from")
    body: dict[str, Any] = {"subject": subject, "department_id": department,
                            "attachments": _attachments(attach)}
    for key, value in (("contact_id", contact_id), ("crm_contact_id", crm_contact),
                       ("description", description), ("priority", priority),
                       ("due_date", due)):
        if value is not None:
            body[key] = value
    if new_contact is not None:
        try:
            body["new_contact"] = json.loads(new_contact)
        except ValueError:
            raise click.BadParameter("not JSON", param_hint="--new-contact") from None
    _act(ctx, "POST", f"/crm/{quote(module, safe='')}/{quote(record, safe='')}/tickets",
         body, acting_as=acting_as, wait=wait, as_json=as_json)


def _message_command(name: str, path: str, help_text: str) -> None:
    @tickets.command(name, help=help_text)
    @click.argument("ticket")
    @click.argument("content")
    @click.option("--to", multiple=True, help="An address (a forward's; a reply's besides"
                                              " the requester); repeatable.")
    @click.option("--attach", multiple=True, metavar="JSON",
                  help="An attachment by reference (as for create); repeatable.")
    @_acting
    @click.pass_context
    def command(ctx: click.Context, ticket: str, content: str, to: tuple[str, ...],
                attach: tuple[str, ...], acting_as: str, wait: bool, as_json: bool) -> None:
        _act(ctx, "POST", f"{_ticket(ticket)}/{path}",
             {"content": content, "to": list(to), "attachments": _attachments(attach)},
             acting_as=acting_as, wait=wait, as_json=as_json)


_message_command("comment", "comments", "Comment on a ticket: to users only (TICKET-10).")
_message_command("reply", "replies", "Reply to the requester (and --to) (TICKET-03).")
_message_command("forward", "forwards", "Forward a ticket to --to addresses (TICKET-03).")


@tickets.command("update")
@click.argument("ticket")
@click.argument("fields", nargs=-1, required=True, metavar="FIELD=VALUE...")
@_acting
@click.pass_context
def update(ctx: click.Context, ticket: str, fields: tuple[str, ...], acting_as: str,
           wait: bool, as_json: bool) -> None:
    """Set ticket fields (TICKET-03): priority=High owner=kim due_date=2026-12-01T10:00:00Z
    custom.cf_region=EMEA department_id=4 (a VALUE that is JSON is taken as JSON: 4, null,
    true; otherwise as text)."""
    values: dict[str, Any] = {}
    for item in fields:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: FIELD=VALUE", param_hint="FIELDS")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    _act(ctx, "PATCH", _ticket(ticket), {"fields": values}, acting_as=acting_as, wait=wait,
         as_json=as_json)


def _plain_command(name: str, method: str, suffix: str, help_text: str) -> None:
    """An action on a ticket with no payload (close, delete)."""
    @tickets.command(name, help=help_text)
    @click.argument("ticket")
    @_acting
    @click.pass_context
    def command(ctx: click.Context, ticket: str, acting_as: str, wait: bool,
                as_json: bool) -> None:
        _act(ctx, method, _ticket(ticket) + suffix, None, acting_as=acting_as, wait=wait,
             as_json=as_json)


_plain_command("close", "POST", "/close", "Close a ticket (TICKET-03).")
_plain_command("delete", "DELETE", "", "Delete a ticket: to the desk's recycle bin"
                                        " (TICKET-03).")


def _deal_command(name: str, method: str, help_text: str) -> None:
    """A ticket's link to a CRM deal, made or undone."""
    @tickets.command(name, help=help_text)
    @click.argument("ticket")
    @click.argument("deal")
    @_acting
    @click.pass_context
    def command(ctx: click.Context, ticket: str, deal: str, acting_as: str, wait: bool,
                as_json: bool) -> None:
        _act(ctx, method, f"{_ticket(ticket)}/deals/{quote(deal, safe='')}", None,
             acting_as=acting_as, wait=wait, as_json=as_json)


_deal_command("link", "PUT", "Link a ticket to a CRM deal; an open deal raises its priority"
                             " to High (TICKET-05).")
_deal_command("unlink", "DELETE", "Unlink a ticket from a CRM deal (TICKET-05).")


@tickets.command("action")
@click.argument("action_id")
@json_option
@click.pass_context
def action(ctx: click.Context, action_id: str, as_json: bool) -> None:
    """What became of an action: pending, applied (the desk's ids) or failed (why)."""
    answer = request(client_of(ctx), "GET", f"/ticket-actions/{quote(action_id, safe='')}")
    _show(answer, as_json)
