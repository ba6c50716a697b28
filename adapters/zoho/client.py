"""One Zoho organisation's HTTP session, shared by the Zoho adapters: each call made
with a live access token (``oauth.TokenSource``), refreshed and made once more if
the service says the token expired, and its failures said in the terms the command
writer acts on (``write_errors``): a lost connection or a timeout is ``Transient``;
credentials, scopes or a licence refused are ``Unavailable``; a call the
organisation's budget does not allow yet is ``Parked`` before it is sent; any other answer
above 2xx is what ``classify_http`` makes of it, unless the service answered per
record (the caller reads each record's outcome).

Zoho CRM and Zoho Desk say the same things in different envelopes (the CRM's
``{"code", "message", "details"}``, the desk's ``{"errorCode", "message"}``): a
``Dialect`` says which codes mean what.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.call_budget import CallBudget
from adapters.write_errors import Transient, Unavailable, classify_http
from adapters.zoho.oauth import AuthenticationFailed, Credentials, TokenSource


@dataclass(frozen=True)
class Dialect:
    name: str
    """The service, as errors name it (``Zoho CRM``)."""
    expired: frozenset[str]
    """Codes of a 401 for a token the service no longer takes: refreshed once."""
    unavailable: frozenset[str]
    """Whole-call codes only a person can mend (a scope, a permission, the licence)."""
    code: Callable[[Any], str | None]
    """The error code of a decoded answer."""
    per_record: Callable[[Any], bool] = lambda answer: False
    """Whether an error status came with an outcome per record (a batch write's)."""


class ZohoClient:
    def __init__(self, credentials: Credentials, dialect: Dialect, *, budget: CallBudget,
                 api_url: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None) -> None:
        self.credentials = credentials
        self.budget = budget
        """Calls at once, calls a second and credits a window (``call_budget``)."""
        self.dialect = dialect
        self.api_url = api_url
        """The API host; by default the one the accounts server names (``api_domain``)."""
        self.timeout = timeout
        self.headers = headers or {}
        """Sent with every call (the desk's ``orgId``)."""
        self._session: aiohttp.ClientSession | None = None
        self._tokens: TokenSource | None = None
        self.calls = 0

    async def call(self, method: str, path: str, *, for_write: bool | None = None,
                   extra_headers: dict[str, str] | None = None, raw: bool = False,
                   **request: Any) -> Any:
        """One call of ``path`` (after the host); the decoded answer (``{}`` for 204),
        or with ``raw`` a successful answer's bytes (a download).
        A read refused with 429 waits and is asked again, up to ``READ_WAIT`` seconds
        in all: the batch or the poll that reads would otherwise start over and ask
        again for everything it had read (a write's 429 is its writer's to wait out,
        with every other write). ``for_write``: a read a write makes (its guard, a
        key's look-up), spent from the writes' budget; by default a call is a write
        unless it is a GET."""
        write = method != "GET" if for_write is None else for_write
        tokens = self._token_source()
        refreshed, waited = False, 0.0
        while True:
            try:
                headers = {**await tokens.header(), **self.headers, **(extra_headers or {})}
                url = self._host(tokens) + path
                self.calls += 1
                async with self.budget.call(write=write), self.session().request(
                        method, url, headers=headers, **request,
                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                    if response.status == 204:
                        return {}
                    if raw and response.status < 300:
                        return await response.read()
                    answer = await response.json(content_type=None)
                    code = self.dialect.code(answer)
                    if response.status == 401 and code in self.dialect.expired:
                        if refreshed:
                            raise Unavailable(f"{self.dialect.name} refused a freshly"
                                              " refreshed access token")
                        refreshed = True
                        tokens.expired()
                        continue
                    if code in self.dialect.unavailable:
                        message = answer.get("message", "") if isinstance(answer, dict) else ""
                        raise Unavailable(f"{self.dialect.name}: {code} {message}".strip())
                    if response.status >= 300 and not self.dialect.per_record(answer):
                        error = classify_http(response.status, response.headers, answer)
                        wait = None if write else _read_wait(method, response.status,
                                                             error, waited)
                        if wait is None:
                            raise error
                    else:
                        return answer
            except (aiohttp.ClientError, TimeoutError) as err:
                raise Transient(f"{type(err).__name__}: {err}") from None
            except AuthenticationFailed as err:
                raise Unavailable(str(err)) from None
            await asyncio.sleep(wait)
            waited += wait

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def token_refreshes(self) -> int:
        return 0 if self._tokens is None else self._tokens.refreshes

    def _token_source(self) -> TokenSource:
        if self._tokens is None:
            self._tokens = TokenSource(self.credentials, self.session())
        return self._tokens

    def _host(self, tokens: TokenSource) -> str:
        url = self.api_url or tokens.api_domain
        if not url:
            raise Transient("the accounts server named no API host")
        return url.rstrip("/")


READ_WAIT = 30.0
"""Seconds a read waits out 429s in all before its caller is told."""


def _read_wait(method: str, status: int, error: Exception, waited: float) -> float | None:
    """How long a read refused with 429 waits before it is asked again (what
    ``Retry-After`` said, or a second); None: not a read's 429, or waited enough."""
    if method != "GET" or status != 429:
        return None
    wait = getattr(error, "retry_after", None) or 1.0
    return wait if waited + wait <= READ_WAIT else None
