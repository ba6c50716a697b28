"""The use cases the HTTP API and the CLI share (the CLI reaches them over HTTP).

Each function takes the pool (or a connection) and plain arguments and returns
plain data; the SQL of the admin API and the board lives here, never in
``daemon/http/``. A use case that refuses raises a :class:`ServiceError`, which
the HTTP layer answers in the error shape (``daemon.http.errors``).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A use case refused: ``code`` is stable, ``message`` for people, ``extra`` more
    fields for the error body."""

    status = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class NotFound(ServiceError):
    """What was asked for is not there (HTTP 404)."""

    status = 404


class Conflict(ServiceError):
    """The request cannot be carried out as it stands (HTTP 409)."""

    status = 409


class Unavailable(ServiceError):
    """What the request needs cannot be reached now: a hosted store (HTTP 503)."""

    status = 503
