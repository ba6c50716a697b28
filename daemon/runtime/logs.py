"""structlog set-up: JSON lines for machines, console output for people.

Secrets never reach a log line: every string value passes through
``redact`` which masks passwords in URLs and bearer tokens.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_KEYS = ("password", "secret", "token", "authorization")


def redact(text: str) -> str:
    """Mask a password inside a URL and a bearer token inside a header value."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _BEARER.sub(r"\1***", text)


def _redact_processor(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(*, level: str = "info", fmt: str = "auto",
                      stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging) to stderr (or ``stream``) in the chosen format."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)


_LEVELS = ("debug", "info", "warning", "error")
# Commands whose log lines are their output: the daemon itself.
LOGGING_COMMANDS = frozenset({"run"})


def command_log_level(configured: str, command: str | None, *, verbose: bool = False) -> str:
    """The level a ``syncd`` command logs at.

    ``syncd run`` logs at the configured level (``SYNCD_LOG_LEVEL``, info by default).
    Every other command prints its own output for people, so its log lines stay out
    of the way: warning and above, unless ``--verbose`` asks for the configured level
    (at least info).
    """
    if command in LOGGING_COMMANDS:
        return configured
    if verbose:
        return configured if _LEVELS.index(configured) <= _LEVELS.index("info") else "info"
    return configured if _LEVELS.index(configured) >= _LEVELS.index("warning") else "warning"
