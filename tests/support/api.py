"""The admin API's context as the tests build it: the defaults every test shares."""

from __future__ import annotations

from typing import Any

from daemon.http.api import ApiContext
from daemon.runtime.settings import Role
from projections.config import SyncConfig


def api_context(pool: Any, *, integration: Any = None,
                tokens: dict[str, tuple[str, Role]] | None = None, **more: Any) -> ApiContext:
    """An ``ApiContext`` on ``pool``: no webhook secrets, history in UTC, the default
    config, no lag, nothing applied yet, unless ``more`` says otherwise."""
    values: dict[str, Any] = {
        "webhook_secrets": {}, "history_timezone": "UTC", "config": SyncConfig,
        "lag": dict, "last_applied_at": lambda: None, **more}
    return ApiContext(pool=pool, integration=integration, tokens=tokens or {}, **values)
