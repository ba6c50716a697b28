"""The one HTTP client of the CLI: every command that talks to the running daemon.

The address comes from the running daemon's ``<data dir>/runtime.json``, else the
configured ``SYNCD_HTTP_LISTEN``; an IPv6 host is bracketed (``http://[::1]:8080``)
and a wildcard host (``0.0.0.0``, ``::``) is reached on loopback. The bearer token
comes from ``SYNCD_API_TOKEN``, else, on the embedded default, from
``<data dir>/api-token``. A refusal is an ``ApiError`` read from the daemon's error
body (``daemon.http.errors``, the server's own class); no daemon answering is
:class:`Unreachable`. Server-sent events (the board's stream) are read line by
line as they arrive, and :meth:`DaemonClient.follow` reconnects with
``Last-Event-ID`` after a dropped connection.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from daemon.http.errors import ApiError
from daemon.runtime.runtime_file import read_runtime
from daemon.runtime.settings import Settings
from daemon.runtime.tokens import token_path

TIMEOUT = 30.0
"""Seconds a call waits for the daemon's answer."""
STREAM_READ_TIMEOUT = 60.0
"""Seconds a stream waits for its next line (the daemon sends a keep-alive every 15)."""
RECONNECT_SECONDS = 1.0

__all__ = ["ApiError", "DaemonClient", "SseEvent", "SseParser", "Unreachable", "api_token",
           "base_url", "parse_sse"]


class Unreachable(Exception):
    """No daemon answers (or none runs); the message says where and why."""

    def __init__(self, message: str, *, base: str | None = None) -> None:
        super().__init__(message)
        self.base = base

    @classmethod
    def at(cls, base: str, err: BaseException) -> Unreachable:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return cls(f"no daemon answering at {base} ({reason}); is `syncd run` running?",
                   base=base)


def base_url(settings: Settings) -> str:
    """Where the daemon answers: its runtime file, else the configured address."""
    info = read_runtime(settings.data_dir)
    address = info.http if info is not None else settings.http_listen
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if port == "0":
        raise Unreachable("the daemon is not running (no runtime.json and http_listen port 0)")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def api_token(settings: Settings) -> str | None:
    """``SYNCD_API_TOKEN``, else the embedded default's local token file."""
    token = os.environ.get("SYNCD_API_TOKEN")
    if token:
        return token.strip()
    try:
        return token_path(settings.data_dir).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """Incremental parser of a ``text/event-stream`` (the WHATWG rules we need:
    ``event``, ``data`` over several lines, ``id``; comments and ``retry`` ignored)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


def parse_sse(lines: Iterable[str]) -> list[SseEvent]:
    parser = SseParser()
    return [event for line in lines if (event := parser.feed(line)) is not None]


class DaemonClient:
    """The running daemon's API, for the CLI."""

    def __init__(self, base: str, token: str | None, *, timeout: float = TIMEOUT) -> None:
        self.base = base
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> DaemonClient:
        return cls(base_url(settings), api_token(settings))

    def _open(self, method: str, path: str, *, body: Any = None,
              query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
              timeout: float) -> http.client.HTTPResponse:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request,
                                                                        timeout=timeout)
        except urllib.error.HTTPError as err:
            with err:
                raise ApiError.from_answer(err.code, err.read(), err.reason) from None
        except (OSError, http.client.HTTPException) as err:
            raise Unreachable.at(self.base, err) from None
        return response

    def call(self, method: str, path: str, body: Any = None, *,
             query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Any:
        """One request; the decoded JSON answer. ``ApiError`` when the daemon refuses,
        ``Unreachable`` when none answers."""
        with self._open(method, path, body=body, query=query, headers=headers,
                        timeout=self.timeout) as response:
            try:
                return json.loads(response.read() or b"null")
            except (OSError, http.client.HTTPException) as err:
                raise Unreachable.at(self.base, err) from None

    def events(self, path: str, *, last_event_id: str | None = None,
               extra_headers: dict[str, str] | None = None) -> Iterator[SseEvent]:
        """The server-sent events of one connection to ``path``, as they arrive."""
        headers = {"Accept": "text/event-stream", **(extra_headers or {})}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        with self._open("GET", path, headers=headers,
                        timeout=STREAM_READ_TIMEOUT) as response:
            parser = SseParser()
            lines = iter(response)
            while True:
                try:
                    raw = next(lines, None)
                except (OSError, http.client.HTTPException) as err:
                    raise Unreachable.at(self.base, err) from None
                if raw is None:
                    return
                event = parser.feed(raw.decode("utf-8", "replace"))
                if event is not None:
                    yield event

    def follow(self, path: str, *, last_event_id: str | None = None,
               extra_headers: dict[str, str] | None = None) -> Iterator[SseEvent]:
        """The stream's events (after ``last_event_id``, if given), reconnecting after a
        drop where it left off (once it has given an event id); it ends after a
        ``gone`` event."""
        last_id = last_event_id
        while True:
            try:
                for event in self.events(path, last_event_id=last_id,
                                         extra_headers=extra_headers):
                    if event.id is not None:
                        last_id = event.id
                    yield event
                    if event.event == "gone":
                        return
            except Unreachable:
                if last_id is None:
                    raise
            time.sleep(RECONNECT_SECONDS)
