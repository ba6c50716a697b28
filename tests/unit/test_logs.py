from __future__ import annotations

from daemon.runtime.logs import redact


def test_redact_masks_url_password_and_bearer() -> None:
    """Passwords in URLs and bearer tokens never survive into log text."""
    text = "postgresql://syncd:s3cr3t-pw@db:5432/x and Authorization: Bearer abc.def-123"
    out = redact(text)
    assert "s3cr3t-pw" not in out and "abc.def-123" not in out
    assert "postgresql://syncd:***@db:5432/x" in out


def test_redact_leaves_passwordless_url() -> None:
    """A URL without a password is left as it is."""
    assert redact("postgresql://postgres@/postgres?host=/tmp") == (
        "postgresql://postgres@/postgres?host=/tmp"
    )
