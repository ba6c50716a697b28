"""``syncd tickets``: the desk's tickets as the CRM sees them (issue 17).

``syncd tickets stats --contact ID | --account ID | --deal ID``: a CRM record's customer
statistics (TICKET-06); ``syncd tickets list --contact ID | --account ID | --deal ID |
--lead ID [--filter …]``: its tickets, the related list (TICKET-01, TICKET-07).
Both ask the running daemon's admin API like the other operator commands
(``daemon.cli.admin``; a viewer's token is enough). Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click
from tabulate import tabulate

from daemon.cli.admin import client_of, json_option, request

LABEL = {"contacts": "contact", "accounts": "account", "deals": "deal", "leads": "lead"}
"""A CRM module's record, as the output names it."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{days}d " if days else "") + f"{hours}h{minutes:02d}"


def format_statistics(stats: dict[str, Any]) -> str:
    """The figures, then one line per ticket, newest first."""
    ratings = stats["ratings"]
    summary = [
        ["tickets", stats["total_tickets"]],
        ["open", stats["open_tickets"]],
        ["overdue", f"{stats['overdue_tickets']} (at {stats['as_of'] or 'no event yet'})"],
        ["average first response",
         f"{_duration(stats['average_first_response_seconds'])}"
         f" over {stats['responded_tickets']} ticket(s)"],
        ["average resolution",
         f"{_duration(stats['average_resolution_seconds'])}"
         f" over {stats['resolved_tickets']} ticket(s)"],
        ["ratings", ", ".join(f"{name} {count}" for name, count in ratings.items())],
    ]
    lines = [f"CRM {LABEL[stats['module']]} {stats['id']}", tabulate(summary, tablefmt="plain")]
    if stats["tickets"]:
        rows = [[t["ticket_id"], t["subject"] or "", t["status_type"] or "?",
                 "yes" if t["overdue"] else "", _duration(t["first_response_seconds"]),
                 _duration(t["resolution_seconds"]), t["rating"] or ""]
                for t in stats["tickets"]]
        lines += ["", tabulate(rows, headers=["ticket", "subject", "status", "overdue",
                                              "first response", "resolution", "rating"])]
    return "\n".join(lines)


@click.group()
def tickets() -> None:
    """The desk's tickets as the CRM sees them."""


def format_list(page: dict[str, Any]) -> str:
    """One line per ticket, newest first, under what the page is."""
    shown = f"{page['offset'] + 1}-{page['offset'] + len(page['tickets'])}" \
        if page["tickets"] else "none"
    head = (f"CRM {LABEL[page['module']]} {page['id']}: {page['total']} ticket(s)"
            f"{' ' + page['filter'] if page['filter'] else ''}, {shown} shown"
            f" (overdue at {page['as_of'] or 'no event yet'})")
    rows = [[t["ticket_id"], t["subject"] or "", t["status"] or "", t["status_type"] or "?",
             t["priority"] or "", t["department_id"] or "", t["requester"] or "",
             t["created_at"], t["due_date"] or "", "yes" if t["overdue"] else "",
             t["rating"] or ""] for t in page["tickets"]]
    if not rows:
        return head
    return head + "\n\n" + tabulate(rows, headers=[
        "ticket", "subject", "status", "type", "priority", "department", "requester",
        "created", "due", "overdue", "rating"])


contact_option = click.option("--contact", default=None, help="A CRM contact's id.")
account_option = click.option("--account", default=None, help="A CRM account's id.")
deal_option = click.option("--deal", default=None, help="A CRM deal's id.")
lead_option = click.option("--lead", default=None, help="A CRM lead's id.")


def _record_path(**records: str | None) -> str:
    """``/crm/{module}/{id}`` of the one record given, among ``records`` (each option's
    value by its module's name)."""
    given = [(m, r) for m, r in records.items() if r is not None]
    if len(given) != 1:
        raise click.UsageError("give one of " + " or ".join(
            f"--{LABEL[m]} ID" for m in records))
    module, record = given[0]
    return f"/crm/{module}/{quote(record, safe='')}"


@tickets.command("stats")
@contact_option
@account_option
@deal_option
@json_option
@click.pass_context
def stats(ctx: click.Context, contact: str | None, account: str | None, deal: str | None,
          as_json: bool) -> None:
    """Customer statistics of a CRM contact, account or deal (TICKET-06)."""
    path = _record_path(contacts=contact, accounts=account, deals=deal)
    data = request(client_of(ctx), "GET", f"{path}/statistics")
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json
               else format_statistics(data))


@tickets.command("list")
@contact_option
@account_option
@deal_option
@lead_option
@click.option("--filter", "only", default=None,
              type=click.Choice(["overdue", "closed", "escalated", "high_priority"]),
              help="Only these tickets (TICKET-07).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@json_option
@click.pass_context
def list_tickets(ctx: click.Context, contact: str | None, account: str | None,
                 deal: str | None, lead: str | None, only: str | None, limit: int,
                 offset: int, as_json: bool) -> None:
    """A CRM contact's, account's, deal's or lead's tickets, newest first (TICKET-01,
    TICKET-05)."""
    query = {"limit": str(limit), "offset": str(offset), **({"filter": only} if only else {})}
    path = _record_path(contacts=contact, accounts=account, deals=deal, leads=lead)
    data = request(client_of(ctx), "GET", f"{path}/tickets", query=query)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json
               else format_list(data))
