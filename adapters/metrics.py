"""Every Prometheus metric of syncd, in one place.

Names follow Prometheus conventions (base units, ``_total`` counters,
``_seconds`` histograms). Label values are bounded: sources, modules,
operations, reasons, partitions, departments and columns; never record ids
or e-mail addresses.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

_SOURCE_MODULE_OP = ("source", "module", "operation")

BUILD_INFO = Info("syncd_build", "Version of the running syncd.")
try:
    _VERSION = version("deskcrm-sync")
except PackageNotFoundError:  # running from a source tree that was not installed
    _VERSION = "unknown"
BUILD_INFO.info({"version": _VERSION})

EVENTS_CAPTURED = Counter(
    "syncd_events_captured_total", "Changes read from a store's outbox by the relay.",
    ["source"],
)
EVENTS_PRODUCED = Counter(
    "syncd_events_produced_total", "Change events acknowledged by Kafka (acks=all).",
    ["source"],
)
SIGNALS_PUBLISHED = Counter(
    "syncd_signals_published_total",
    "Sales signals acknowledged by Kafka (acks=all) on the signals topic.",
)
EVENTS_CONSUMED = Counter(
    "syncd_events_consumed_total", "Messages consumed from Kafka by the projector.",
    ["topic"],
)
EVENTS_APPLIED = Counter(
    "syncd_events_applied_total", "Change events applied by the projector (first delivery).",
    _SOURCE_MODULE_OP,
)
EVENTS_DUPLICATE = Counter(
    "syncd_events_duplicate_total", "Redelivered events already in the event log, skipped.",
)
EVENTS_FAILED = Counter(
    "syncd_events_failed_total", "Events that landed in the failure log.",
    ["source", "module", "reason"],
)
EVENTS_REJECTED = Counter(
    "syncd_events_rejected_total", "Messages that did not decode into a change event.",
)
BATCH_SIZE = Histogram(
    "syncd_batch_size_events", "Events per projector batch.",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 50000),
)
BATCH_SECONDS = Histogram(
    "syncd_batch_transaction_seconds", "Duration of one projector batch transaction.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SYNC_LATENCY = Histogram(
    "syncd_sync_latency_seconds",
    "From the source's modification time to the change applied by the projector.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FENCED_BATCHES = Counter(
    "syncd_batches_fenced_total",
    "Batches rolled back because another consumer had moved the stored offset.",
)
CONFLICTED_BATCHES = Counter(
    "syncd_batches_conflicted_total",
    "Batches rolled back by a deadlock or serialisation failure (by SQLSTATE: 40P01,"
    " 40001) and read again from the stored offsets.",
    ["sqlstate"],
)
STATS_EXPORT_FAILURES = Counter(
    "syncd_stats_export_failures_total",
    "Rounds of the database gauges' export that failed (the gauges keep their last"
    " values until one succeeds).",
)
CONSUMER_RESTARTS = Counter(
    "syncd_consumer_restarts_total",
    "Consumers replaced because they stopped making progress (lost by their group).",
)
CONSUMER_LAG = Gauge(
    "syncd_consumer_lag_messages", "End offset minus stored offset, per partition.",
    ["topic", "partition"],
)
OUTBOX_BACKLOG = Gauge(
    "syncd_outbox_backlog_events", "Outbox rows not yet recorded in the event log.",
    ["source"],
)
COMMANDS_QUEUED = Gauge(
    "syncd_commands_queued", "Writes in a remote store's command outbox, not yet landed.",
    ["store"],
)
COMMAND_OLDEST_AGE = Gauge(
    "syncd_command_oldest_age_seconds",
    "Age of the oldest write waiting in a remote store's command outbox (0 when empty).",
    ["store"],
)
COMMAND_ATTEMPTS = Counter(
    "syncd_command_attempts_total", "Deliveries of a remote store's writes, by result"
    " (landed, transient: retried later, refused: in the failure log, expired: failed"
    " as target unreachable after the retry budget).", ["store", "result"],
)
STORE_WAITS = Counter(
    "syncd_batch_store_waits_total",
    "Batches rolled back to be read again because a remote store they had to read"
    " (match candidates, records) did not answer.",
)
STORE_UNAVAILABLE = Gauge(
    "syncd_store_unavailable",
    "1 while a remote store takes no write until a person acts (credentials, a scope"
    " or the licence refused); its writes wait, none fails.", ["store"],
)
STORE_PARKED = Gauge(
    "syncd_store_parked",
    "1 while a remote store's calls wait for API credits to return (the daemon's credit"
    " budget); its writes wait, none fails.", ["store"],
)
STORE_CREDITS_SPENT = Gauge(
    "syncd_store_credits_spent",
    "API credits the daemon spent on a remote store in the budget's window.", ["store"],
)
COMMAND_HELD_SECONDS = Counter(
    "syncd_command_held_seconds_total",
    "Seconds a remote store's writer held all writes back because the target asked"
    " for it (Retry-After).", ["store"],
)
COMMAND_DELIVERY_SECONDS = Histogram(
    "syncd_command_delivery_seconds", "Time of a write that landed on a remote store.",
    ["store"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FAILURES_OPEN = Gauge(
    "syncd_failures_open", "Open entries in the failure log, by reason.", ["reason"],
)
HISTORY_RECORDS = Gauge(
    "syncd_history_records",
    "Seven-day sync history counts, by direction, record type and outcome.",
    ["direction", "module", "outcome"],
)
HANDSHAKE_TICKETS = Gauge(
    "syncd_handshake_tickets", "Open tickets on the handshake board.",
    ["department", "column"],
)
PROJECTION_GAUGES: dict[str, Gauge] = {
    metric.name: gauge for gauge in (FAILURES_OPEN, HISTORY_RECORDS, HANDSHAKE_TICKETS)
    for metric in gauge.describe()}
"""The gauges the projections' specifications name (``projections.registry``): the
stats export sets them from the queries there."""
PAUSED = Gauge("syncd_paused", "1 while sync is paused, else 0.")
READY = Gauge("syncd_ready", "1 while the daemon is ready, else 0.")
REPLAY_PROGRESS = Gauge("syncd_replay_progress_ratio", "Progress of a running replay, 0 to 1.")
REMOTE_FIRST_SYNC_RECORDS = Counter(
    "syncd_remote_first_sync_records_total",
    "Records a remote store's bulk read brought to the first sync.", ["store", "module"],
)
INITIAL_SYNC_PROGRESS = Gauge(
    "syncd_initial_sync_progress_ratio", "Progress of the first sync, 0 to 1.",
)
ROOT_TASK_FAILURES = Counter(
    "syncd_root_task_failures_total", "Root tasks that exited unexpectedly.", ["task"],
)
