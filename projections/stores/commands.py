"""The command outbox (``sync.commands``): writes decided for a store outside the
batch transaction, waiting for that store's writer (``adapters.command_writer``).

A batch enqueues in its own transaction, so a write is recorded exactly when its
event, links and offsets are; the writer takes each record's oldest command (one
record's writes land in the order they were decided), delivers it, and settles it
in one transaction with what came of it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from projections.catalog import Side
from projections.db import Conn, loads_json


@dataclass(frozen=True, slots=True)
class Cause:
    """The event a write was decided for: a write that fails for good fails it."""

    event_id: uuid.UUID
    source: str
    module: str
    record_id: str


@dataclass(frozen=True, slots=True)
class Command:
    store: Side
    module: str
    record_key: str
    """What orders one record's commands: the link's key, stable before the target
    has given the record an id."""
    op: str  # create | update
    payload: dict[str, Any]
    record_id: str | None = None
    seen: dt.datetime | None = None
    cause: Cause | None = None
    idempotency_key: uuid.UUID = field(default_factory=uuid.uuid4)
    seq: int | None = None
    attempts: int = 0
    enqueued_at: dt.datetime | None = None


NOTIFY_CHANNEL = "syncd_commands"
"""Woken with the store as payload when commands are enqueued (its writer listens)."""


async def enqueue(conn: Conn, commands: Sequence[Command]) -> None:
    """Record ``commands`` (in the caller's transaction: the batch's) and wake their
    stores' writers when it commits."""
    if not commands:
        return
    await conn.executemany(
        "INSERT INTO sync.commands (store, module, record_key, idempotency_key, op,"
        " record_id, payload, seen, cause_event, cause_source, cause_module, cause_record)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12)",
        [(c.store, c.module, c.record_key, c.idempotency_key, c.op, c.record_id,
          msgspec.json.encode(c.payload).decode(), c.seen,
          *((c.cause.event_id, c.cause.source, c.cause.module, c.cause.record_id)
            if c.cause else (None, None, None, None))) for c in commands])
    for store in sorted({c.store for c in commands}):
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, store)


async def due_heads(conn: Conn, store: Side, *, limit: int) -> list[Command]:
    """Up to ``limit`` records' oldest commands whose next attempt is due, oldest
    first. A record whose oldest command waits for a retry has none taken: its later
    commands wait behind it. Walks the due commands in order and stops at ``limit``
    heads (each checked for an older command of its record through
    ``commands_per_record``), rather than grouping the whole queue."""
    rows = await conn.fetch(
        "SELECT * FROM sync.commands c WHERE store = $1"
        " AND next_attempt_at <= clock_timestamp() AND NOT EXISTS (SELECT 1 FROM"
        " sync.commands o WHERE o.store = c.store AND o.record_key = c.record_key"
        " AND o.seq < c.seq) ORDER BY seq LIMIT $2", store, limit)
    return [_command(row) for row in rows]


async def next_due_in(conn: Conn, store: Side) -> float | None:
    """Seconds until the store's next record's head command is due (0 or less: one
    is), or None when its queue is empty. Asked when the writer is idle only."""
    due = await conn.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())"
        " FROM sync.commands c WHERE store = $1 AND NOT EXISTS (SELECT 1 FROM"
        " sync.commands o WHERE o.store = c.store AND o.record_key = c.record_key"
        " AND o.seq < c.seq)", store)
    return None if due is None else float(due)


def _command(row: Any) -> Command:
    cause = None if row["cause_event"] is None else Cause(
        row["cause_event"], row["cause_source"], row["cause_module"], row["cause_record"])
    return Command(store=row["store"], module=row["module"], record_key=row["record_key"],
                   op=row["op"], payload=loads_json(row["payload"]),
                   record_id=row["record_id"], seen=row["seen"], cause=cause,
                   idempotency_key=row["idempotency_key"], seq=row["seq"],
                   attempts=row["attempts"], enqueued_at=row["enqueued_at"])


async def done(conn: Conn, command: Command) -> None:
    """The command landed or failed for good: it goes."""
    await conn.execute("DELETE FROM sync.commands WHERE seq = $1", command.seq)


async def landed(conn: Conn, command: Command, *, record_id: str,
                 modified_time: dt.datetime) -> None:
    """``command`` landed: the record's later commands are guarded by the time it gave
    the record (the sync's own write is seen) and know its id."""
    await conn.execute(
        "UPDATE sync.commands SET seen = greatest(seen, $3),"
        " record_id = coalesce(record_id, $4)"
        " WHERE store = $1 AND record_key = $2", command.store, command.record_key,
        modified_time, record_id)


async def forget_held(conn: Conn, command: Command) -> None:
    """``command`` did not land (refused, or given up): the link no longer claims to
    know what the store holds of the record, so the sync writes it again next time."""
    column = {"desk": "desk", "crm": "crm"}[command.store]
    await conn.execute(
        f"UPDATE sync.links SET {column}_fp = NULL WHERE module = $1 AND {column}_id = $2",
        command.module, command.record_key)


async def retry_later(conn: Conn, command: Command, *, after: float, error: str) -> None:
    """One more failed attempt; the next in ``after`` seconds."""
    await conn.execute(
        "UPDATE sync.commands SET attempts = attempts + 1, last_error = $2,"
        " next_attempt_at = clock_timestamp() + make_interval(secs => $3)"
        " WHERE seq = $1", command.seq, error[:1000], after)


@dataclass(frozen=True, slots=True)
class Depth:
    queued: int
    oldest_age: float  # seconds since the oldest command was enqueued, 0 when none


async def depth(conn: Conn, store: Side) -> Depth:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM clock_timestamp()"
        " - min(enqueued_at)), 0) AS age FROM sync.commands WHERE store = $1", store)
    assert row is not None
    return Depth(queued=int(row["n"]), oldest_age=float(row["age"]))
