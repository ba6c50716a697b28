"""The console's pages and actions: each reads the session, checks the role the API
would ask for the same thing (a viewer sees, an operator acts; configuring the
integration: the API's PERM-04 check, ``auth.configure_refusal``), calls the use case
of ``daemon.service`` the API calls, and answers HTML.

Actions are plain form posts carrying the session's CSRF token, answered with a
redirect to the page they came from (post/redirect/get), so the console works
without script; ``console.js`` only adds the board's live updates and the refresh of
pages waiting for a result.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import structlog
from aiohttp import web

from daemon.http import board as board_http
from daemon.http.api import ApiContext
from daemon.http.auth import RANK, configure_refusal
from daemon.http.board import BoardContext
from daemon.http.console import charts
from daemon.http.console.headers import secured
from daemon.http.console.html import Markup, action, csrf_field, page, table, tag, void
from daemon.http.console.session import (
    LOGIN_COOKIE,
    Session,
    Sessions,
    csrf_ok,
    end,
)
from daemon.http.errors import ApiError
from daemon.runtime.settings import Role
from daemon.service import ServiceError, integration, replay_preview, ticket_list, ticket_stats
from daemon.service import board as board_service
from daemon.service import console as console_service
from daemon.service import failures as failure_log
from daemon.service import history as sync_history
from daemon.service import status as daemon_status
from projections.integration import InvalidCommand
from projections.related_lists import CHOOSABLE, DEFAULT_MODULES

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NOTICES = {
    "paused": "Sync is paused: changes are captured and applied on resume.",
    "resumed": "Sync resumed: what accumulated is being applied.",
    "closed": "The ticket was closed.",
    "replied": "The reply was sent.",
    "configured": "The integration's configuration was changed.",
    "logged_out": "You are logged out.",
}


class Forbidden(Exception):
    """A console request refused: its status and the reason shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def html_response(markup: Markup, *, status: int = 200) -> web.Response:
    return secured(web.Response(text=markup, status=status, content_type="text/html",
                                charset="utf-8"))


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


