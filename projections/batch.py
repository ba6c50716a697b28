"""One consumed batch, one PostgreSQL transaction: the exactly-once core.

Inside a single transaction the batch's events are appended to the durable
event log (a duplicate event id is ignored), the *new* ones are handed to
every projection, and the consumed offsets are moved forward by
compare-and-set from the offsets the batch started at. If another consumer
has moved an offset meanwhile (this one was fenced by a rebalance), the
whole transaction rolls back and nothing of the batch is visible.

Kafka's own offset commit is advisory only; the offsets here are the truth.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from projections.db import Conn
from projections.events import MODULES, ChangeEvent, InvalidEvent, decode_event
from projections.ledger import Outcome, record_outcomes
from projections.stores.outbox import Outbox

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Message:
    """A consumed message as plain data (no Kafka client types)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as recorded in the event log: its sequence number and the event."""

    seq: int
    event: ChangeEvent


@dataclass(frozen=True, slots=True)
class ProjectionReport:
    """What one call of ``Projection.apply`` reports: the events it could not apply
    (each recorded in the failure log, inside the same transaction). A value returned
    per call, never state kept on the projection, so concurrent callers (the consumer
    loop, the resume drain) each read their own."""

    problems: tuple[Outcome, ...] = ()


NOTHING_TO_REPORT = ProjectionReport()


class Projection(Protocol):
    """A projection consumes newly logged events inside the batch transaction.

    Contract: ``apply`` sees each event at most once per live run (first
    delivery only), in event-log order; it must derive time only from the
    events themselves so that a replay rebuilds exactly the same rows. It returns
    its report of this call (``ProjectionReport``; None for a projection that never
    has anything to report); the consumer loop logs and counts the problems once
    the transaction has committed. A projection whose ``apply`` reads only the
    batch's events and its own tables says so with a class attribute
    ``reads_events_only = True``: it may then run while the sync plans
    (``PlansBeside``).
    """

    name: str

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]
                    ) -> ProjectionReport | None: ...


Beside = Callable[[], Awaitable[None]]
"""The projections a planner runs while it plans (``apply_projections``)."""


@runtime_checkable
class PlansBeside(Projection, Protocol):
    """A projection whose batch reads, then plans in Python alone, then writes (the
    sync). ``apply_beside`` is its ``apply`` that also runs ``beside`` exactly once,
    after its reads and before its writes, while it plans: so the statements of the
    projections in ``beside`` execute in PostgreSQL while its Python decides. Those
    projections must read only the batch's events and their own tables
    (``reads_events_only = True``): nothing the planner reads or writes. The
    connection is theirs while it plans (planning makes no statement); every lock
    they take comes after the planner's reads' locks and before its writes', in every
    batch (the order that keeps two replicas from deadlocking)."""

    async def apply_beside(self, conn: Conn, events: Sequence[LoggedEvent],
                           beside: Beside) -> ProjectionReport | None: ...


class Fenced(Exception):
    """A stored offset no longer equals where this batch started."""

    def __init__(self, tp: TopicPartition) -> None:
        super().__init__(f"offset of {tp[0]}[{tp[1]}] was moved by another consumer")
        self.tp = tp


@dataclass
class BatchOutcome:
    applied: list[LoggedEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[Message, InvalidEvent]] = field(default_factory=list)
    fenced: TopicPartition | None = None
    problems: list[Outcome] = field(default_factory=list)
    """Events a projection could not apply (their ``ProjectionReport``s, in order)."""


# The batch reaches the event log through a staging table filled with COPY: about half
# the work of one INSERT from a dozen arrays (in Python, which encodes the arrays, and
# in PostgreSQL), and the INSERT from it keeps ON CONFLICT and RETURNING. The table is
# the session's own and empties at every commit.
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS syncd_event_stage (
    ord integer, event_id uuid, source text, module text, record_id text, op text,
    origin text, modified_at timestamptz, captured_at timestamptz, payload json,
    kafka_topic text, kafka_partition integer, kafka_offset bigint
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("ord", "event_id", "source", "module", "record_id", "op", "origin",
                  "modified_at", "captured_at", "payload", "kafka_topic", "kafka_partition",
                  "kafka_offset")
_INSERT_EVENTS = """
INSERT INTO syncd.event_log (event_id, source, module, record_id, op, origin, modified_at,
    captured_at, payload, kafka_topic, kafka_partition, kafka_offset)
