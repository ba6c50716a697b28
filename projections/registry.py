"""Every projection, listed once (OWN-03).

A projection's specification says what the daemon, replay, the CLI and the
benchmark need to know of it: how to make the live instance, where it runs in a
batch, which tables it owns, how a replay rebuilds those tables, and what it
needs from the first sync. They iterate over ``SPECS``; adding a projection is
its module, its migration and one entry here (docs/architecture.md, "Adding a
projection").

Rebuild kinds:

* ``events``: a pure function of the event log. Replay empties the state
  tables and fills them from the event log with ``from_last_states`` when the
  projection has one (set-based, from each record's last event), else by feeding
  every logged event, in log order, to a fresh instance (its stream tables are a
  change feed for readers: cleared, and readers told to reload, by
  ``reset_stream``).
* ``outcomes``: a fold of ``sync.outcomes``, the per-event record of what the
  sync decided (``projections.ledger``); replay folds the outcomes again.
* ``None``: not a projection of the log at all: what it holds depended on what
  the stores held at the time (the mapping table); ``not_rebuilt`` says why,
  and a window re-apply is the tool instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from projections.batch import Projection
from projections.catalog import Side
from projections.config import SyncConfig
from projections.crm_view import CrmViewProjection
from projections.crm_view import fill as fill_crm_view
from projections.db import Conn
from projections.handshake import HandshakeProjection, reset_stream
from projections.handshake_rebuild import rebuild as rebuild_handshake
from projections.last_states import Rebuilt
from projections.sales_signals import SalesSignalsProjection
from projections.sales_signals import reset_stream as reset_signals_stream
from projections.sales_signals_rebuild import rebuild as rebuild_signals
from projections.sync import SyncProjection
from projections.ticket_actions import TicketActionsProjection
from projections.ticket_actions import rebuild as rebuild_ticket_actions
from projections.ticket_stats import StatisticsProjection
from projections.ticket_stats_rebuild import rebuild as rebuild_statistics

RebuildKind = Literal["events", "outcomes"]
ConfigSource = Callable[[], SyncConfig]


@dataclass(frozen=True)
class GaugeQuery:
    """A gauge read from a projection's tables, every stats round.

    ``query`` returns one row per series: the label values, in the gauge's label
    order, then the value in the last column. The series the query no longer returns
    are removed, so a gauge never shows a state the tables do not hold."""

    metric: str
    """The gauge's name (one of ``adapters.metrics.PROJECTION_GAUGES``)."""
    query: str


@dataclass(frozen=True)
class ProjectionSpec:
    name: str
    order: int
    """Its place in a batch: the projections run in ascending order, in one transaction."""
    tables: tuple[str, ...]
    """The state tables it owns (schema-qualified): what a rebuild compares and replaces."""
    rebuild: RebuildKind | None
    make: Callable[[ConfigSource], Projection] | None = None
    """The live instance, for a batch (None: maintained by another projection's batch,
    as the ledger is by the sync's)."""
    from_last_states: Callable[[Conn], Awaitable[Rebuilt]] | None = None
    """For ``events``: fill the emptied state tables from each record's last state in
    the event log, set-based (or, for a projection that walks events in order, from the
    events it reads alone: one module's, or every event's time but only its modules'
    payloads), with the same result as feeding every event to a fresh instance (which a
    replay from Kafka still does)."""
    fill: Callable[[Conn, Mapping[str, str]], Awaitable[Rebuilt]] | None = None
    """For ``events``, in place of ``from_last_states``: the same set-based fill, into the
    tables it is given (each of ``tables`` to an empty table like it, to fill in its
    place). A rebuild from the event log then fills temporary copies and writes into
    the live tables only the rows that differ, as the ledger's fold does: the live rows
    are neither copied aside nor deleted and written again, and a rebuild that changes
    nothing writes nothing to them."""
    private_tables: tuple[str, ...] = ()
    """Those of ``tables`` nothing reads but the projection's own batches, which hold the
    apply lock (no route, command or other projection): no reader needs their old rows
    while a rebuild runs, so a rebuild empties them with ``TRUNCATE`` rather than
    ``DELETE`` (``projections.replay.rebuild_from_events``).
    ``tests/unit/test_registry.py`` holds the claim to the code."""
    stream_tables: tuple[str, ...] = ()
    reset_stream: Callable[[Conn], Awaitable[None]] | None = None
    first_sync: tuple[tuple[Side, str], ...] = ()
    """(source, module) the first sync must put into the outbox for it, beyond the
    synced modules."""
    aliases: tuple[str, ...] = ()
    not_rebuilt: str | None = None
    gauges: tuple[GaugeQuery, ...] = ()
    """Its metrics: gauges the daemon's stats export reads from its tables."""


_FAILURES_OPEN = GaugeQuery(
    "syncd_failures_open",
    "SELECT reason, count(*) FROM sync.failures WHERE status = 'open' GROUP BY reason")
_HISTORY_RECORDS = GaugeQuery(
    "syncd_history_records",
    "SELECT direction, module, outcome, sum(n) FROM sync.history,"
    " LATERAL (VALUES ('added', added), ('updated', updated), ('failed', failed))"
    " AS o(outcome, n)"
    " WHERE hour > (SELECT max(hour) FROM sync.history) - interval '7 days'"
    " GROUP BY direction, module, outcome")