class Console:
    def __init__(self, api: ApiContext, board: BoardContext | None) -> None:
        self.api = api
        self.board = board
        self.sessions = Sessions(api.tokens, api.token_profiles)

    # -- sessions ---------------------------------------------------------------------

    def _session(self, request: web.Request, role: Role = "viewer") -> Session:
        session = self.sessions.read(request)
        if session is None:
            if request.method == "GET":
                raise redirect("/login")
            raise Forbidden(401, "Log in first: this needs a session.")
        if RANK[session.role] < RANK[role]:
            raise Forbidden(403, f"This needs the {role} role; you are a {session.role}.")
        return session

    async def _acting(self, request: web.Request, role: Role) -> tuple[Session, Any]:
        """A POST's session and form, after its CSRF token is checked."""
        form = await request.post()
        session = self.sessions.read(request)
        presented = form.get("csrf") or request.headers.get("X-CSRF-Token")
        if session is None or not csrf_ok(session.csrf, str(presented or "")):
            log.warning("console_csrf_refused", path=request.path)
            raise Forbidden(403, "Refused: the form's CSRF token is missing or wrong."
                                 " Reload the page and try again.")
        return self._session(request, role), form

    def refused(self, request: web.Request, err: Forbidden) -> web.Response:
        session = self.sessions.read(request)
        body = tag("p", tag("a", "Back to the console", href="/") if session else
                   tag("a", "Log in", href="/login"))
        return html_response(page("Not allowed", body, session=session, error=err.message),
                             status=err.status)

    def wrap(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Forbidden as err:
                return self.refused(request, err)

        handle.__name__ = handler.__name__
        return handle

    async def login_form(self, request: web.Request, *, error: str | None = None,
                         status: int = 200) -> web.Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        notice = NOTICES.get(request.query.get("done", ""))
        form = tag(
            "form",
            void("input", type="hidden", name="csrf", value=nonce),
            tag("label", "API token", for_="token"),
            void("input", id="token", name="token", type="password", required=True,
                 autocomplete="current-password", autofocus=True),
            tag("p", "A viewer token reads; an operator token also pauses, resumes,"
                     " retries and acts on tickets; an admin token does everything.",
                class_="hint"),
            tag("button", "Log in", type="submit"),
            method="post", action="/login", class_="login")
        response = html_response(page("Log in", form, session=None, notice=notice,
                                      error=error), status=status)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="Strict",
                            secure=request.secure, path="/login")
        return response

    async def login_page(self, request: web.Request) -> web.Response:
        if self.sessions.read(request) is not None:
            raise redirect("/")
        return await self.login_form(request)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), str(form.get("csrf") or "")):
            raise Forbidden(403, "Refused: the login form's CSRF token is missing or wrong.")
        holder = self.sessions.holder(str(form.get("token") or ""))
        if holder is None:
            log.warning("console_login_refused")
            return await self.login_form(request, error="That token is not valid.",
                                         status=401)
        response = redirect("/")
        self.sessions.issue(response, request, holder[0])
        response.del_cookie(LOGIN_COOKIE, path="/login")
        log.info("console_login", who=holder[0], role=holder[1])
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        session, _ = await self._acting(request, "viewer")
        response = redirect("/login?done=logged_out")
        end(response)
        log.info("console_logout", who=session.name)
        raise response

    # -- status (OPS-01, OPS-05) -------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        session = self._session(request)
        api = self.api
        now = await daemon_status.status(
            api.pool, config=api.config(), lag=api.lag(),
            last_applied_at=api.last_applied_at(), config_position=api.integration.followed,
            remote_stores=api.remote_stores())
        current = await api.integration.current()
        paused = current is not None and current.paused
        state = ("not set up" if current is None else "deleted" if current.deleted
                 else "paused" if paused else "running")
        lag = now["consumer_lag"]
        facts = [
            ("State", tag("strong", state, id="sync-state", class_=f"state-{state[:7]}")),
            ("Applying", now["waiting_for"] or "yes"),
            ("Consumer lag", f"{sum(lag.values())} event(s)" + (
                " (" + ", ".join(f"partition {p}: {n}" for p, n in lag.items()) + ")"
                if lag else "")),
            ("Outbox backlog", ", ".join(f"{side}: {n}"
                                         for side, n in now["outbox_backlog"].items())),
            ("Held while paused", now["deferred_while_paused"]),
            ("Last applied event", _when(now["last_applied_at"]) or "none yet"),
        ]
        facts.extend((f"Remote {side} store", state_) for side, state_
                     in now["remote_stores"].items())
        parts: list[Any] = [tag("section", tag("h2", "Sync", id="sync-h"),
                                _facts(facts), aria_labelledby="sync-h")]
        if current is not None and not current.deleted and RANK[session.role] >= 1:
            button = (action("/status/resume", "Resume sync", session) if paused
                      else action("/status/pause", "Pause sync", session))
            parts.append(tag("div", button, class_="actions"))
        progress = await console_service.first_sync(api.pool)
        parts.append(tag("section", tag("h2", "First sync", id="first-h"), table(
            "Progress of the first sync, per source and module",
            ["Source", "Module", "Captured", "Total", "Done"],
            [[p["source"], p["module"], p["captured"], p["total"],
              "finished" if p["finished"] else _percent(p["captured"], p["total"])]
             for p in progress], empty="No first sync has run."),
            aria_labelledby="first-h"))
        try:
            trail = await integration.audit(api.integration)
        except (ServiceError, InvalidCommand):
            trail = []
        parts.append(tag("section", tag("h2", "Audit trail", id="audit-h"), table(
            "Who changed the integration, what, when (newest first)",
            ["When", "Who", "What", "Details"],
            [[_when(e["when"]), e["who"], e["what"], _details(e["details"])]
             for e in reversed(trail)], empty="The integration has no history yet."),
            aria_labelledby="audit-h"))
        body = tag("div", *parts, id="live-status", data_poll="5")
        return html_response(page("Status", body, session=session, current="/",
                                  notice=NOTICES.get(request.query.get("done", ""))))

    async def pause(self, request: web.Request) -> web.Response:
        session, _ = await self._acting(request, "operator")
        return await self._command(integration.pause, session, "paused")

    async def resume(self, request: web.Request) -> web.Response:
        session, _ = await self._acting(request, "operator")
        return await self._command(integration.resume, session, "resumed")

    async def _command(self, command: Callable[..., Awaitable[None]], session: Session,
                       done: str) -> web.Response:
        try:
            await command(self.api.integration, by=session.name)
        except (ServiceError, InvalidCommand) as err:
            raise Forbidden(409, str(err)) from None
        raise redirect(f"/?done={done}")

    # -- the handshake board (HS-04 … HS-07) --------------------------------------------

    def _board_context(self) -> BoardContext:
        if self.board is None:
            raise Forbidden(404, "The handshake board is not served by this daemon.")
        try:
            self.board.admit()
        except ApiError as err:  # a deleted integration (404), the free edition (403)
            raise Forbidden(err.status, err.message) from None
        return self.board

    async def board_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        ctx = self._board_context()
        departments = await console_service.departments(self.api.pool)
        chosen = request.query.get("department") or (
            departments[0]["id"] if departments else "")
        picker = tag(
            "form",
            tag("label", "Department", for_="department"),
            tag("select", *(tag("option", d["name"] or d["id"], value=d["id"],
                                selected=d["id"] == chosen) for d in departments),
                id="department", name="department"),
            tag("button", "Show", type="submit"),
            method="get", action="/board", class_="filters")
        if not departments:
            return html_response(page("Handshake board", tag(
                "p", "No department has tickets yet.", class_="empty"), session=session,
                current="/board"))
        columns, department = await self._columns(ctx, chosen, session)
        body = tag("div", picker, tag(
            "div", columns, id="board", aria_live="polite",
            data_stream=f"/board/{department}/stream",
            data_fragment=f"/board/fragment?{urlencode({'department': department})}"))
        return html_response(page("Handshake board", body, session=session,
                                  current="/board",
                                  notice=NOTICES.get(request.query.get("done", ""))))

    async def board_fragment(self, request: web.Request) -> web.Response:
        """The columns alone, for the live page to swap in after a move."""
        session = self._session(request)
        ctx = self._board_context()
        columns, _ = await self._columns(ctx, request.query.get("department", ""), session)
        return html_response(columns)

    async def _columns(self, ctx: BoardContext, ref: str, session: Session
                       ) -> tuple[Markup, str]:
        """The board's columns, and the department's id (``ref`` may be its name)."""
        try:
            async with ctx.pool.acquire() as conn:
                department = await board_service.resolve_department(conn, ref)
                board = await board_service.read_board(conn, department,
                                                       limit=board_http.DEFAULT_LIMIT)
        except ServiceError as err:
            raise Forbidden(err.status, err.message) from None
        if not board["columns"]:
            return tag("p", "No open tickets in this department.", class_="empty"), department.id
        act = RANK[session.role] >= 1
        now = dt.datetime.now(dt.UTC)
        sections = [tag(
            "section",
            tag("h2", f"{c['title']} ", tag("span", f"({c['count']})", class_="count"),
                id=f"col-{c['column']}"),
            tag("ul", *(_card(t, department.id, session, act=act, now=now)
                        for t in c["tickets"])),
            class_="column", data_column=c["column"],
            aria_labelledby=f"col-{c['column']}")
            for c in board["columns"]]
        return tag("div", *sections, class_="columns"), department.id

    async def board_stream(self, request: web.Request) -> web.StreamResponse:
        self._session(request)
        ctx = self._board_context()
        try:
            return await board_http.stream(ctx, request, None)
        except ServiceError as err:
            raise Forbidden(err.status, err.message) from None

    async def close_ticket(self, request: web.Request) -> web.Response:
        await self._acting(request, "operator")
        ctx = self._board_context()
        department, ticket = await self._ticket(ctx, request)
        try:
            await board_service.close_ticket(ctx.tickets, department, ticket)
        except ServiceError as err:
            raise Forbidden(err.status, err.message) from None
        raise redirect(f"/board?{urlencode({'department': department.id, 'done': 'closed'})}")

    async def reply_ticket(self, request: web.Request) -> web.Response:
        session, form = await self._acting(request, "operator")
        ctx = self._board_context()
        department, ticket = await self._ticket(ctx, request)
        body = {"content": str(form.get("content") or "")}
        problem = board_http.reply_problem(body)
        if problem is not None:
            raise Forbidden(400, f"The reply was not sent: {problem}.")
        try:
            await board_service.reply(ctx.tickets, department, ticket,
                                      content=body["content"], author=session.name)
        except ServiceError as err:
            raise Forbidden(err.status, err.message) from None
        raise redirect(f"/board?{urlencode({'department': department.id, 'done': 'replied'})}")

    async def _ticket(self, ctx: BoardContext, request: web.Request
                      ) -> tuple[board_service.Department, int]:
        try:
            department = await ctx.department(request)
            return department, board_service.ticket_id(department,
                                                       request.match_info["ticket"])
        except ServiceError as err:
            raise Forbidden(err.status, err.message) from None

    # -- failures (OPS-04) --------------------------------------------------------------

    async def failures_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        query = request.query
        states: dict[str, failure_log.State] = {
            "open": "open", "resolved": "resolved", "all": "all"}
        state = states.get(query.get("status", "open"), "open")
        reason = query.get("reason") or None
        module = query.get("module") or None
        everything = await failure_log.list_failures(self.api.pool, state="all", reason=None,
                                                     module=None, limit=500, offset=0)
        reasons = sorted({f["reason"] for f in everything["failures"]})
        modules = sorted({f["module"] for f in everything["failures"]})
        listed = await failure_log.list_failures(self.api.pool, state=state, reason=reason,
                                                 module=module, limit=200, offset=0)
        filters = tag(
            "form",
            _select("status", "Status", [("open", "open"), ("resolved", "resolved"),
                                         ("all", "all")], state),
            _select("reason", "Reason", [("", "any reason"), *((r, r) for r in reasons)],
                    reason or ""),
            _select("module", "Record type", [("", "any type"), *((m, m) for m in modules)],
                    module or ""),
            tag("button", "Filter", type="submit"),
            method="get", action="/failures", class_="filters")
        act = RANK[session.role] >= 1
        rows = []
        for f in listed["failures"]:
            row: list[Any] = []
            if act:
                row.append(void("input", type="checkbox", name="ids", value=f["id"],
                                form="retry-form", disabled=f["status"] != "open",
                                aria_label=f"Select failure {f['id']}"))
            row += [f"{f['module']} {f['record_id']}", f["source"],
                    _when(f["last_failed_at"]), tag("span", f["reason"], class_="reason"),
                    f["detail"] or "", f["attempts"],
                    tag("span", f["status"], class_=f"status-{f['status']}")]
            if act:
                row.append(tag("button", "Retry", type="submit", name="one", value=f["id"],
                               form="retry-form", disabled=f["status"] != "open",
                               aria_label=f"Retry failure {f['id']}"))
            rows.append(row)
        headings = ["Record", "Source", "Last failed", "Reason", "Detail", "Attempts",
                    "Status"]
        if act:
            headings = ["Select", *headings, "Action"]
        parts: list[Any] = [filters, tag("p", f"{listed['total']} failure(s) match.",
                                         class_="count")]
        if act:
            parts.append(tag("form", void("input", type="hidden", name="csrf",
                                          value=session.csrf),
                             tag("button", "Retry selected", type="submit", name="selected",
                                 value="1"),
                             method="post", action="/failures/retry", id="retry-form",
                             class_="actions"))
        parts.append(table("The failure log, newest first", headings, rows,
                           empty="No failures match."))
        if act and reasons:
            parts.append(tag("section", tag("h2", "Retry by reason", id="by-reason-h"),
                             tag("div", *(action("/failures/retry", f"Retry every open: {r}",
                                                 session, fields={"reason": r})
                                          for r in reasons), class_="actions"),
                             aria_labelledby="by-reason-h"))
        notice = None
        if "retried" in query:
            notice = (f"Retry sent: {_int(query.get('retried'))} of"
                      f" {_int(query.get('selected'))} selected failure(s) re-applied"
                      f" ({_int(query.get('skipped'))} not retryable). The log below"
                      " updates as they are applied.")
        body = tag("div", *parts, id="live-failures",
                   data_poll="2" if "retried" in query else None)
        return html_response(page("Failures", body, session=session, current="/failures",
                                  notice=notice))

    async def retry(self, request: web.Request) -> web.Response:
        session, form = await self._acting(request, "operator")
        ids: list[int] = []
        reason: str | None = None
        if form.get("one"):
            ids = [_int(form.get("one"))]
        elif form.get("reason"):
            reason = str(form.get("reason"))
        else:
            ids = [_int(v) for v in form.getall("ids", [])]
        if not ids and reason is None:
            raise Forbidden(400, "Nothing selected to retry.")
        result = await failure_log.retry_failures(self.api.pool, ids=ids or None,
                                                  reason=reason, everything=False)
        log.info("failures_retried", by=session.name, **result)
        raise redirect("/failures?" + urlencode({
            "status": "all", "retried": result["retried"], "selected": result["selected"],
            "skipped": result["not_retryable"]}))

    # -- history (OPS-03) ---------------------------------------------------------------

    async def history_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        zone = request.query.get("tz") or self.api.history_timezone
        error = None
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            error = f"Unknown time zone {zone!r}; showing {self.api.history_timezone}."
            zone = self.api.history_timezone
        days = await sync_history.seven_days(self.api.pool, zone)
        picker = tag(
            "form",
            tag("label", "Time zone", for_="tz"),
            void("input", id="tz", name="tz", value=zone, list="zones", autocomplete="off"),
            tag("datalist", *(void("option", value=z) for z in sorted(available_timezones())),
                id="zones"),
            tag("button", "Show", type="submit"),
            method="get", action="/history", class_="filters")
        body = tag("div", picker, charts.history(days), tag("h2", "Table", id="table-h"),
                   table(f"Sync history per day ({zone}), newest first",
                         ["Day", "Direction", "Record type", "Added", "Updated", "Failed"],
                         [[d["day"], _direction(d["direction"]), d["module"], d["added"],
                           d["updated"], d["failed"]] for d in days],
                         empty="No sync in the last seven days."))
        return html_response(page("Sync history, last seven days", body, session=session,
                                  current="/history", error=error))

    # -- the integration's configuration (OPS-05, PERM-04) ------------------------------

    async def _configure_refusal(self, session: Session) -> str | None:
        """PERM-04 as the API's ``configure`` routes apply it (``auth.configure_refusal``)."""
        return await configure_refusal(session.role, session.profile, self.api.desk_profiles)

    async def integration_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        try:
            now = await integration.state(self.api.integration)
        except ServiceError as err:
            return html_response(page("Integration", tag("p", err.message, class_="empty"),
                                      session=session, current="/integration"))
        facts = [("Desk portal", now["desk_portal"]), ("CRM organisation", now["crm_org"]),
                 ("Mode", now["mode"]), ("Sync type", _SYNC_TYPES.get(now["sync_type"],
                                                                      "not chosen")),
                 ("Match on the secondary e-mail", "yes" if now["match_secondary_email"]
                  else "no"),
                 ("Products department", now["products_department_id"] or "none"),
                 ("Related lists of tickets", ", ".join(now["related_list_modules"])),
                 ("Field mappings", ", ".join(f"{m}: {len(p)} field(s)"
                                              for m, p in now["mappings"].items()))]
        parts: list[Any] = [_facts(facts)]
        refusal = await self._configure_refusal(session)
        if now["deleted"]:
            parts.append(tag("p", "The integration is deleted.", class_="hint"))
        elif refusal is not None:
            parts.append(tag("p", f"Changing it: {refusal}.", class_="hint"))
        else:
            parts.append(_configuring(now, session))
        return html_response(page("Integration", tag("div", *parts), session=session,
                                  current="/integration",
                                  notice=NOTICES.get(request.query.get("done", ""))))

    async def configure(self, request: web.Request) -> web.Response:
        """One configuring form's post: the API's ``configure`` rule, then its command."""
        session, form = await self._acting(request, "operator")
        refusal = await self._configure_refusal(session)
        if refusal is not None:
            log.warning("console_configure_refused", by=session.name, reason=refusal)
            raise Forbidden(403, f"Refused: {refusal}.")
        service = self.api.integration
        setting = request.match_info["setting"]
        try:
            if setting == "sync-type":
                await integration.choose_sync_type(
                    service, str(form.get("sync_type") or ""),  # type: ignore[arg-type]
                    by=session.name)
            elif setting == "matching":
                await integration.change_matching_options(
                    service, form.get("match_secondary_email") == "on", by=session.name)
            elif setting == "products-department":
                text = str(form.get("department_id") or "").strip()
                await integration.choose_products_department(
                    service, int(text) if text.isdigit() else text,  # type: ignore[arg-type]
                    by=session.name)
            elif setting == "related-lists":
                await integration.choose_related_list_modules(
                    service, [str(m) for m in form.getall("modules", [])], by=session.name)
            else:
                raise Forbidden(404, f"The console changes no setting {setting[:100]!r}.")
        except (ServiceError, InvalidCommand) as err:
            raise Forbidden(409, f"Not changed: {err}") from None
        raise redirect("/integration?done=configured")

    # -- tickets (TICKET-01, -06, -07) --------------------------------------------------

    async def tickets_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        current = await self.api.integration.current()
        modules = list(current.related_list_modules if current is not None
                       else DEFAULT_MODULES)
        query = request.query
        module = query.get("module") or (modules[0] if modules else "")
        record = (query.get("record") or "").strip()[:200]
        only = query.get("filter") or None
        if only not in ticket_list.FILTERS:
            only = None
        form = tag(
            "form",
            _select("module", "CRM module", [(m, m) for m in modules], module),
            tag("label", "CRM record id", for_="record"),
            void("input", id="record", name="record", value=record, required=True),
            _select("filter", "Show", [("", "all tickets"),
                                       *((f, f.replace("_", " ")) for f in ticket_list.FILTERS)],
                    only or ""),
            tag("button", "Show", type="submit"),
            method="get", action="/tickets", class_="filters")
        parts: list[Any] = [form]
        error = None
        if record:
            try:
                listed_module = ticket_list.listed_module(module, modules)
                stats_module = ticket_stats.module_of(module)
                if stats_module is not None:
                    stats = await ticket_stats.statistics(self.api.pool, stats_module, record)
                    parts.append(tag("section", tag("h2", "Customer statistics", id="st-h"),
                                     _facts(_stats(stats)), aria_labelledby="st-h"))
                page_ = await ticket_list.related_tickets(self.api.pool, listed_module, record,
                                                          only=only, limit=100, offset=0)
                parts.append(tag("section", tag("h2", "Tickets", id="tk-h"), table(
                    "The record's tickets, newest first",
                    ["Ticket", "Subject", "Status", "Priority", "Due", "Created"],
                    [[t["ticket_id"], t["subject"], t["status"], t["priority"],
                      tag("span", _when(t["due_date"]),
                          " (overdue)" if t["overdue"] else ""),
                      _when(t["created_at"])] for t in page_["tickets"]],
                    empty="No tickets match."), aria_labelledby="tk-h"))
            except ServiceError as err:
                error = err.message
        return html_response(page("Tickets of a CRM record", tag("div", *parts),
                                  session=session, current="/tickets", error=error))

    # -- replay preview (OPS-07) ----------------------------------------------------------

    async def replay_page(self, request: web.Request) -> web.Response:
        session = self._session(request)
        return html_response(page("Replay preview", self._replay_form(session, {}),
                                  session=session, current="/replay"))

    def _replay_form(self, session: Session, chosen: dict[str, Any]) -> Markup:
        intro = tag("p", "A dry run: it reads the event log and shows what a replay would"
                         " add, change and remove per table. Nothing is written; apply it"
                         " with ", tag("code", "syncd replay"), " (docs/replay.md) once"
                         " the preview is read.")
        if RANK[session.role] < RANK["admin"]:
            return tag("div", intro, tag("p", "Running a preview needs the admin role.",
                                         class_="hint"))
        names = ["all", *replay_preview.projection_names()]
        picked = chosen.get("projection", [])
        rebuild = tag(
            "fieldset",
            tag("legend", "Rebuild projections from the event log"),
            *(tag("label", void("input", type="checkbox", name="projection", value=n,
                                checked=n in picked), f" {n}", class_="check")
              for n in names),
            tag("button", "Preview the rebuild", type="submit", name="kind",
                value="rebuild"))
        window = tag(
            "fieldset",
            tag("legend", "Re-apply a window of events to the stores"),
            tag("label", "Since (a time with a zone, or a span ago: 6h, 2d)", for_="since"),
            void("input", id="since", name="since", value=chosen.get("since", "")),
            tag("label", "Until (optional)", for_="until"),
            void("input", id="until", name="until", value=chosen.get("until", "")),
            _select("source", "Source", [("", "both"), ("desk", "desk"), ("crm", "CRM")],
                    chosen.get("source", "")),
            tag("button", "Preview the re-apply", type="submit", name="kind",
                value="window"))
        form = tag("form", void("input", type="hidden", name="csrf", value=session.csrf),
                   rebuild, window, method="post", action="/replay/preview",
                   class_="replay")
        return tag("div", intro, form)

    async def replay_preview(self, request: web.Request) -> web.Response:
        session, form = await self._acting(request, "admin")
        chosen: dict[str, Any] = {
            "projection": [str(v) for v in form.getall("projection", [])],
            "since": str(form.get("since") or "").strip(),
            "until": str(form.get("until") or "").strip(),
            "source": str(form.get("source") or "")}
        error = None
        reports: list[dict[str, Any]] = []
        try:
            if form.get("kind") == "window":
                since = _moment(chosen["since"], "since")
                if since is None:
                    raise ServiceError("invalid_parameter", "give the window's start")
                reports = await replay_preview.preview(
                    self.api.pool, since=since, until=_moment(chosen["until"], "until"),
                    source=chosen["source"] or None, config=self.api.config)
            else:
                if not chosen["projection"]:
                    raise ServiceError("invalid_parameter", "pick at least one projection")
                reports = await replay_preview.preview(
                    self.api.pool, projections=chosen["projection"], config=self.api.config)
        except ServiceError as err:
            error = err.message
        log.info("console_replay_preview", by=session.name, error=error,
                 changes=sum(r["changes"] for r in reports))
        body = tag("div", *(_report(r) for r in reports),
                   self._replay_form(session, chosen), id="replay")
        return html_response(page("Replay preview", body, session=session, current="/replay",
                                  error=error), status=200 if error is None else 400)

    async def index(self, request: web.Request) -> web.Response:
        return await self.status(request)


