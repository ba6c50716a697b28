"""The registry's claims about the projections' tables (projections/registry.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from projections.registry import SPECS

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("daemon", "adapters", "projections", "ops")


def _readers(table: str) -> set[str]:
    """The product's Python files that name ``table``."""
    name = re.compile(re.escape(table) + r"\b")
    return {str(path.relative_to(ROOT)) for folder in PRODUCT
            for path in (ROOT / folder).rglob("*.py") if name.search(path.read_text())}


@pytest.mark.parametrize("spec", [s for s in SPECS if s.private_tables], ids=lambda s: s.name)
def test_private_tables_are_read_by_their_projection_alone(spec: object) -> None:
    """A rebuild truncates a private table, which blocks its readers until the commit:
    only the projection's own modules (``projections/<its schema>*.py``, whose batches
    wait for the apply lock) may name it."""
    from projections.registry import ProjectionSpec
    assert isinstance(spec, ProjectionSpec)
    assert set(spec.private_tables) <= set(spec.tables)
    for table in spec.private_tables:
        schema = table.split(".")[0]
        own = re.compile(rf"projections/{re.escape(schema)}\w*\.py|projections/registry\.py")
        strangers = {path for path in _readers(table) if not own.fullmatch(path)}
        assert not strangers, f"{table} is read outside {spec.name}: {sorted(strangers)}"
