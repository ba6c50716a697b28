"""The console's session cookie and CSRF check, and its HTML escaping, without a
browser or a database."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from daemon.http.console import session as console_session
from daemon.http.console.html import esc, tag
from daemon.http.console.session import COOKIE, Sessions, csrf_ok
from daemon.runtime.settings import Role

TOKENS: dict[str, tuple[str, Role]] = {"tok-viewer-0123456789": ("ann", "viewer"),
                                       "tok-operator-0123456789": ("ops", "operator")}


def _issued(sessions: Sessions, name: str) -> str:
    response = web.Response()
    sessions.issue(response, make_mocked_request("POST", "/login"), name)
    morsel = response.cookies[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict"
    return morsel.value


def _with(cookie: str) -> Any:
    return make_mocked_request("GET", "/", headers={"Cookie": f"{COOKIE}={cookie}"})


def test_a_session_names_the_holder_never_the_token() -> None:
    """The cookie carries the token's name and the role comes from the table; the
    token itself is nowhere in it."""
    sessions = Sessions(TOKENS)
    assert sessions.holder(" tok-operator-0123456789 ") == ("ops", "operator")
    assert sessions.holder("tok-nope") is None
    cookie = _issued(sessions, "ops")
    assert "tok-operator" not in cookie
    read = sessions.read(_with(cookie))
    assert read is not None and (read.name, read.role) == ("ops", "operator")
    assert csrf_ok(read.csrf, read.csrf) and not csrf_ok(read.csrf, "") \
        and not csrf_ok(read.csrf, read.csrf + "x")


def test_forged_expired_or_revoked_sessions_are_none() -> None:
    """A changed payload, another key, an expired cookie, or a token no longer
    configured: no session."""
    sessions = Sessions(TOKENS)
    cookie = _issued(sessions, "ann")
    _, _, signature = cookie.partition(".")
    forged = console_session._b64(b'{"n": "ops", "c": "x", "e": 99999999999}')
    assert sessions.read(_with(f"{forged}.{signature}")) is None
    assert sessions.read(_with("garbage")) is None
    assert Sessions({"other-token-0123456789": ("ann", "admin")}).read(_with(cookie)) is None
    without_ann = {k: v for k, v in TOKENS.items() if v[0] != "ann"}
    revoked = Sessions(without_ann)
    revoked.key = sessions.key  # same key, the name no longer configured
    assert revoked.read(_with(cookie)) is None


def test_an_expired_session_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(TOKENS)
    cookie = _issued(sessions, "ann")
    later = time.time() + console_session.LIFETIME + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert sessions.read(_with(cookie)) is None


def test_the_cookie_is_secure_over_tls() -> None:
    """Served over TLS the cookie is Secure too; over plain HTTP (loopback) it cannot be."""
    import ssl

    sessions = Sessions(TOKENS)
    for context, secure in ((None, False), (ssl.create_default_context(), True)):
        response = web.Response()
        sessions.issue(response, make_mocked_request("POST", "/login", sslcontext=context),
                       "ann")
        assert bool(response.cookies[COOKIE]["secure"]) is secure


def test_values_are_escaped_in_text_and_attributes() -> None:
    html = tag("a", "<script>x</script>", href='"><img src=x>', class_="c", hidden=True,
               title=None)
    assert html == ('<a href="&quot;&gt;&lt;img src=x&gt;" class="c" hidden>'
                    "&lt;script&gt;x&lt;/script&gt;</a>")
    assert esc(html) == html  # markup is not escaped twice
