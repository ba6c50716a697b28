"""Issue 13, part 6: every error the HTTP layer answers has the documented shape,
``{"error": {"code", "message"}}`` — the framework's own errors included."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from daemon.http.auth import sign
from daemon.http.server import CLIENT_MAX_SIZE, build_app
from tests.support.api import api_context

SECRET = b"error-bodies-secret"


class FakePool:
    async def execute(self, _query: str, *_args: Any) -> str:
        return "OK"


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("secret internals /home/user/app.py line 42")


class _Teapot(web.HTTPClientError):
    status_code = 418


async def _teapot(_request: web.Request) -> web.Response:
    raise _Teapot()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    ctx = api_context(FakePool(), integration=None, tokens={}, webhook_secrets={"desk": SECRET})
    app = build_app({}, api=ctx, routes=[web.get("/boom", _boom), web.get("/teapot", _teapot)])
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _error(response: Any) -> dict[str, Any]:
    assert response.content_type == "application/json", await response.text()
    body = json.loads(await response.text())
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


async def test_oversized_webhook_body_is_a_json_413(
        client: TestClient[web.Request, web.Application]) -> None:
    raw = b"x" * (CLIENT_MAX_SIZE + 1)
    now = int(time.time())
    response = await client.post("/webhooks/desk", data=raw, headers={
        "X-Syncd-Timestamp": str(now), "X-Syncd-Signature": sign(SECRET, raw, now)})
    assert response.status == 413
    error = await _error(response)
    assert error["code"] == "body_too_large"
    assert str(CLIENT_MAX_SIZE) in error["message"]


async def test_body_over_the_api_limit_keeps_its_code(
        client: TestClient[web.Request, web.Application]) -> None:
    raw = b"x" * (256 * 1024 + 1)
    response = await client.post("/webhooks/desk", data=raw)
    assert response.status == 413
    assert (await _error(response))["code"] == "body_too_large"


async def test_unknown_path_is_a_json_404(
        client: TestClient[web.Request, web.Application]) -> None:
    for path in ("/nope", "/api/v1/nope", "/webhooks/elsewhere"):
        response = await client.get(path)
        assert response.status == 404, path
        assert (await _error(response))["code"] == "not_found"


async def test_wrong_method_is_a_json_405_with_allow(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.post("/healthz")
    assert response.status == 405
    assert (await _error(response))["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
    response = await client.get("/webhooks/desk")
    assert response.status == 405
    assert (await _error(response))["code"] == "method_not_allowed"


async def test_handler_that_raises_is_a_json_500_without_the_traceback(
        client: TestClient[web.Request, web.Application]) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/boom")
    assert response.status == 500
    error = await _error(response)
    assert error["code"] == "internal_error"
    text = json.dumps(error)
    assert "Traceback" not in text and "secret internals" not in text
    assert "RuntimeError" not in text
    failed = [e for e in logs if e["event"] == "http_request_failed"]
    assert len(failed) == 1 and failed[0]["path"] == "/boom"
    assert failed[0]["log_level"] == "error" and failed[0].get("exc_info")


async def test_any_other_framework_error_has_the_shape(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/teapot")
    assert response.status == 418
    assert (await _error(response))["code"] == "im_a_teapot"


async def test_api_errors_keep_their_codes(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.post("/webhooks/desk", data=b"{}")
    assert response.status == 401
    assert (await _error(response))["code"] == "bad_signature"
    response = await client.get("/api/v1/status")
    assert response.status == 401
    assert (await _error(response))["code"] == "unauthorized"
