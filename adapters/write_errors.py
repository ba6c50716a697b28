"""What a remote store's refusal of a write means: try again later, or never.

Every remote store adapter raises one of these from its writes, so the command
writer (``adapters.command_writer``) treats every store alike: a ``Transient``
error is retried with backoff (honouring ``retry_after``), a ``Refused`` one goes
to the failure log with its reason and does not hold up the record's later writes,
a ``Stale`` one (the guard's refusal) gives way to the newer change.
``classify_http`` maps an HTTP answer to one of them, for the HTTP adapters.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from typing import Any

from projections.mapping import REASON_MANDATORY
from projections.sync_plan import REASON_ALREADY_MAPPED

REASON_MISSING_PARAMETER = "missing parameter"
REASON_INCORRECT_VALUE = "incorrect API parameter or value"
REASON_TYPE_CLASH = "a value of the wrong type for its field"
REASON_TARGET_UNREACHABLE = "target unreachable"
REASON_REFUSED = "the target refused the write"

# The error codes of the Zoho APIs' error envelope ({"code", "details", "message",
# "status"}); other stores' adapters map theirs to the same reasons.
REASON_BY_CODE = {
    "MANDATORY_NOT_FOUND": REASON_MANDATORY,
    "REQUIRED_PARAM_MISSING": REASON_MISSING_PARAMETER,
    "INVALID_DATA": REASON_INCORRECT_VALUE,
    "INVALID_REQUEST": REASON_INCORRECT_VALUE,
    "DUPLICATE_DATA": REASON_ALREADY_MAPPED,
    "INVALID_TYPE": REASON_TYPE_CLASH,
}


class WriteError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Transient(WriteError):
    """Worth trying again: a timeout, a lost connection, 429, 5xx. ``retry_after``:
    seconds the target asked for (``Retry-After``), if it did."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Stale(WriteError):
    """The guard refused the write: the record changed after the newest change of it
    the sync had seen when it decided (HTTP 412 to a conditional write).
    ``modified_time``: the record's modification time the guard read, when it is known;
    the writer then finds out what brings the sync's decision again
    (``remote_capture.after_stale_write``)."""

    def __init__(self, detail: str, *, modified_time: dt.datetime | None = None) -> None:
        super().__init__(detail)
        self.modified_time = modified_time


class Unavailable(WriteError):
    """No write can go to the target until a person acts: its credentials refused, a
    scope or licence missing. Nothing is failed: every write waits, the writer says
    so (its status, ``/readyz``, a metric) and tries again now and then."""


class Parked(WriteError):
    """The store's API credits for its window are spent as far as the budget lets
    this call go (``adapters.call_budget``): nothing is sent before ``retry_after``
    seconds from now, and nothing fails for it."""

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Refused(WriteError):
    """The target will not take this write as it is: ``reason`` is the failure
    log's, ``detail`` what the target said, ``code`` its error code if it gave one."""

    def __init__(self, reason: str, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code


def retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """``Retry-After``'s seconds, from either form (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def classify_http(status: int, headers: Mapping[str, str], body: Any) -> WriteError:
    """The error an HTTP answer other than 2xx means. ``body``: the decoded JSON (a
    Zoho error envelope, or anything)."""
    if status == 429 or status >= 500 or status == 408:
        return Transient(f"HTTP {status}", retry_after=retry_after(headers.get("Retry-After")))
    if status == 412:
        return Stale("HTTP 412: the record changed since the sync last saw it")
    code, message = _error_code(body)
    reason = REASON_BY_CODE.get(code or "", REASON_REFUSED if status != 400
                                else REASON_INCORRECT_VALUE)
    return Refused(reason, f"HTTP {status} {code or ''}: {message}".strip(), code=code)


def _error_code(body: Any) -> tuple[str | None, str]:
    """The code and message of an error envelope (the CRM's ``{"code", "message",
    "details"}``, the desk's ``{"errorCode", "message", "errors"}``): the top level's,
    or the first record's of a ``{"data": [...]}`` answer."""
    if isinstance(body, dict) and isinstance(body.get("data"), list) and body["data"]:
        body = body["data"][0]
    if not isinstance(body, dict):
        return None, str(body)[:300]
    code = next((body[k] for k in ("code", "errorCode") if isinstance(body.get(k), str)), None)
    message = body.get("message")
    details = body.get("details") or body.get("errors")  # the CRM's, the desk's
    text = str(message) if message is not None else ""
    if details:
        text = f"{text} {details}".strip()
    return code, text[:300]
