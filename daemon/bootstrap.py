"""The composition root of the event pipeline: ``build`` wires the projections,
the consumer loop, the outbox relays, the resume drain and a remote store's
command writer and capture (both after its access checks passed), once, for ``syncd run``
(``daemon.app``), the tests' pipeline (``tests/support/pipeline.py``) and the
benchmark (``ops/bench``).

What differs between them is passed in as ``Overrides``: hooks for tools (a
callback when a batch commits, when a relay has sent) and the projection list of
a test or a benchmark scenario. Nothing connects here: the caller owns the pool
and starts the root tasks (``Pipeline.roots``) under its supervisor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from adapters.command_writer import CommandWriter
from adapters.credit_ledger import CreditLedger
from adapters.relay import OutboxRelay
from adapters.remote_store import RemoteStore
from adapters.signal_publisher import SignalPublisher
from adapters.store_access import AccessGate
from daemon.consumer import BatchHook, ConsumerLoop
from daemon.resume_drain import drain_deferred
from daemon.runtime.services import Services
from daemon.runtime.settings import Settings
from daemon.runtime.supervisor import RootTask
from projections import registry
from projections.batch import Projection
from projections.catalog import Side
from projections.stores.kinds import StoreKinds
from projections.sync import SyncProjection
from projections.ticket_actions import TicketActionsProjection

P = TypeVar("P", bound=Projection)

SOURCES = ("desk", "crm")
"""The stores whose outboxes a relay each sends to the topic."""

SentHook = Callable[[str, list[int]], None]
"""``Overrides(on_sent=…)``: called with the relay's source and the outbox seqs of the
rows it has just sent (acknowledged by the broker; a row sent again comes again)."""


@dataclass(frozen=True)
class Overrides:
    """What a caller changes in the daemon's wiring. The defaults are ``syncd run``'s."""

    projections: Sequence[Projection] | None = None
    """The projections a batch runs, in order, instead of the registry's; the sync
    projection must be one of them."""
    extra_projections: Sequence[Projection] = ()
    """Run after the others (a test's own projection)."""
    on_batch: BatchHook | None = None
    """See ``ConsumerLoop``: the benchmark times batches with it."""
    on_sent: SentHook | None = None
    stall_after: float = 30.0
    """Seconds without progress after which the consumer loop is considered stalled."""
    drain_retry_after: float = 0.5
    """Seconds between the resume drain's rounds when there is nothing to drain."""
    remote: Mapping[Side, RemoteStore] = field(default_factory=dict)
    """Sides that are remote stores, written through the command outbox by a writer
    of their own (``adapters.command_writer``); the others are the embedded stores."""


NO_OVERRIDES = Overrides()


@dataclass
class Pipeline:
    """The parts that move events: capture outboxes → relays → Kafka → consumer loop
    → projections, and the resume drain beside them."""

    settings: Settings
    pool: asyncpg.Pool
    sync: SyncProjection
    projections: list[Projection]
    consumer: ConsumerLoop
    relays: dict[str, OutboxRelay] = field(default_factory=dict)
    writers: dict[Side, CommandWriter] = field(default_factory=dict)
    captures: dict[Side, RootTask] = field(default_factory=dict)
    ledgers: dict[Side, CreditLedger] = field(default_factory=dict)
    gates: dict[Side, AccessGate] = field(default_factory=dict)
    """Remote stores' checks of their access, which their writers and captures wait for."""
    drain_retry_after: float = 0.5
    publisher: SignalPublisher | None = None
    """Sends the sales signals to their topic (TICKET-09)."""

    def projection(self, kind: type[P]) -> P:
        """The running instance of a projection class (tests look into theirs)."""
        return next(p for p in self.projections if isinstance(p, kind))

    def resume_drain(self) -> RootTask:
        return functools.partial(drain_deferred, self.pool, self.sync,
                                 topic=self.settings.events_topic,
                                 retry_after=self.drain_retry_after)

    def roots(self) -> dict[str, RootTask]:
        """Every part as a root task for ``supervise``, by its name in the logs."""
        roots: dict[str, RootTask] = {"projector": self.consumer.run,
                                      "resume-drain": self.resume_drain()}
        for source, relay in self.relays.items():
            roots[f"relay-{source}"] = relay.run
        for store, gate in self.gates.items():
            roots[f"access-{store}"] = gate.run
        for store, writer in self.writers.items():
            roots[f"writer-{store}"] = self._gated(store, writer.run)
        for store, capture in self.captures.items():
            roots[f"capture-{store}"] = self._gated(store, capture)
        for store, ledger in self.ledgers.items():
            roots[f"credits-{store}"] = ledger.run
        if self.publisher is not None:
            roots["signal-publisher"] = self.publisher.run
        return roots

    def _gated(self, store: Side, task: RootTask) -> RootTask:
        gate = self.gates.get(store)
        return task if gate is None else gate.then(task)


def build(settings: Settings, *, services: Services, pool: asyncpg.Pool,
          config: registry.ConfigSource, overrides: Overrides = NO_OVERRIDES) -> Pipeline:
    """Wire the pipeline for ``settings`` on ``services`` (the database's and the
    broker's addresses) and ``pool`` (the batches' connections). ``config`` is read
    by the sync projection once per batch."""
    if overrides.projections is None:
        projections = registry.live_projections(config)
    else:
        projections = list(overrides.projections)
    projections += overrides.extra_projections
    sync = next((p for p in projections if isinstance(p, SyncProjection)), None)
    if sync is None:
        raise ValueError("the projections must include the sync projection")
    # The registry makes the sync projection for the embedded stores; remote sides
    # are read and written through their own adapters.
    sync.stores = StoreKinds(remote={side: store.reads
                                     for side, store in overrides.remote.items()})
    # The registry makes the ticket actions' projection for a rebuild, which never
    # writes the desk; live, it applies the actions to the desk this pipeline has.
    for projection in projections:
        if isinstance(projection, TicketActionsProjection):
            projection.mode = "hosted" if "desk" in overrides.remote else "embedded"
    writers = {side: CommandWriter(pool, store.target, concurrency=store.concurrency,
                                   backoff=store.backoff, recheck=store.recheck,
                                   actions=None if store.actions is None
                                   else store.actions(pool))
               for side, store in overrides.remote.items()}
    captures = {side: store.capture(pool) for side, store in overrides.remote.items()
                if store.capture is not None}
    ledgers = {side: CreditLedger(pool, side, store.budget)
               for side, store in overrides.remote.items()
               if store.budget is not None and store.budget.credits is not None}
    gates = {side: AccessGate(side, store.access) for side, store in overrides.remote.items()
             if store.access is not None}
    security = settings.kafka_security()  # every Kafka client of the pipeline
    consumer = ConsumerLoop(
        pool=pool, bootstrap=services.bootstrap, topic=settings.events_topic,
        group_id=settings.group_id, projections=projections,
        batch_max=settings.batch_max,
        session_timeout_ms=settings.session_timeout_ms(embedded=services.broker is not None),
        stall_after=overrides.stall_after, on_batch=overrides.on_batch, security=security)
    idempotence = settings.kafka_idempotent(embedded=services.broker is not None)
    on_sent = overrides.on_sent
    relays = {source: OutboxRelay(
        dsn=services.dsn, bootstrap=services.bootstrap, topic=settings.events_topic,
        source=source, partitions=settings.partitions,
        poll_interval=settings.relay_poll_interval,
        resend_after=settings.relay_resend_after, batch_max=settings.batch_max,
        on_sent=None if on_sent is None else functools.partial(on_sent, source),
        security=security, idempotence=idempotence, group_id=settings.group_id)
        for source in SOURCES}
    publisher = SignalPublisher(
        pool=pool, bootstrap=services.bootstrap, topic=settings.sales_signals_topic,
        partitions=settings.partitions, poll_interval=settings.relay_poll_interval,
        security=security, idempotent=idempotence is True)
    return Pipeline(settings=settings, pool=pool, sync=sync, projections=projections,
                    consumer=consumer, relays=relays, writers=writers, captures=captures,
                    ledgers=ledgers, gates=gates,
                    drain_retry_after=overrides.drain_retry_after, publisher=publisher)
