"""The HTTP listener: health, readiness, metrics (and, later, the admin API).

``/healthz`` only proves the event loop answers; ``/readyz`` checks what the
daemon needs to do its job and names what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from adapters import metrics

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when fine, else a short reason."""


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

    app = web.Application(middlewares=list(middlewares), client_max_size=1 << 20)
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
