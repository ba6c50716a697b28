"""The console's security headers: a strict Content-Security-Policy (scripts and
styles from the daemon only, nothing inline, no framing), no sniffing, no referrer."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
       " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

R = TypeVar("R", bound=web.StreamResponse)


def secured(response: R) -> R:
    response.headers.update(HEADERS)
    return response
