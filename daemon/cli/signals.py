"""``syncd signals``: the sales signals a CRM user gets (TICKET-09).

``syncd signals --as USER [--after N]`` prints the user's signals after sequence
number N (all of them by default), page after page; ``--follow`` keeps the stream open
and prints each new one as it comes (from now, or after N), reconnecting with
``Last-Event-ID`` after a drop, so none is lost or printed twice. ``--json``: one signal
object per line. The daemon filters by what the user may see and enabled
(``daemon.http.signals``).
"""

from __future__ import annotations

import json
from typing import Any

import click

from daemon.cli.admin import client_of, request
from daemon.cli.client import ApiError, Unreachable
from daemon.cli.people import as_option
from daemon.http import API_PREFIX

PAGE = 1000


def format_signal(signal: dict[str, Any]) -> str:
    subject = signal["subject"] or ""
    return (f"{signal['seq']:>6}  {signal['at']}  {signal['kind']:<16}  from a"
            f" {signal['origin']:<8}  ticket {signal['ticket_id']}"
            f" (department {signal['department_id'] or '-'})  {subject}")


def _echo(signal: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(signal, ensure_ascii=False) if as_json else format_signal(signal))


@click.command("signals")
@as_option
@click.option("--after", type=click.IntRange(min=0), default=None,
              help="Only signals after this sequence number (default: all; with --follow,"
                   " from now on).")
@click.option("--follow", is_flag=True, help="Keep following: print each new signal.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per signal and line.")
@click.pass_context
def signals(ctx: click.Context, acting_as: str | None, after: int | None, follow: bool,
            as_json: bool) -> None:
    """The sales signals the CRM user ``--as`` names gets (TICKET-09)."""
    client = client_of(ctx)
    if not follow:
        cursor = after or 0
        while True:
            page = request(client, "GET", "/signals",
                           query={"after": str(cursor), "limit": str(PAGE)},
                           acting_as=acting_as)
            for signal in page["signals"]:
                _echo(signal, as_json)
            cursor = page["cursor"]
            if not page["more"]:
                return
    headers = {} if acting_as is None else {"X-Syncd-Crm-User": acting_as}
    try:
        for event in client.follow(f"{API_PREFIX}/signals/stream",
                                   last_event_id=None if after is None else str(after),
                                   extra_headers=headers):
            data = json.loads(event.data)
            if event.event == "signal":
                _echo(data, as_json)
            elif event.event == "gone":
                click.echo(data.get("message", "the stream ended"), err=True)
    except ApiError as err:
        raise click.ClickException(f"{err.code}: {err.message}") from None
    except Unreachable as err:
        raise click.ClickException(str(err)) from None