_HANDSHAKE_TICKETS = GaugeQuery(
    "syncd_handshake_tickets",
    "SELECT coalesce(d.name, b.department_id), b.board_column, count(*)"
    " FROM handshake.board b LEFT JOIN handshake.departments d USING (department_id)"
    " WHERE b.board_column IS NOT NULL GROUP BY 1, 2")

_MAPPING_TABLE = ("the mapping table depends on what the stores held when records were"
                  " matched; it is not a projection of the event log (re-apply a window"
                  " instead)")

SPECS: tuple[ProjectionSpec, ...] = (
    ProjectionSpec(
        name="sync", order=0, make=SyncProjection,
        tables=("sync.links", "sync.outcomes", "sync.deferred", "sync.pending_refs",
                "sync.commands"),
        rebuild=None,
        aliases=("links", "mapping"), not_rebuilt=_MAPPING_TABLE),
    ProjectionSpec(name="history", order=0, tables=("sync.history",), rebuild="outcomes",
                   gauges=(_HISTORY_RECORDS,)),
    ProjectionSpec(name="failures", order=0, tables=("sync.failures",), rebuild="outcomes",
                   gauges=(_FAILURES_OPEN,)),
    ProjectionSpec(
        name="handshake", order=2, make=lambda _config: HandshakeProjection(),
        tables=("handshake.board", "handshake.crm_keys", "handshake.deals",
                "handshake.departments"),
        private_tables=("handshake.crm_keys",),
        stream_tables=("handshake.moves", "handshake.stream_state"),
        reset_stream=reset_stream, rebuild="events", from_last_states=rebuild_handshake,
        gauges=(_HANDSHAKE_TICKETS,),
        first_sync=(("crm", "leads"), ("crm", "deals"), ("desk", "departments"),
                    ("desk", "ticket_statuses"), ("desk", "tickets"))),
    ProjectionSpec(
        name="statistics", order=1, make=lambda _config: StatisticsProjection(),
        tables=("ticket_stats.tickets", "ticket_stats.replies", "ticket_stats.crm_contacts",
                "ticket_stats.crm_leads", "ticket_stats.clock"),
        rebuild="events", from_last_states=rebuild_statistics,
        first_sync=(("desk", "ticket_threads"), ("crm", "leads"))),
    # Made in ``rebuild`` mode, which never writes the desk: the composition root
    # (daemon.bootstrap) puts the live instance in the desk's mode.
    ProjectionSpec(
        name="ticket_actions", order=4, make=lambda _config: TicketActionsProjection(),
        tables=("ticket_actions.actions", "ticket_actions.deal_links"), rebuild="events",
        from_last_states=rebuild_ticket_actions),
    ProjectionSpec(
        name="signals", order=3, make=lambda _config: SalesSignalsProjection(),
        tables=("sales_signals.tickets", "sales_signals.people", "sales_signals.deals",
                "sales_signals.signals", "sales_signals.clock",
                "sales_signals.waiting_threads"),
        private_tables=("sales_signals.tickets", "sales_signals.people", "sales_signals.deals",
                        "sales_signals.waiting_threads"),
        stream_tables=("sales_signals.published",), reset_stream=reset_signals_stream,
        rebuild="events", from_last_states=rebuild_signals),
    ProjectionSpec(
        name="crm_view", order=1, make=lambda _config: CrmViewProjection(),
        tables=("crm_view.records",), rebuild="events", fill=fill_crm_view,
        first_sync=(("crm", "notes"), ("crm", "calls"), ("crm", "events"), ("crm", "tasks"))),
)
"""Every projection. The sync comes first; the statistics, the CRM view, the board and the
sales signals, which read the batch's events and their own tables only
(``reads_events_only``), run while the sync plans, after its reads and before its writes
(``projections.batch.apply_projections``), in that order: the board holds its moves lock
and the signals their sequence lock until the commit, so they come last of the four;
the ticket actions, which write the desk, run after all of them."""


def spec(name: str) -> ProjectionSpec:
    for item in SPECS:
        if name == item.name:
            return item
    raise KeyError(name)


def rebuildable() -> tuple[str, ...]:
    """The names ``syncd replay --projection`` takes (besides ``all``)."""
    return tuple(s.name for s in SPECS if s.rebuild is not None)


def not_rebuildable() -> dict[str, str]:
    """Names (and aliases) that are not projections of the log, with the reason."""
    return {name: s.not_rebuilt or "not rebuilt from the log" for s in SPECS
            if s.rebuild is None for name in (s.name, *s.aliases)}


def live_projections(config: ConfigSource) -> list[Projection]:
    """The instances a batch runs, in order (the daemon's, the tests' pipeline's and
    the benchmark's: one list)."""
    return [s.make(config) for s in sorted(SPECS, key=lambda s: s.order)
            if s.make is not None]


def gauges() -> tuple[GaugeQuery, ...]:
    """Every projection's gauges, for the stats export."""
    return tuple(g for s in SPECS for g in s.gauges)


def first_sync_modules() -> tuple[tuple[Side, str], ...]:
    """What the first sync captures for the projections, beyond the synced modules."""
    # Once each, though two projections read it (the board and the statistics read leads).
    return tuple(dict.fromkeys(pair for s in SPECS for pair in s.first_sync))