SELECT event_id, source, module, record_id, op, origin, modified_at, captured_at, payload,
    kafka_topic, kafka_partition, kafka_offset
FROM syncd_event_stage ORDER BY ord
ON CONFLICT (event_id) DO NOTHING
RETURNING seq, event_id
"""

APPLY_LOCK = 0x5359_4E43_4150_504C  # "SYNCAPPL"
"""Advisory lock key. Every batch transaction takes it *shared*, first, before any
other lock; a replay that writes live projections in place (``projections.replay``)
takes it *exclusively*, which waits for the batches in flight and holds new ones at
their start, where they hold nothing the replay could be waiting for."""

_CAS_OFFSET = """
UPDATE syncd.consumer_offsets SET next_offset = $4, updated_at = now()
WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5
"""



def decode_batch(
    messages: Sequence[Message],
) -> tuple[list[tuple[Message, ChangeEvent]], list[tuple[Message, InvalidEvent]]]:
    good: list[tuple[Message, ChangeEvent]] = []
    bad: list[tuple[Message, InvalidEvent]] = []
    for message in messages:
        try:
            good.append((message, decode_event(message.value)))
        except InvalidEvent as err:
            bad.append((message, err))
    return good, bad


async def append_to_log(
    conn: Conn, decoded: Sequence[tuple[Message, ChangeEvent]]
) -> list[LoggedEvent]:
    """Append to the event log; return only the events that were new, in log order."""
    if not decoded:
        return []
    if not conn.is_in_transaction():  # the staging table empties at every commit
        raise RuntimeError("append_to_log must run inside the batch transaction")
    staged: list[tuple[object, ...]] = []
    seen: set[object] = set()
    for message, event in decoded:
        if event.event_id in seen:  # the same event twice in one batch
            continue
        seen.add(event.event_id)
        staged.append((
            len(staged), event.event_id, event.source, event.module, event.record_id,
            event.op, event.origin, event.modified_at, event.captured_at,
            (message.value or b"").decode(), message.topic, message.partition,
            message.offset,
        ))
    await conn.execute(_STAGE)
    await conn.copy_records_to_table("syncd_event_stage", records=staged,
                                     columns=_STAGE_COLUMNS)
    rows = await conn.fetch(_INSERT_EVENTS)
    by_id = {event.event_id: event for _, event in decoded}
    logged = [LoggedEvent(row["seq"], by_id[row["event_id"]]) for row in rows]
    logged.sort(key=lambda item: item.seq)
    return logged


async def apply_batch(
    conn: Conn,
    *,
    group_id: str,
    messages: Sequence[Message],
    starts: dict[TopicPartition, int],
    projections: Sequence[Projection],
) -> BatchOutcome:
    """Apply one batch exactly once, or roll it back entirely when fenced."""
    decoded, rejected = decode_batch(messages)
    ends: dict[TopicPartition, int] = {}
    for message in messages:
        tp = (message.topic, message.partition)
        ends[tp] = max(ends.get(tp, -1), message.offset + 1)
    outcome = BatchOutcome(rejected=rejected)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", APPLY_LOCK)
            for tp, end in sorted(ends.items()):
                status = await conn.execute(_CAS_OFFSET, group_id, tp[0], tp[1], end, starts[tp])
                if status != "UPDATE 1":
                    raise Fenced(tp)
            logged = await append_to_log(conn, decoded)
            await release_outbox_rows(conn, decoded)
            if rejected:
                # A captured change that does not decode must leave its outbox too,
                # or the relay would send it again for ever.
                await release_rejected_rows(conn, rejected)
            outcome.duplicates = len(decoded) - len(logged)
            if rejected:
                await record_rejected(conn, rejected)
            for report in await apply_projections(conn, logged, projections):
                if report is not None:
                    outcome.problems.extend(report.problems)
            outcome.applied = logged
    except Fenced as fenced:
        return BatchOutcome(fenced=fenced.tp)
    return outcome


async def apply_projections(conn: Conn, logged: list[LoggedEvent],
                            projections: Sequence[Projection]
                            ) -> list[ProjectionReport | None]:
    """Every projection on the batch's new events, in the list's order, with one overlap:
    the projections marked ``reads_events_only`` that directly follow one that plans
    (``PlansBeside``: the sync) run while it plans, so their statements execute in
    PostgreSQL while its Python decides (issue 19, item 2; docs/performance.md). Their
    reports come after the planner's."""
    reports: list[ProjectionReport | None] = []
    index = 0
    while index < len(projections):
        projection = projections[index]
        index += 1
        if not isinstance(projection, PlansBeside):
            reports.append(await projection.apply(conn, logged))
            continue
        group: list[Projection] = []
        while index < len(projections) and getattr(projections[index], "reads_events_only",
                                                   False):
            group.append(projections[index])
            index += 1
        beside_reports: list[ProjectionReport | None] = []

        async def beside(group: list[Projection] = group,
                         out: list[ProjectionReport | None] = beside_reports) -> None:
            for member in group:
                out.append(await member.apply(conn, logged))

        reports.append(await projection.apply_beside(conn, logged, beside))
        reports.extend(beside_reports)
    return reports


