"""The console's sessions: a signed cookie naming the token's holder, and CSRF.

A person logs in with an API token; the cookie then carries the token's *name*, an
expiry and a per-session CSRF token, signed (HMAC-SHA256) with a key derived from
the daemon's token table, never the token itself. The role, and the desk profile the
token is bound to (PERM-04), are looked up again on every request from the current
table, so a token removed from the configuration ends its sessions, and replicas
configured alike accept each other's cookies.

Every POST must carry the session's CSRF token (a form field ``csrf`` or the
``X-CSRF-Token`` header); the cookie is HttpOnly and SameSite=Strict besides, and
Secure when the console is served over TLS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from daemon.runtime.settings import Role

COOKIE = "syncd_console"
LOGIN_COOKIE = "syncd_login"
"""Before a session: a random value the login form repeats (login CSRF)."""
LIFETIME = 8 * 3600


@dataclass(frozen=True)
class Session:
    name: str
    role: Role
    csrf: str
    expires: int
    profile: str | None = None
    """The desk profile the token is bound to (``api_tokens[].profile``), if any."""


def signing_key(tokens: dict[str, tuple[str, Role]]) -> bytes:
    """A key only holders of the configuration know: changing any token ends every
    session."""
    digest = hashlib.sha256(b"syncd-console-session\x00")
    for token in sorted(tokens):
        digest.update(token.encode() + b"\x00")
    return digest.digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, tokens: dict[str, tuple[str, Role]],
                 profiles: Mapping[str, str] | None = None) -> None:
        self.tokens = tokens
        self.profiles = profiles or {}
        """Token -> the desk profile it is bound to (unbound tokens absent)."""
        self.key = signing_key(tokens)

    def holder(self, presented: str) -> tuple[str, Role] | None:
        """The name and role of a token, compared in constant time."""
        found = None
        for token, (name, role) in self.tokens.items():
            if hmac.compare_digest(token.encode(), presented.strip().encode()):
                found = (name, role)
        return found

    def _held(self, name: str) -> tuple[Role, str | None] | None:
        """The role of the token named ``name``, and the desk profile it is bound to."""
        for token, (token_name, role) in self.tokens.items():
            if token_name == name:
                return role, self.profiles.get(token)
        return None

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.key, payload, hashlib.sha256).digest())

    def issue(self, response: web.StreamResponse, request: web.Request, name: str) -> None:
        payload = json.dumps({"n": name, "c": secrets.token_urlsafe(24),
                              "e": int(time.time()) + LIFETIME}).encode()
        value = f"{_b64(payload)}.{self._sign(payload)}"
        response.set_cookie(COOKIE, value, httponly=True, samesite="Strict",
                            secure=request.secure, path="/", max_age=LIFETIME)

    def read(self, request: web.Request) -> Session | None:
        """The request's session, or None (no cookie, forged, expired, token gone)."""
        value = request.cookies.get(COOKIE, "")
        encoded, _, signature = value.partition(".")
        if not encoded or not signature:
            return None
        try:
            payload = _unb64(encoded)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
            name, csrf, expires = str(data["n"]), str(data["c"]), int(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        held = self._held(name)
        if held is None or expires < time.time():
            return None
        return Session(name, held[0], csrf, expires, held[1])


def end(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def csrf_ok(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(),
                                                   (presented or "").encode())