_SYNC_TYPES = {"two_way": "two-way", "crm_to_desk": "one-way, CRM → desk"}


def _configuring(now: dict[str, Any], session: Session) -> Markup:
    """The configuring forms (PERM-04: shown only to who may configure)."""
    def form(setting: str, legend: str, *controls: Any) -> Markup:
        return tag("form", csrf_field(session), tag("fieldset", tag("legend", legend),
                                                    *controls,
                                                    tag("button", "Save", type="submit")),
                   method="post", action=f"/integration/{setting}", class_="configure")

    return tag(
        "section", tag("h2", "Configure", id="configure-h"),
        form("sync-type", "Sync type",
             _select("sync_type", "Sync type", list(_SYNC_TYPES.items()),
                     now["sync_type"] or "")),
        form("matching", "Matching",
             tag("label", void("input", type="checkbox", name="match_secondary_email",
                                checked=now["match_secondary_email"]),
                 " Also match contacts on the secondary e-mail", class_="check")),
        form("products-department", "Products",
             tag("label", "Desk department id for products", for_="department_id"),
             void("input", id="department_id", name="department_id", inputmode="numeric",
                  value=now["products_department_id"] or "")),
        form("related-lists", "Related lists of tickets",
             *(tag("label", void("input", type="checkbox", name="modules", value=m,
                                 checked=m in now["related_list_modules"]), f" {m}",
                   class_="check") for m in CHOOSABLE)),
        tag("p", "Field mappings are changed with ", tag("code", "syncd integration mapping"),
            " or the API.", class_="hint"),
        aria_labelledby="configure-h")