async def stored_offsets(
    conn: Conn, group_id: str, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM syncd.consumer_offsets"
        " WHERE group_id = $1 AND (topic, partition) IN"
        " (SELECT * FROM unnest($2::text[], $3::int[]))",
        group_id, [t for t, _ in tps], [p for _, p in tps],
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def reset_offset(conn: Conn, group_id: str, tp: TopicPartition,
                       offset: int) -> None:
    """Set a partition's stored offset unconditionally (first assignment, broker reset)."""
    await conn.execute(
        "INSERT INTO syncd.consumer_offsets (group_id, topic, partition, next_offset)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, topic, partition)"
        " DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        group_id, tp[0], tp[1], offset,
    )


def _best_effort_identity(raw: bytes) -> tuple[str, str, str, dt.datetime | None]:
    """Source, module, record id and time of a rejected event, as far as they can be read."""
    digest = "raw:" + hashlib.sha256(raw).hexdigest()[:32]
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "unknown", "unknown", digest, None
    if not isinstance(data, dict):
        return "unknown", "unknown", digest, None
    source = data.get("source") if data.get("source") in ("desk", "crm") else "unknown"
    module = data.get("module") if data.get("module") in MODULES else "unknown"
    record = data.get("record_id")
    record_id = record[:200] if isinstance(record, str) and record else digest
    moment = None
    with contextlib.suppress(ValueError):
        moment = dt.datetime.fromisoformat(str(data.get("captured_at")))
    if moment is not None and moment.tzinfo is None:
        moment = None
    return str(source), str(module), record_id, moment


async def record_rejected(conn: Conn, rejected: Sequence[tuple[Message, InvalidEvent]]) -> None:
    """Undecodable events land in the failure log with their raw bytes (never block)."""
    outcomes = []
    for message, err in rejected:
        raw = message.value or b""
        source, module, record_id, moment = _best_effort_identity(raw)
        outcomes.append(Outcome(None, None, source, module, record_id,
                                moment or dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                                "failed", err.reason, err.detail, raw))
    await record_outcomes(conn, outcomes)


async def release_outbox_rows(conn: Conn, decoded: Sequence[tuple[Message, ChangeEvent]]) -> None:
    """The event log now holds these events: their outbox rows may go (counted when the
    first sync's: an event's origin is its row's)."""
    for source in ("desk", "crm"):
        mine = [(message, event) for message, event in decoded if event.source == source]
        await Outbox(conn, source).release(
            [(event.event_id, message.partition) for message, event in mine],
            imports=any(event.origin == "import" for _, event in mine))


async def release_rejected_rows(conn: Conn, rejected: Sequence[tuple[Message, InvalidEvent]]
                                ) -> None:
    """Outbox rows of rejected events (their id read as far as the bytes allow) may go:
    the failure log now holds them, raw."""
    ids: list[tuple[uuid.UUID, int]] = []
    for message, _err in rejected:
        try:
            data = json.loads(message.value or b"")
            ids.append((uuid.UUID(str(data["event_id"])), message.partition))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    for source in ("desk", "crm"):
        await Outbox(conn, source).release(ids)
