"""Helpers that build change events for tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from projections.events import ChangeEvent

BASE_TIME = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def change(
    *,
    source: str = "desk",
    module: str = "contacts",
    record_id: str = "1",
    op: str = "create",
    values: dict[str, Any] | None = None,
    changed: list[str] | None = None,
    at: dt.datetime | float | None = None,
    origin: str = "user",
    event_id: uuid.UUID | None = None,
) -> ChangeEvent:
    if isinstance(at, (int, float)):
        at = BASE_TIME + dt.timedelta(seconds=at)
    stamp = at or BASE_TIME
    return ChangeEvent(
        event_id=event_id or uuid.uuid4(), source=source, module=module,  # type: ignore[arg-type]
        record_id=record_id, op=op, values=values or {}, changed=changed,  # type: ignore[arg-type]
        modified_at=stamp, created_at=BASE_TIME, origin=origin,  # type: ignore[arg-type]
        captured_at=stamp,
    )
