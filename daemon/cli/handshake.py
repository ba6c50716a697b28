"""``syncd handshake DEPARTMENT``: the handshake board in a terminal.

It talks to the running daemon's HTTP API (the address from
``<data dir>/runtime.json``, else the configured ``http_listen``; the bearer
token from ``SYNCD_API_TOKEN``, else ``<data dir>/api-token``, as the other
operator commands), so it shows exactly what a board in a browser shows.
``--watch`` follows the server-sent event stream and reconnects with
``Last-Event-ID`` after a dropped connection, so no move is printed twice or
skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import click

from daemon.runtime.runtime_file import read_runtime
from daemon.runtime.settings import Settings, SettingsError, load_settings
from daemon.runtime.tokens import token_path
from projections.handshake import COLUMN_TITLES as TITLES

API_PREFIX = "/api/v1/handshake"
RECONNECT_SECONDS = 1.0


class ApiError(Exception):
    """The daemon refused or could not be reached; the message says why."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """Incremental parser of a ``text/event-stream`` (the WHATWG rules we need:
    ``event``, ``data`` over several lines, ``id``; comments and ``retry`` ignored)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


def parse_sse(lines: Iterable[str]) -> list[SseEvent]:
    parser = SseParser()
    return [event for line in lines if (event := parser.feed(line)) is not None]


def base_url(settings: Settings) -> str:
    """Where the daemon answers: its runtime file, else the configured address."""
    info = read_runtime(settings.data_dir)
    address = info.http if info is not None else settings.http_listen
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if port == "0":
        raise ApiError("the daemon is not running (no runtime.json and http_listen port 0)")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def api_token(settings: Settings) -> str | None:
    """``SYNCD_API_TOKEN``, else the embedded default's local token file."""
    token = os.environ.get("SYNCD_API_TOKEN")
    if token:
        return token.strip()
    try:
        return token_path(settings.data_dir).read_text().strip() or None
    except OSError:
        return None


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


async def _error(response: aiohttp.ClientResponse) -> ApiError:
    try:
        body = await response.json(content_type=None)
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, aiohttp.ClientError):
        message = None
    return ApiError(f"{message or response.reason} (HTTP {response.status})")


async def fetch_board(session: aiohttp.ClientSession, url: str, department: str
                      ) -> dict[str, Any]:
    async with session.get(f"{url}{API_PREFIX}/{quote(department, safe='')}") as response:
        if response.status != 200:
            raise await _error(response)
        board: dict[str, Any] = await response.json()
        return board


async def follow(session: aiohttp.ClientSession, url: str, department: str
                 ) -> AsyncIterator[SseEvent]:
    """The board's events, forever, reconnecting after a drop where it left off."""
    last_id: str | None = None
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with session.get(f"{url}{API_PREFIX}/{quote(department, safe='')}/stream",
                                   headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
                                   ) as response:
                if response.status != 200:
                    raise await _error(response)
                parser = SseParser()
                async for raw in response.content:
                    event = parser.feed(raw.decode("utf-8", "replace"))
                    if event is None:
                        continue
                    if event.id is not None:
                        last_id = event.id
                    yield event
                    if event.event == "gone":
                        return
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError):
            if last_id is None:
                raise
        await asyncio.sleep(RECONNECT_SECONDS)


async def run_handshake(url: str, department: str, *, watch: bool, as_json: bool,
                        token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        if not watch:
            board = await fetch_board(session, url, department)
            click.echo(json.dumps(board, indent=2) if as_json else format_board(board))
            return
        async for event in follow(session, url, department):
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
        url = base_url(settings)
        asyncio.run(run_handshake(url, department, watch=watch, as_json=as_json,
                                  token=api_token(settings)))
    except ApiError as err:
        click.echo(f"syncd: {err}", err=True)
        ctx.exit(1)
    except aiohttp.ClientConnectionError as err:
        click.echo(f"syncd: no daemon answering ({err}); is `syncd run` running?", err=True)
        ctx.exit(1)
    except KeyboardInterrupt:
        ctx.exit(0)
