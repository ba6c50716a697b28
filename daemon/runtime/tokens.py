"""The local admin token for the zero-configuration start.

With no API tokens configured, the daemon generates one admin token into
``<data dir>/api-token``, readable by its user only; the CLI reads it from
there. It is never written to runtime.json or a log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from daemon.runtime.settings import Role, Settings

LOCAL_NAME = "local-admin"


def token_path(data_dir: Path) -> Path:
    return data_dir / "api-token"


def local_token(data_dir: Path) -> str:
    """Read the local token, creating it (mode 0600) on first use."""
    path = token_path(data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def token_table(settings: Settings) -> dict[str, tuple[str, Role]]:
    """Bearer token -> (who, role), from settings or the local admin token."""
    if settings.api_tokens:
        return {t.token.get_secret_value(): (t.name, t.role) for t in settings.api_tokens}
    return {local_token(settings.data_dir): (LOCAL_NAME, "admin")}


def token_profiles(settings: Settings) -> dict[str, str]:
    """Bearer token -> the desk profile it is bound to (PERM-04; unbound tokens absent)."""
    return {t.token.get_secret_value(): t.profile for t in settings.api_tokens
            if t.profile is not None}
