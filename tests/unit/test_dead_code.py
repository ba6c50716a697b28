"""D5: dead code stays gone, and the envelope version has one definition."""

from __future__ import annotations

import importlib

import pytest

from adapters import relay
from projections.events import ENVELOPE_VERSION


@pytest.mark.parametrize("module, name", [
    ("projections.merge", "touched"),
    ("projections.mapping", "read_field"),
    ("projections.mapping", "REASON_TYPE_CLASH_TEXT_INT"),
    ("projections.sync", "direction"),
])
def test_removed(module: str, name: str) -> None:
    assert not hasattr(importlib.import_module(module), name)


def test_the_integration_service_has_no_custom_view_import() -> None:
    from adapters.integration_store import IntegrationService

    assert not hasattr(IntegrationService, "import_custom_view")


def test_the_relay_writes_the_envelope_version_of_events_py() -> None:
    assert f"'v', {ENVELOPE_VERSION}," in relay.FETCH_OUTBOX
