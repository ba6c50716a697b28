"""The HTTP listener: the admin API and the board (from the route table), health,
readiness, metrics.

``/healthz`` only proves the event loop answers; ``/readyz`` checks what the
daemon needs to do its job and names what is missing.

Every error it answers has the one shape of ``errors.py``, ``{"error": {"code",
"message"}}``: an ``ApiError`` a handler raises, a refused command or use case, the
framework's own (404 unknown path, 405 wrong method, 413 body over the size limit,
…) are all shaped by ``error_bodies``, and an unexpected exception is a 500
``internal_error`` whose traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from adapters import metrics
from daemon.http import openapi
from daemon.http.api import DOCUMENT, ApiContext
from daemon.http.auth import authenticate, by_role
from daemon.http.board import BoardContext
from daemon.http.console import console_routes
from daemon.http.errors import ApiError, error_body, from_http_exception, from_refusal
from daemon.http.routes import API_ROUTES, BOARD_ROUTES, Route, aiohttp_routes
from daemon.service import ServiceError
from projections.integration import InvalidCommand

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when fine, else a short reason."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_MAX_SIZE = 1 << 20
"""The largest request body aiohttp reads; a larger one is a 413 ``body_too_large``."""


@web.middleware
async def error_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every error answer the documented JSON shape (the outermost middleware)."""
    try:
        response = await handler(request)
    except web.HTTPException as err:
        if err.status < 400:  # a redirect or a success raised as an exception
            raise
        return from_http_exception(err)
    except ApiError as err:
        return err.response()
    except (InvalidCommand, ServiceError) as err:
        return from_refusal(err).response()
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        if request.writer.output_size > 0:  # a stream already under way: nothing to answer
            raise
        log.exception("http_request_failed", method=request.method, path=request.path)
        return error_body(500, "internal_error",
                          "internal error; the daemon's log has the details")
    if isinstance(response, web.HTTPException) and response.status >= 400:
        return from_http_exception(response)  # returned rather than raised (deprecated)
    return response


async def run_checks(checks: dict[str, ReadinessCheck]) -> dict[str, str]:
    """Run every readiness check; return the failing ones with their reasons."""
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(checks[n](), 5) for n in names), return_exceptions=True
    )
    failing: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            failing[name] = f"check failed: {type(result).__name__}"
        elif result is not None:
            failing[name] = result
    metrics.READY.set(0 if failing else 1)
    return failing


async def watch_readiness(checks: dict[str, ReadinessCheck], stop: asyncio.Event, *,
                          interval: float = 5.0) -> None:
    """Keep ``syncd_ready`` current even when nobody asks /readyz (systemd, not k8s)."""
    while not stop.is_set():
        await run_checks(checks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _end_signal_streams(api: ApiContext, _app: web.Application) -> None:
    if api.signal_streams is not None:
        api.signal_streams.stop()


async def _close_signal_streams(api: ApiContext, _app: web.Application) -> None:
    if api.signal_streams is not None:
        await api.signal_streams.close()


def build_app(checks: dict[str, ReadinessCheck], *, api: ApiContext | None = None,
              board: BoardContext | None = None, routes: Sequence[web.RouteDef] = (),
              middlewares: Sequence[Any] = (),
              not_applying: Callable[[], str | None] | None = None) -> web.Application:
    """The application: the admin API's routes (with ``api``: its bearer tokens are read
    on every ``/api/v1/`` path) and the board's (with ``board``), from the route table,
    and the OpenAPI document of those; ``routes`` and ``middlewares`` besides.

    ``not_applying`` says why changes are not applied (not set up, paused, ...):
    ``/readyz`` shows it as ``sync`` but stays ready, because the daemon is doing what
    it was told and its API must stay reachable to set up or resume (a pod that is
    not ready gets no traffic)."""
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        failing = await run_checks(checks)
        body: dict[str, Any] = ({"status": "not ready", "failing": failing} if failing
                                else {"status": "ready", "checks": list(checks)})
        note = not_applying() if not_applying is not None else None
        if note is not None:
            body["sync"] = note
        return web.json_response(body, status=503 if failing else 200)

    async def metrics_view(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # error_bodies first, so it is outermost: it also shapes the errors of the other
    # middlewares and of /healthz, /readyz and /metrics.
    chain = [error_bodies, *middlewares]
    if api is not None:
        chain.append(authenticate(api.tokens, api.token_profiles))
    app = web.Application(middlewares=chain, client_max_size=CLIENT_MAX_SIZE)
    app.router.add_routes(routes)
    served: list[Route[Any]] = []
    if api is not None:
        app.router.add_routes(aiohttp_routes(API_ROUTES, api, by_role, api.desk_profiles))
        served.extend(API_ROUTES)
        app.on_shutdown.append(functools.partial(_end_signal_streams, api))
        app.on_cleanup.append(functools.partial(_close_signal_streams, api))
    if board is not None:
        app.router.add_routes(aiohttp_routes(BOARD_ROUTES, board, board.authorize))
        served.extend(BOARD_ROUTES)
        app.on_shutdown.append(board.on_shutdown)  # ends open streams
        app.on_cleanup.append(board.on_cleanup)
    if api is not None:
        # The operator console at /: session cookies on the API's tokens and roles.
        app.router.add_routes(console_routes(api, board))
    app[DOCUMENT] = openapi.document(served)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; return the runner and the port actually bound."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound
