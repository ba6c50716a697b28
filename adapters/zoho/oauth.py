"""OAuth 2.0 for the Zoho APIs: an access token from a refresh token, refreshed
before it expires, per data centre.

Zoho's accounts server of the organisation's data centre (``accounts.zoho.com``,
``.eu``, ``.in``, ``.com.au``, ``.jp``, ``.com.cn``) grants access tokens for an
hour from a long-lived refresh token (``POST /oauth/v2/token`` with
``grant_type=refresh_token``); its answer names the API host (``api_domain``) to
call with it. Calls carry ``Authorization: Zoho-oauthtoken <token>``. The tokens
are secrets: they are never logged, and errors say what failed, not what was sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

ACCOUNTS_HOSTS = {
    "com": "https://accounts.zoho.com", "eu": "https://accounts.zoho.eu",
    "in": "https://accounts.zoho.in", "com.au": "https://accounts.zoho.com.au",
    "jp": "https://accounts.zoho.jp", "com.cn": "https://accounts.zoho.com.cn"}
"""The accounts server of each data centre (the domain suffix of the org's account)."""

REFRESH_AHEAD = 300.0
"""Seconds before its expiry at which a token is refreshed (never used stale)."""


class AuthenticationFailed(Exception):
    """The accounts server refused the credentials: waiting will not help; the
    adapter stops with a clear status (a person must act)."""


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    data_centre: str = "com"
    accounts_url: str | None = None
    """Overrides the data centre's accounts server (an emulator's, in tests)."""

    def accounts(self) -> str:
        if self.accounts_url:
            return self.accounts_url.rstrip("/")
        try:
            return ACCOUNTS_HOSTS[self.data_centre]
        except KeyError:
            raise ValueError(f"unknown Zoho data centre {self.data_centre!r}:"
                             f" one of {', '.join(ACCOUNTS_HOSTS)}") from None


class TokenSource:
    """The current access token, refreshed once for all callers when it is within
    ``REFRESH_AHEAD`` of its expiry (or when a call was refused as expired)."""

    def __init__(self, credentials: Credentials, session: aiohttp.ClientSession) -> None:
        self.credentials = credentials
        self.session = session
        self._token: str | None = None
        self._expires = 0.0
        self.api_domain: str | None = None
        self.refreshes = 0
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        token = await self.token()
        return {"Authorization": f"Zoho-oauthtoken {token}"}

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._expires - REFRESH_AHEAD:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._expires - REFRESH_AHEAD:
                    await self._refresh()
        assert self._token is not None
        return self._token

    def expired(self) -> None:
        """A call was refused with an invalid token: the next call refreshes it."""
        self._expires = 0.0

    async def _refresh(self) -> None:
        creds = self.credentials
        form = {"grant_type": "refresh_token", "client_id": creds.client_id,
                "client_secret": creds.client_secret.get_secret_value(),
                "refresh_token": creds.refresh_token.get_secret_value()}
        async with self.session.post(f"{creds.accounts()}/oauth/v2/token",
                                     data=form) as response:
            answer: Any = await response.json(content_type=None)
            if response.status >= 500 or response.status == 429:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status,
                    message="the Zoho accounts server is unavailable")
        if not isinstance(answer, dict) or "access_token" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise AuthenticationFailed(
                f"Zoho refused the refresh token of client {creds.client_id}:"
                f" {error or 'no access token in the answer'}")
        self._token = str(answer["access_token"])
        self._expires = time.monotonic() + float(answer.get("expires_in", 3600))
        self.api_domain = answer.get("api_domain") or self.api_domain
        self.refreshes += 1