def _report(report: dict[str, Any]) -> Markup:
    """One dry run's diff: per table, rows added, changed and removed, with samples."""
    changed = [t for t in report["tables"] if t["added"] or t["changed"] or t["removed"]]
    verdict = (f"{report['changes']} row(s) would change." if changed
               else "Nothing would change.")
    parts: list[Any] = [
        tag("h2", report["what"]),
        tag("p", f"{report['events']} {report['unit']} read from the {report['source']}"
                 f" (dry run: nothing was written). ", tag("strong", verdict),
            class_="verdict"),
        table(f"What the replay would do, per table: {report['what']}",
              ["Table", "Added", "Changed", "Removed"],
              [[t["table"], t["added"], t["changed"], t["removed"]]
               for t in report["tables"]], empty="No table is involved.")]
    for t in changed:
        parts.append(tag("h3", f"Samples of {t['table']}"))
        parts.append(tag("ul", *(tag("li", tag("code", _sample(s))) for s in t["samples"]),
                         class_="samples"))
    parts.extend(tag("p", f"Note: {note}", class_="hint") for note in report["notes"])
    return tag("section", *parts, class_="report")


def _sample(sample: dict[str, Any]) -> str:
    if sample.get("change") == "changed":
        key = " ".join(f"{k}={v}" for k, v in sample.get("key", {}).items())
        columns = "; ".join(f"{name}: {_short(c.get('from'))} → {_short(c.get('to'))}"
                            for name, c in sample.get("columns", {}).items())
        return f"changed {key}: {columns}"
    return f"{sample.get('change')}: {_short(sample.get('row'), 200)}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _moment(text: str, name: str) -> dt.datetime | None:
    """A time with a zone, or a span ago (``6h``); empty is None."""
    if not text:
        return None
    span = _SPAN.match(text)
    if span:
        return dt.datetime.now(dt.UTC) - dt.timedelta(**{_UNITS[span[2]]: int(span[1])})
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ServiceError("invalid_parameter",
                           f"{name}: {text!r} is neither a time nor a span like 6h") from None
    if moment.tzinfo is None:
        raise ServiceError("invalid_parameter", f"{name}: {text!r} has no time zone")
    return moment


