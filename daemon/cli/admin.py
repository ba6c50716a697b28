"""Operator commands: they talk to the running daemon's admin API.

Through the CLI's one client (``daemon.cli.client``): the address from the running
daemon's ``runtime.json`` or ``SYNCD_HTTP_LISTEN``; the token from
``SYNCD_API_TOKEN``, or on the embedded default from ``<data dir>/api-token``.
Tables for people, ``--json`` for scripts, and a non-zero exit status when the
daemon refuses.
"""

from __future__ import annotations

import difflib
import json
import time
from typing import Any

import click
from tabulate import tabulate

from daemon.cli.client import DaemonClient, Unreachable
from daemon.http import API_PREFIX
from daemon.http.errors import ApiError
from daemon.runtime.settings import Settings
from projections.mapping import MappingError, build_mapping, resolve_field


def client_of(ctx: click.Context) -> DaemonClient:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    try:
        return DaemonClient.from_settings(settings)
    except Unreachable as err:
        raise click.ClickException(str(err)) from None


def request(client: DaemonClient, method: str, path: str, body: Any = None, *,
            query: dict[str, str] | None = None, acting_as: str | None = None) -> Any:
    """``client.call`` on an admin API path (under ``API_PREFIX``), a refusal or no
    daemon answering as the command's error. ``acting_as``: the CRM user the request
    acts for (``X-Syncd-Crm-User``)."""
    headers = None if acting_as is None else {"X-Syncd-Crm-User": acting_as}
    try:
        return client.call(method, API_PREFIX + path, body, query=query, headers=headers)
    except ApiError as err:
        raise click.ClickException(f"{err.code}: {err.message}") from None
    except Unreachable as err:
        raise click.ClickException(str(err)) from None


def _show(data: Any, as_json: bool, rows: list[dict[str, Any]] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif rows is not None:
        click.echo(tabulate(rows, headers="keys") if rows else "(none)")
    else:
        click.echo(tabulate(_flatten(data).items(), tablefmt="plain"))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and len(value) < 12:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) \
                else value
    return out


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Paused or running, consumer lag per partition, last applied event."""
    _show(request(client_of(ctx), "GET", "/status"), as_json)


def wait_for_state(client: DaemonClient, want: str, timeout: float, *,
                   interval: float = 0.1) -> bool:
    """Poll ``/api/v1/status`` until its ``state`` is ``want``; False on timeout.

    The state is the configuration the answering daemon's next batch reads: each
    replica polls the integration twice a second and swaps it in between batches.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = request(client, "GET", "/status")
        state = status["state"]
        if state == want:
            return True
        if state == "deleted":  # for good: waiting would not bring it
            raise click.ClickException(str(status.get("waiting_for") or state))
        if time.monotonic() >= deadline:
            if state in ("not_set_up", "sync_not_enabled"):
                # Not a slow daemon: the integration itself says what is missing.
                raise click.ClickException(str(status.get("waiting_for") or state))
            return False
        time.sleep(interval)


wait_options = [
    click.option("--timeout", type=click.FloatRange(0), default=10.0, show_default=True,
                 help="Seconds to wait for the daemon to apply the change."),
    click.option("--no-wait", is_flag=True,
                 help="Return once the change is recorded, before it is in effect."),
]


def _with_wait_options(command: Any) -> Any:
    for option in reversed(wait_options):
        command = option(command)
    return command


def _switch(ctx: click.Context, action: str, want: str, as_json: bool, timeout: float,
            no_wait: bool, effect: str) -> None:
    client = client_of(ctx)
    data = request(client, "POST", f"/integration/{action}")
    if no_wait:
        _show(data, as_json)
        if not as_json:
            click.echo(f"{action} recorded; in effect within about 1 s (the daemon's next"
                       " batch after its next poll of the integration)")
        return
    if not wait_for_state(client, want, timeout):
        raise click.ClickException(
            f"{action} is recorded, but the daemon at {client.base} has not applied it within"
            f" {timeout:g} s; `syncd status` shows its state")
    _show(data, as_json)
    if not as_json:
        click.echo(effect)


