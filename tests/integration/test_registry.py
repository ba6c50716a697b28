"""The projection registry names every table the projections own (OWN-03): a table
nobody declares would be neither rebuilt nor compared by a replay."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY

from adapters import metrics
from daemon.stats import export_round
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
    assert registry.rebuildable() == ("history", "failures", "handshake", "statistics",
                                      "ticket_actions", "signals", "crm_view")
    assert set(registry.not_rebuildable()) == {"sync", "links", "mapping"}
    # The four that read events only run while the sync plans; the ticket actions last.
    assert [p.name for p in registry.live_projections(SyncConfig)] == [
        "sync", "statistics", "crm_view", "handshake", "signals", "ticket_actions"]


def test_the_first_sync_captures_each_module_once() -> None:
    """The board and the statistics both read the CRM's leads: captured once."""
    pairs = registry.first_sync_modules()
    assert ("crm", "leads") in registry.spec("statistics").first_sync
    assert ("crm", "leads") in registry.spec("handshake").first_sync
    assert len(pairs) == len(set(pairs)) and ("crm", "leads") in pairs


async def test_the_stats_export_reads_each_projections_gauges(database_url: str) -> None:
    """The gauges come from the registry's queries (one list: a projection's gauge is
    declared in its spec), and a series the tables no longer hold disappears."""
    assert {g.metric for g in registry.gauges()} == set(metrics.PROJECTION_GAUGES)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO sync.failures (source, module, record_id, reason, first_failed_at,"
            " last_failed_at) VALUES ('desk', 'contacts', '1', 'stale_gone', now(), now()),"
            " ('desk', 'contacts', '2', 'stale_gone', now(), now()),"
            " ('crm', 'accounts', '3', 'old_reason', now(), now())")
        await conn.execute(
            "INSERT INTO sync.history VALUES (date_trunc('hour', now()), 'desk_to_crm',"
            " 'contacts', 5, 2, 1), (date_trunc('hour', now()) - interval '8 days',"
            " 'desk_to_crm', 'accounts', 9, 9, 9)")
        await conn.execute(
            "INSERT INTO handshake.departments VALUES ('7', 'Support');"
            " INSERT INTO handshake.board (ticket_id, department_id, board_column, created_at,"
            " summary) VALUES ('1', '7', 'new', now(), '{}'), ('2', '7', 'new', now(), '{}'),"
            " ('3', '8', 'customers', now(), '{}')")
        await export_round(conn)
        await conn.execute("DELETE FROM sync.failures WHERE reason = 'old_reason'")
        await export_round(conn)
    finally:
        await conn.close()

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert value("syncd_failures_open", reason="stale_gone") == 2
    assert value("syncd_failures_open", reason="old_reason") is None
    assert value("syncd_history_records", direction="desk_to_crm", module="contacts",
                 outcome="added") == 5
    assert value("syncd_history_records", direction="desk_to_crm", module="contacts",
                 outcome="failed") == 1
    assert value("syncd_history_records", direction="desk_to_crm", module="accounts",
                 outcome="added") is None  # older than seven days
    assert value("syncd_handshake_tickets", department="Support", column="new") == 2
    assert value("syncd_handshake_tickets", department="8", column="customers") == 1
