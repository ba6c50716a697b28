"""The one error shape of the HTTP layer, ``{"error": {"code", "message", ...}}``.

:class:`ApiError` is an error answer: the server raises it (handlers, the route
table's checks) and shapes it here; the CLI's client reads an error answer back into
one. The framework's own errors (404, 405, 413, …), a refused integration command
and a refused use case (``daemon.service.ServiceError``) get the same shape.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from daemon.service import ServiceError
from projections.integration import InvalidCommand

# Stable codes for the framework's own errors; any other status gets its reason
# phrase in snake case ("418 I'm a teapot" -> "im_a_teapot").
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "body_too_large", 500: "internal_error"}
# Headers of the framework's exception that describe its plain-text body.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class ApiError(Exception):
    """An error answer: HTTP status, stable code, message for people, extra fields."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)

    @classmethod
    def from_answer(cls, status: int, raw: bytes, reason: str) -> ApiError:
        """An error answer read back by a client: its code and message when the body
        has the shape, else the status's code and reason phrase."""
        try:
            error = json.loads(raw)["error"]
            code, message = str(error["code"]), str(error["message"])
            extra = {k: v for k, v in error.items() if k not in ("code", "message")}
        except (ValueError, KeyError, TypeError):
            return cls(status, code_for(status, reason), reason or f"HTTP {status}")
        return cls(status, code, message, **extra)


def error_body(status: int, code: str, message: str, *,
               headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """The documented error shape: ``{"error": {"code", "message"}}``."""
    return ApiError(status, code, message, headers=headers, **extra).response()


def code_for(status: int, reason: str) -> str:
    if status in _CODES:
        return _CODES[status]
    words = "".join(ch if ch.isalnum() else " " for ch in reason.lower().replace("'", ""))
    return "_".join(words.split()) or f"http_{status}"


def from_http_exception(err: web.HTTPException) -> web.Response:
    """The framework's error (404 unknown path, 405, 413, …) in the shape."""
    text = (err.text or "").strip()
    # aiohttp's default text is "<status>: <reason>"; keep a specific one as the message.
    message = err.reason if not text or text == f"{err.status}: {err.reason}" else text
    headers = {k: v for k, v in err.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_body(err.status, code_for(err.status, err.reason), message, headers=headers)


def from_refusal(err: InvalidCommand | ServiceError) -> ApiError:
    """A refused integration command (404 when not set up, else 409) or use case."""
    if isinstance(err, InvalidCommand):
        return ApiError(404 if err.code == "not_set_up" else 409, err.code, str(err))
    return ApiError(err.status, err.code, err.message, **err.extra)