def _card(ticket: dict[str, Any], department: str, session: Session, *, act: bool,
          now: dt.datetime) -> Markup:
    tid = str(ticket.get("id"))
    facts = tag("dl",
                tag("dt", "Requester"), tag("dd", ticket.get("requester_email")
                                             or ticket.get("requester_phone") or "unknown"),
                tag("dt", "Age"), tag("dd", _age(ticket.get("created_time"), now)),
                tag("dt", "Priority"), tag("dd", ticket.get("priority") or "none"))
    parts: list[Any] = [tag("h3", ticket.get("subject") or f"Ticket {tid}", id=f"t-{tid}"),
                        facts]
    if act:
        base = f"/board/{department}/tickets/{tid}"
        parts.append(tag("form",
                         void("input", type="hidden", name="csrf", value=session.csrf),
                         tag("label", "Reply", for_=f"reply-{tid}"),
                         tag("textarea", id=f"reply-{tid}", name="content", rows="2",
                             required=True),
                         tag("button", "Send reply", type="submit"),
                         method="post", action=f"{base}/reply", class_="reply"))
        parts.append(action(f"{base}/close", "Close ticket", session))
    return tag("li", tag("article", *parts, aria_labelledby=f"t-{tid}"), class_="card",
               data_ticket=tid)


