"""Who may call what: bearer tokens with a role, and signed webhooks.

Bearer tokens carry a role: ``viewer`` reads, ``operator`` also pauses, resumes,
retries and acts from the board, ``admin`` does everything. :func:`authenticate`
(a middleware) puts the caller's name and role on the request; each route of the
table names the role it needs, and :func:`by_role` refuses without one (401) or
with too low a one (403). Webhooks carry an HMAC signature instead
(:func:`verify_signature`).

PERM-04 ("users need the integration permission in their profile to configure it;
only administrators set it up"): a token may be bound to a desk profile (settings,
``api_tokens[].profile``); a route that configures the integration (access
``configure`` in the route table) admits an ``admin`` token, or an ``operator`` token
bound to a profile whose ``configures`` is true (:func:`configure_refusal`, which the
console's configuring actions apply too). Setting the integration up, deleting it and
changing profiles stay ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from daemon.http import API_PREFIX
from daemon.http.errors import ApiError
from daemon.runtime.settings import Role
from projections.people import DeskProfile

RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}
WHO = web.RequestKey("who", str)
ROLE = web.RequestKey("role", str)
PROFILE = web.RequestKey("profile", str)
WEBHOOK_WINDOW_SECONDS = 300

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

Authorize = Callable[[web.Request, Role], None]
"""Admits a request to a route needing a role, or raises ``ApiError`` (401, 403)."""


def authenticate(tokens: dict[str, tuple[str, Role]],
                 profiles: Mapping[str, str] | None = None) -> Any:
    """The middleware that reads a bearer token on the API's paths and, when it is one
    of ``tokens`` (token -> (name, role)), puts the name and role on the request, and
    the desk profile the token is bound to (``profiles``: token -> profile) if any."""
    bound = profiles or {}
    prefix = API_PREFIX + "/"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(prefix):
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() == "bearer" and presented:
                for token, (name, role) in tokens.items():
                    if hmac.compare_digest(token.encode(), presented.strip().encode()):
                        request[WHO] = name
                        request[ROLE] = role
                        if token in bound:
                            request[PROFILE] = bound[token]
        return await handler(request)

    return middleware


def by_role(request: web.Request, role: Role) -> None:
    """No token is 401, too low a role 403; neither changes anything."""
    have = request.get(ROLE)
    if have is None:
        raise ApiError(401, "unauthorized", "a bearer token is required")
    if RANK[have] < RANK[role]:
        raise ApiError(403, "forbidden", f"this needs the {role} role")


Profiles = Callable[[], Awaitable[Mapping[str, DeskProfile]]]
"""The desk's profiles by name, as the integration holds them now."""

NEEDS_PERMISSION = ("configuring the integration needs the admin role, or an operator token"
                    " bound to a desk profile with the integration permission")


async def configure_refusal(role: str | None, bound: str | None, profiles: Profiles
                            ) -> str | None:
    """PERM-04, the one rule the API's ``configure`` routes and the console's configuring
    actions apply: why a caller with ``role``, whose token is bound to desk profile
    ``bound`` (or none), may not configure the integration; None when it may. An admin
    configures; an operator only through a bound profile that ``configures`` (read now,
    so a permission taken away holds at once); a viewer never."""
    if role is None or role == "admin":  # None: open access (``open_access`` admitted it)
        return None
    if RANK[role] < RANK["operator"]:
        return f"{NEEDS_PERMISSION}; this token is a {role}'s"
    if bound is None:
        return f"{NEEDS_PERMISSION}; this token is bound to none"
    profile = (await profiles()).get(bound)
    if profile is None:
        return f"{NEEDS_PERMISSION}; this token's profile {bound!r} does not exist"
    if not profile.configures:
        return f"{NEEDS_PERMISSION}; desk profile {bound!r} does not have it"
    return None


async def may_configure(request: web.Request, profiles: Profiles) -> None:
    """``configure_refusal`` for an API request, after ``by_role`` admitted an operator:
    403 with the reason; nothing is changed."""
    reason = await configure_refusal(request.get(ROLE), request.get(PROFILE), profiles)
    if reason is not None:
        raise ApiError(403, "forbidden", reason)


def open_access(_request: web.Request, _role: Role) -> None:
    """No authentication: for tests, or behind a proxy that authenticates."""


def who(request: web.Request) -> str | None:
    """The authenticated caller's name (None under open access)."""
    return request.get(WHO)


def verify_signature(secret: bytes, raw: bytes, timestamp: str, signature: str, *,
                     now: float) -> None:
    """HMAC-SHA256 over ``<timestamp>.<raw body>``, sent as ``sha256=<hex>``, with the
    timestamp within five minutes so a captured request cannot be replayed later."""
    try:
        stamp = int(timestamp)
    except ValueError:
        raise ApiError(401, "bad_signature", "X-Syncd-Timestamp is missing or not an integer"
                       ) from None
    if abs(now - stamp) > WEBHOOK_WINDOW_SECONDS:
        raise ApiError(401, "stale_request", "timestamp outside the five-minute window")
    expected = hmac.new(secret, f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(f"sha256={expected}", signature.strip()):
        raise ApiError(401, "bad_signature", "the signature does not match")


def sign(secret: bytes, raw: bytes, stamp: int) -> str:
    return "sha256=" + hmac.new(secret, f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
