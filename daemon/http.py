"""The HTTP listener: health, readiness, metrics (and, later, the admin API).

``/healthz`` only proves the event loop answers; ``/readyz`` checks what the
daemon needs to do its job and names what is missing.

Every error it answers has the admin API's shape, ``{"error": {"code",
"message"}}``: the framework's own (404 unknown path, 405 wrong method, 413
body over the size limit, …) are rewritten by ``error_bodies``, and an
unexpected exception is a 500 ``internal_error`` whose traceback goes to the
log, never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from adapters import metrics

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when fine, else a short reason."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_MAX_SIZE = 1 << 20
"""The largest request body aiohttp reads; a larger one is a 413 ``body_too_large``."""

# Stable codes for the framework's own errors; any other status gets its reason
# phrase in snake case ("418 I'm a teapot" -> "im_a_teapot").
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "body_too_large", 500: "internal_error"}
# Headers of the framework's exception that describe its plain-text body.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def error_body(status: int, code: str, message: str, *,
               headers: dict[str, str] | None = None) -> web.Response:
    """The documented error shape: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


def _code_for(status: int, reason: str) -> str:
    if status in _CODES:
        return _CODES[status]
    words = "".join(ch if ch.isalnum() else " " for ch in reason.lower().replace("'", ""))
    return "_".join(words.split()) or f"http_{status}"


def _from_http_exception(err: web.HTTPException) -> web.Response:
    text = (err.text or "").strip()
    # aiohttp's default text is "<status>: <reason>"; keep a specific one as the message.
    message = err.reason if not text or text == f"{err.status}: {err.reason}" else text
    headers = {k: v for k, v in err.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_body(err.status, _code_for(err.status, err.reason), message, headers=headers)


@web.middleware
async def error_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every error answer the documented JSON shape (the outermost middleware)."""
    try:
        response = await handler(request)
    except web.HTTPException as err:
        if err.status < 400:  # a redirect or a success raised as an exception
            raise
        return _from_http_exception(err)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        if request.writer.output_size > 0:  # a stream already under way: nothing to answer
            raise
        log.exception("http_request_failed", method=request.method, path=request.path)
        return error_body(500, "internal_error",
                          "internal error; the daemon's log has the details")
    if isinstance(response, web.HTTPException) and response.status >= 400:
        return _from_http_exception(response)  # returned rather than raised (deprecated)
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


def build_app(checks: dict[str, ReadinessCheck], *, routes: Sequence[web.RouteDef] = (),
              middlewares: Sequence[Any] = ()) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        failing = await run_checks(checks)
        if failing:
            return web.json_response({"status": "not ready", "failing": failing}, status=503)
        return web.json_response({"status": "ready", "checks": list(checks)})

    async def metrics_view(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # error_bodies first, so it is outermost: it also shapes the errors of the other
    # middlewares, of sub-applications and of /healthz, /readyz and /metrics.
    app = web.Application(middlewares=[error_bodies, *middlewares],
                          client_max_size=CLIENT_MAX_SIZE)
    app.router.add_routes(routes)
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