@click.command()
@_with_wait_options
@json_option
@click.pass_context
def pause(ctx: click.Context, as_json: bool, timeout: float, no_wait: bool) -> None:
    """Pause sync: capture goes on, nothing is written to either store (OPS-01).

    Returns once the daemon has the pause in effect: its next batch writes nothing.
    """
    _switch(ctx, "pause", "paused", as_json, timeout, no_wait,
            "paused: in effect; from the next batch on nothing is written to either store"
            " (changes are captured and kept for `syncd resume`)")


@click.command()
@_with_wait_options
@json_option
@click.pass_context
def resume(ctx: click.Context, as_json: bool, timeout: float, no_wait: bool) -> None:
    """Resume sync: what accumulated is applied in order, then live changes.

    Returns once the daemon has the resume in effect: its next batch applies again.
    """
    _switch(ctx, "resume", "running", as_json, timeout, no_wait,
            "running: in effect; what accumulated while paused is being applied, oldest"
            " first (`syncd status` shows deferred_while_paused going down)")


@click.command()
@click.option("--tz", default=None, help="Time zone for the days (default from settings).")
@json_option
@click.pass_context
def history(ctx: click.Context, tz: str | None, as_json: bool) -> None:
    """Seven-day sync history: added, updated and failed per day, direction and type."""
    data = request(client_of(ctx), "GET", "/history", query={"tz": tz} if tz else None)
    _show(data, as_json, rows=data["days"])


@click.command()
@click.option("--status", "state", type=click.Choice(["open", "resolved", "all"]),
              default="open")
