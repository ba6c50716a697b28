"""``syncd handshake DEPARTMENT``: the handshake board in a terminal.

It talks to the running daemon's HTTP API through the CLI's one client
(``daemon.cli.client``: the address from ``<data dir>/runtime.json``, else the
configured ``http_listen``; the bearer token from ``SYNCD_API_TOKEN``, else
``<data dir>/api-token``), so it shows exactly what a board in a browser shows.
``--watch`` follows the server-sent event stream and reconnects with
``Last-Event-ID`` after a dropped connection, so no move is printed twice or
skipped.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import quote

import click

from daemon.cli.client import DaemonClient, Unreachable
from daemon.http import BOARD_PREFIX
from daemon.http.errors import ApiError
from daemon.runtime.settings import Settings, SettingsError, load_settings
from projections.handshake import COLUMN_TITLES as TITLES


def _local_time(stamp: str | None) -> str:
    if not stamp:
        return "--:--:--"
    try:
        return dt.datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return stamp


def _ticket_line(ticket: dict[str, Any]) -> str:
    parts = [f"#{ticket.get('id')}", str(ticket.get("subject") or "(no subject)")]
    who = ticket.get("requester_email") or ticket.get("requester_phone")
    if who:
        parts.append(str(who))
    if ticket.get("priority"):
        parts.append(str(ticket["priority"]))
    if ticket.get("due_date"):
        parts.append(f"due {str(ticket['due_date'])[:16]}")
    return "  ".join(parts)


def format_board(board: dict[str, Any]) -> str:
    department = board.get("department") or {}
    name = department.get("name")
    label = f"{name} (department {department.get('id')})" if name else \
        f"department {department.get('id')}"
    total = board.get("total", 0)
    lines = [f"{label}: {total} open ticket{'s' if total != 1 else ''}"]
    for column in board.get("columns", []):
        lines.append("")
        lines.append(f"{column['title']} ({column['count']})")
        for ticket in column["tickets"]:
            lines.append(f"  {_ticket_line(ticket)}")
        hidden = column["count"] - len(column["tickets"])
        if hidden > 0:
            lines.append(f"  … and {hidden} more")
    if not board.get("columns"):
        lines.append("(no open tickets)")
    return "\n".join(lines)


def format_move(move: dict[str, Any]) -> str:
    ticket = move.get("ticket") or {}
    label = f"#{ticket.get('id')} {ticket.get('subject') or '(no subject)'}"
    before = TITLES.get(move.get("from") or "", "")
    after = TITLES.get(move.get("to") or "", "")
    if move.get("kind") == "added":
        what = f"added to {after}"
    elif move.get("kind") == "removed":
        what = f"removed from {before}"
    else:
        what = f"{before} → {after}"
    return f"{_local_time(move.get('at'))}  {label}: {what}"


def fetch_board(client: DaemonClient, department: str) -> dict[str, Any]:
    board: dict[str, Any] = client.call("GET", f"{BOARD_PREFIX}/{quote(department, safe='')}")
    return board


def run_handshake(client: DaemonClient, department: str, *, watch: bool,
                  as_json: bool) -> None:
    if not watch:
        board = fetch_board(client, department)
        click.echo(json.dumps(board, indent=2) if as_json else format_board(board))
        return
    for event in client.follow(f"{BOARD_PREFIX}/{quote(department, safe='')}/stream"):
        data = json.loads(event.data)
        if as_json:
            click.echo(json.dumps({"event": event.event, "id": event.id, "data": data}))
        elif event.event == "board":
            click.echo(format_board(data))
            click.echo("")
        elif event.event == "move":
            click.echo(format_move(data))
        elif event.event == "gone":
            click.echo(data.get("message", "the board is gone"), err=True)


@click.command("handshake")
@click.argument("department")
@click.option("--watch", is_flag=True, help="Keep following the board: print each move.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (with --watch, one event object per line).")
@click.pass_context
def handshake(ctx: click.Context, department: str, watch: bool, as_json: bool) -> None:
    """Show a department's handshake board (DEPARTMENT: its id or name)."""
    settings = ctx.obj
    if not isinstance(settings, Settings):
        try:
            settings = load_settings()
        except SettingsError as err:
            click.echo(f"syncd: {err}", err=True)
            ctx.exit(2)
    try:
        run_handshake(DaemonClient.from_settings(settings), department, watch=watch,
                      as_json=as_json)
    except ApiError as err:
        click.echo(f"syncd: {err.message} (HTTP {err.status})", err=True)
        ctx.exit(1)
    except Unreachable as err:
        click.echo(f"syncd: {err}", err=True)
        ctx.exit(1)
    except KeyboardInterrupt:
        ctx.exit(0)
