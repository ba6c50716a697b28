"""The projection registry names every table the projections own (OWN-03): a table
nobody declares would be neither rebuilt nor compared by a replay."""

from __future__ import annotations

import asyncpg

from projections import registry
from projections.config import SyncConfig


async def test_every_projection_table_is_in_the_registry(database_url: str) -> None:
    declared = {t for s in registry.SPECS for t in (*s.tables, *s.stream_tables)}
    schemas = sorted({t.split(".")[0] for t in declared})
    conn = await asyncpg.connect(database_url)
    try:
        present = {f"{r['schemaname']}.{r['tablename']}" for r in await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1)", schemas)}
    finally:
        await conn.close()
    assert present == declared


def test_names_for_replay() -> None:
    assert registry.rebuildable() == ("history", "failures", "handshake")
    assert set(registry.not_rebuildable()) == {"sync", "links", "mapping"}
    assert [p.name for p in registry.live_projections(SyncConfig)] == [
        "sync", "handshake"]