def _age(created: Any, now: dt.datetime) -> str:
    if not created:
        return "unknown"
    try:
        when = dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return "just now"


def _facts(facts: list[tuple[str, Any]]) -> Markup:
    return tag("dl", *(tag("div", tag("dt", k), tag("dd", v)) for k, v in facts),
               class_="facts")


def _select(name: str, label: str, options: list[tuple[str, str]], chosen: str) -> Markup:
    return Markup(tag("label", label, for_=name) + tag(
        "select", *(tag("option", text, value=value, selected=value == chosen)
                    for value, text in options), id=name, name=name))


def _when(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        return _when(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def _details(details: Any) -> str:
    if isinstance(details, dict):
        return "; ".join(f"{k}: {v}" for k, v in details.items())
    return "" if details is None else str(details)


def _percent(done: int, total: int) -> str:
    return f"{100 * done // total}%" if total else "0%"


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _direction(direction: str) -> str:
    return {"desk_to_crm": "desk → CRM", "crm_to_desk": "CRM → desk"}.get(direction, direction)


def _stats(stats: dict[str, Any]) -> list[tuple[str, Any]]:
    def hours(seconds: Any) -> str:
        return "none" if seconds is None else f"{float(seconds) / 3600:.1f} h"

    ratings = ", ".join(f"{name}: {n}" for name, n in stats["ratings"].items())
    return [("Total tickets", stats["total_tickets"]), ("Open", stats["open_tickets"]),
            ("Overdue", stats["overdue_tickets"]),
            ("Average first response", hours(stats["average_first_response_seconds"])),
            ("Average resolution", hours(stats["average_resolution_seconds"])),
            ("Ratings", ratings)]