@click.option("--reason", default=None)
@click.option("--module", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@click.pass_context
def failures(ctx: click.Context, state: str, reason: str | None, module: str | None,
             limit: int, offset: int, as_json: bool) -> None:
    """The failure log, newest first."""
    params = {"status": state, "limit": str(limit), "offset": str(offset)}
    if reason:
        params["reason"] = reason
    if module:
        params["module"] = module
    data = request(client_of(ctx), "GET", "/failures", query=params)
    rows = [{k: f[k] for k in ("id", "module", "source", "record_id", "reason", "attempts",
                                 "last_failed_at", "status")} for f in data["failures"]]
    _show(data, as_json, rows=rows)
    if not as_json:
        click.echo(f"{len(rows)} of {data['total']}")


@click.command()
@click.option("--id", "ids", type=int, multiple=True, help="A failure id (repeatable).")
@click.option("--reason", default=None, help="Every open failure of this reason.")
@click.option("--all", "everything", is_flag=True, help="Every open failure.")
@json_option
@click.pass_context
def retry(ctx: click.Context, ids: tuple[int, ...], reason: str | None, everything: bool,
          as_json: bool) -> None:
    """Re-apply failed events against the current state (OPS-04)."""
    if not (ids or reason or everything):
        raise click.UsageError("give --id, --reason or --all")
    body = {"ids": list(ids) or None, "reason": reason, "all": everything}
    _show(request(client_of(ctx), "POST", "/failures/retry", body), as_json)


@click.group()
def integration() -> None:
    """Show and change the integration (OPS-05); every change is audited."""


@integration.command("show")
@json_option
@click.pass_context
def integration_show(ctx: click.Context, as_json: bool) -> None:
    """The integration's configuration."""
    _show(request(client_of(ctx), "GET", "/integration"), as_json)


@integration.command("setup")
@click.argument("desk_portal")
@click.argument("crm_org")
@json_option
@click.pass_context
def integration_setup(ctx: click.Context, desk_portal: str, crm_org: str,
                      as_json: bool) -> None:
    """Link one desk portal with one CRM organisation (SYNC-13)."""
    body = {"desk_portal": desk_portal, "crm_org": crm_org}
    _show(request(client_of(ctx), "POST", "/integration", body), as_json)


@integration.command("sync-type")
@click.argument("sync_type", type=click.Choice(["two_way", "crm_to_desk"]))
@json_option
@click.pass_context
def integration_sync_type(ctx: click.Context, sync_type: str, as_json: bool) -> None:
    """Two-way, or one-way CRM → desk (SYNC-02)."""
    body = {"sync_type": sync_type}
    _show(request(client_of(ctx), "PUT", "/integration/sync-type", body), as_json)


@integration.command("switch-to-sync")
@json_option
@click.pass_context
def integration_switch(ctx: click.Context, as_json: bool) -> None:
    """Switch a legacy one-way import to sync; this cannot be undone (SYNC-03)."""
    _show(request(client_of(ctx), "POST", "/integration/switch-to-sync"), as_json)


@integration.command("mapping")
@click.argument("module", type=click.Choice(["contacts", "accounts", "products"]))
@click.argument("mapping_file", type=click.File("r"), required=False)
@json_option
@click.pass_context
def integration_mapping(ctx: click.Context, module: str, mapping_file: Any,
                        as_json: bool) -> None:
    """Set a module's field mapping from a JSON file of entries (none: the standard one).

    The file is a JSON array of entries, each {"desk": FIELD, "crm": FIELD}, with
    "desk_type"/"crm_type" for a custom.<key> field. It is checked before it is
    sent; an error names the file, the line and the field.
    """
    entries = (read_mapping_file(mapping_file.read(), module, name=mapping_file.name)
               if mapping_file is not None else None)
    body = {"entries": entries}
    _show(request(client_of(ctx), "PUT", f"/integration/mapping/{module}", body), as_json)


MAPPING_KEYS = ("desk", "crm", "desk_type", "crm_type")
_JSON = json.JSONDecoder()
_SPACE = " \t\n\r"


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def _array_items(text: str, at: int) -> list[int]:
    """Where each item of the (valid) JSON array starting at ``at`` starts."""
    starts: list[int] = []
    at = _skip(text, at + 1)
    while text[at] != "]":
        starts.append(at)
        _, at = _JSON.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return starts


def _object_keys(text: str, at: int) -> dict[str, int]:
    """Where each key of the (valid) JSON object starting at ``at`` starts."""
    keys: dict[str, int] = {}
    at = _skip(text, at + 1)
    while text[at] != "}":
        key, end = _JSON.raw_decode(text, at)
        keys.setdefault(key, at)
        at = _skip(text, _skip(text, end) + 1)  # past the colon
        _, at = _JSON.raw_decode(text, at)
        at = _skip(text, at)
        if text[at] == ",":
            at = _skip(text, at + 1)
    return keys


def read_mapping_file(text: str, module: str, *, name: str = "mapping file"
                      ) -> list[dict[str, Any]]:
    """Parse and check a mapping file; a ``click.ClickException`` names the line and field.

    The same checks as the daemon's (``projections.mapping.build_mapping``), made
    before anything is sent, so that a mistake is reported where it is in the file.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.ClickException(
            f"{name}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None

    def line(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    start = _skip(text, 0)
    if isinstance(data, dict) and set(data) == {"entries"}:
        _, end = _JSON.raw_decode(text, _object_keys(text, start)["entries"])
        start = _skip(text, _skip(text, end) + 1)  # past the colon
        data = data["entries"]
    if not isinstance(data, list):
        raise click.ClickException(
            f"{name}:{line(start)}: expected a JSON array of entries like"
            ' [{"desk": "email", "crm": "email"}]')
    starts = _array_items(text, start)
    for number, (entry, at) in enumerate(zip(data, starts, strict=True), start=1):
        where = f"{name}:{line(at)}: entry {number}"
        if not isinstance(entry, dict):
            raise click.ClickException(
                f'{where}: must be an object like {{"desk": "email", "crm": "email"}}')
        keys = _object_keys(text, at)
        for key in entry:
            if key not in MAPPING_KEYS:
                close = difflib.get_close_matches(key, MAPPING_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise click.ClickException(
                    f"{name}:{line(keys[key])}: entry {number}: unknown field {key!r}"
                    f" (the fields are {', '.join(MAPPING_KEYS)}){hint}")
        for side in ("desk", "crm"):
            try:
                resolve_field(side, module, entry.get(side),  # type: ignore[arg-type]
                              entry.get(f"{side}_type"))
            except MappingError as err:
                key = side if side in keys else None
                if key is not None and "need a type" in str(err):
                    key = f"{side}_type" if f"{side}_type" in keys else side
                at_line = line(keys[key]) if key is not None else line(at)
                raise click.ClickException(
                    f"{name}:{at_line}: entry {number}, field {key or side!r}: {err}") from None
        try:
            build_mapping(module, data[:number])
        except MappingError as err:
            raise click.ClickException(f"{where}: {err}") from None
    return data


@integration.command("matching")
@click.option("--secondary-email/--no-secondary-email", required=True)
@json_option
@click.pass_context
def integration_matching(ctx: click.Context, secondary_email: bool, as_json: bool) -> None:
    """Match contacts on the secondary e-mail too (SYNC-06)."""
    body = {"match_secondary_email": secondary_email}
    _show(request(client_of(ctx), "PUT", "/integration/matching", body), as_json)


@integration.command("products-department")
@click.argument("department_id", type=int)
@json_option
@click.pass_context
def integration_products(ctx: click.Context, department_id: int, as_json: bool) -> None:
    """The desk department products sync with (SYNC-12)."""
    body = {"department_id": department_id}
    _show(request(client_of(ctx), "PUT", "/integration/products-department", body), as_json)


@integration.command("related-lists")
@click.argument("modules", nargs=-1)
@json_option
@click.pass_context
def integration_related_lists(ctx: click.Context, modules: tuple[str, ...],
                              as_json: bool) -> None:
    """The CRM modules whose records list their desk tickets (TICKET-01): contacts,
    accounts, deals, leads; a module without an e-mail field is refused. None: no list."""
    body = {"modules": list(modules)}
    _show(request(client_of(ctx), "PUT", "/integration/related-lists", body), as_json)


@integration.command("delete")
@click.confirmation_option(prompt="Delete the integration? Sync stops for good.")
@json_option
@click.pass_context
def integration_delete(ctx: click.Context, as_json: bool) -> None:
    """Delete the integration: sync stops, the handshake board is gone (OPS-02)."""
    _show(request(client_of(ctx), "DELETE", "/integration"), as_json)


@integration.command("audit")
@json_option
@click.pass_context
def integration_audit(ctx: click.Context, as_json: bool) -> None:
    """Who changed what, and when."""
    data = request(client_of(ctx), "GET", "/integration/audit")
    rows = [{"when": e["when"], "who": e["who"], "what": e["what"],
             "details": json.dumps(e["details"], ensure_ascii=False)} for e in data]
    _show(data, as_json, rows=rows)


COMMANDS = [status, pause, resume, history, failures, retry, integration]


@integration.command("check")
@json_option
@click.pass_context
def integration_check(ctx: click.Context, as_json: bool) -> None:
    """Check the hosted stores the settings name, with their own credentials (not the
    daemon's API): what is wrong, and what to do. Exit status 1 when anything is."""
    import asyncio

    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    rows = asyncio.run(_hosted_checks(settings))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(tabulate([[r["store"], r["check"], "ok" if r["ok"] else "PROBLEM",
                              r["detail"]] for r in rows],
                            headers=["store", "check", "", "detail"]))
    if not all(r["ok"] for r in rows):
        ctx.exit(1)


async def _hosted_checks(settings: Settings) -> list[dict[str, Any]]:
    """Each side's checks: the hosted store's (``adapters/zoho/*_check.py``), or one
    row saying it is the embedded store."""
    from daemon.runtime.hosted import hosted_checks, hosted_sides

    rows: list[dict[str, Any]] = []
    hosted = hosted_sides(settings)
    for side in ("desk", "crm"):
        if side not in hosted:
            rows.append({"store": side, "check": "embedded", "ok": True, "detail":
                         f"the {side.upper() if side == 'crm' else side} is the embedded"
                         " store: nothing to check"})
            continue
        checks = await hosted_checks(settings, side)
        rows.extend({"store": side, "check": c.name, "ok": c.ok, "detail": c.detail}
                    for c in checks)
    return rows
