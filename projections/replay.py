"""Replay (OPS-07, OWN-03): rebuild projections from the durable record, or apply a
window of the event log to the stores again, exactly, with a dry run.

What is a projection of what decides how each is replayed:

* The failure log (``sync.failures``) and the history (``sync.history``) are folds
  of ``sync.outcomes``, the per-event record of what the sync decided. They are
  rebuilt into fresh tables in a scratch schema, without holding any lock the
  daemon needs; then, in one short transaction that holds back every writer of
  outcomes (``LOCK TABLE sync.outcomes IN EXCLUSIVE MODE``), the outcomes that
  arrived meanwhile are folded in too and only the *difference* between the fresh
  and the live tables is written into the live ones. Readers see the old rows
  until that commit and the new ones after it (MVCC), never a half-built table,
  and no reader is ever blocked: renaming tables would need an ACCESS EXCLUSIVE
  lock and would lose index names, sequence ownership and grants.
* A projection of the event log (``rebuild == "events"`` in
  ``projections.registry``: the handshake board) names its tables in its SQL, so
  it is rebuilt in place (``rebuild_from_events``), in one transaction that holds
  ``APPLY_LOCK`` exclusively: the projector's batches wait (they take it shared,
  first), readers keep seeing the old rows until the commit, and a rebuild that
  finds nothing to change rolls back, leaving the live stream tables alone. From
  the event log the board is filled set-based from each record's last event
  (``projections.handshake_rebuild``); from Kafka every event goes through a fresh
  instance of the live projection. Several are rebuilt side by side
  (``rebuild_side_by_side``): each on a connection of its own, the lock held for all
  of them by the caller's connection, the ledger's fold beside them.
* The mapping table (``sync.links``) and the stores are *not* projections of the
  log: matching depended on what the stores held at the time. They are never
  rebuilt; a window re-apply (``reapply``) writes the stores again from events
  that were applied before, through the sync's replay mode.

Safety: everything before the final transaction happens in scratch tables, and
each final transaction is all or nothing, so a replay killed at any point (even
SIGKILL) leaves the live projections as they were; the next replay drops the
scratch schema first. ``REPLAY_LOCK``, a session advisory lock, keeps two
replays from running at once. Nothing here reads the wall clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from projections.batch import APPLY_LOCK, LoggedEvent, Projection
from projections.catalog import SYNCED_MODULES
from projections.config import SyncConfig
from projections.db import Conn
from projections.events import ChangeEvent, InvalidEvent, decode_event
from projections.ledger import LedgerTables, fold_range
from projections.registry import SPECS, ProjectionSpec
from projections.sync import SyncProjection

REPLAY_LOCK = 0x5359_4E43_5245_504C  # "SYNCREPL": one replay at a time (session lock)
SCRATCH = "syncd_replay"
"""Schema of a replay's fresh tables; dropped before and after every replay."""

LEDGER = tuple(spec.name for spec in SPECS if spec.rebuild == "outcomes")
"""The folds of ``sync.outcomes`` (``rebuild_ledger``): the failure log and the history."""

SAMPLES = 3
_SAFE_ID = re.compile(r"^[0-9]{1,18}$")

Progress = Callable[[str, int, int | None], None]
"""``(phase, done, total)``; ``total`` is None when unknown."""


def _quiet(_phase: str, _done: int, _total: int | None) -> None:
    return None


class ReplayError(Exception):
    """A replay that cannot run as asked; nothing was changed."""


@dataclass
class TableDiff:
    """Rows a replay adds to, changes in, and removes from one table, with samples."""

    table: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed


@dataclass
class Report:
    """What a replay changed (or, in a dry run, would change)."""

    what: str
    dry_run: bool
    source: str = "event log"
    events: int = 0
    unit: str = "events"  # what ``events`` counts
    tables: list[TableDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(t.total for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what, "dry_run": self.dry_run, "source": self.source,
            "events": self.events, "unit": self.unit, "changes": self.changes,
            "notes": self.notes,
            "tables": [{"table": t.table, "added": t.added, "changed": t.changed,
                        "removed": t.removed, "samples": t.samples} for t in self.tables],
        }


# -- the lock -------------------------------------------------------------------


async def try_lock(conn: Conn) -> bool:
    """Take the replay lock for this session, or return False when another holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", REPLAY_LOCK))


async def lock_holder(conn: Conn) -> int | None:
    """The backend pid holding the replay lock, if any (for a useful refusal)."""
    pid = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1", REPLAY_LOCK)
    return int(pid) if pid is not None else None


async def unlock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", REPLAY_LOCK)


# -- event sources --------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which logged events a re-apply takes: captured in ``[since, until)``, of one
    source and one module when given. No bound at all is every event."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    source: str | None = None
    module: str | None = None

    def admits(self, event: ChangeEvent) -> bool:
        return ((self.since is None or event.captured_at >= self.since)
                and (self.until is None or event.captured_at < self.until)
                and (self.source is None or event.source == self.source)
                and (self.module is None or event.module == self.module))

    def describe(self) -> str:
        parts = [f"since {self.since.isoformat()}" if self.since else "from the start",
                 f"until {self.until.isoformat()}" if self.until else "to the end"]
        if self.source:
            parts.append(f"source {self.source}")
        if self.module:
            parts.append(f"module {self.module}")
        return ", ".join(parts)


@dataclass
class Chunk:
    """Events to feed, in order, and how many source entries were read for them."""

    events: list[LoggedEvent]
    scanned: int


class EventSource(Protocol):
    """Where replayed events come from: the event log, or the Kafka topic.

    Contract: ``chunks`` yields events that the projector has applied already, each
    record's events in their original order; with ``applied_only`` it leaves out
    events the sync has not applied yet (queued while paused). It runs inside the
    caller's transaction, which holds ``APPLY_LOCK``, so nothing is appended meanwhile.
    """

    name: str

    async def total(self, conn: Conn, window: Window) -> int | None: ...

    def chunks(self, conn: Conn, window: Window, *, size: int,
               applied_only: bool) -> AsyncIterator[Chunk]: ...


class EventLogSource:
    """The durable event log in PostgreSQL, in ``seq`` order: the default source."""

    name = "event log"

    _WHERE = (" WHERE ($1::timestamptz IS NULL OR e.captured_at >= $1)"
              " AND ($2::timestamptz IS NULL OR e.captured_at < $2)"
              " AND ($3::text IS NULL OR e.source = $3) AND ($4::text IS NULL OR e.module = $4)"
              " AND (NOT $5 OR NOT EXISTS (SELECT 1 FROM sync.deferred d WHERE d.seq = e.seq))")

    def __init__(self) -> None:
        self.undecodable = 0

    async def total(self, conn: Conn, window: Window) -> int | None:
        count = await conn.fetchval(
            "SELECT count(*) FROM syncd.event_log e" + self._WHERE,
            window.since, window.until, window.source, window.module, False)
        return int(count)

    async def chunks(self, conn: Conn, window: Window, *, size: int,
                     applied_only: bool) -> AsyncIterator[Chunk]:
        last = 0
        while True:
            rows = await conn.fetch(
                "SELECT e.seq, e.payload::text AS payload FROM syncd.event_log e"
                + self._WHERE + " AND e.seq > $6 ORDER BY e.seq LIMIT $7",
                window.since, window.until, window.source, window.module, applied_only,
                last, size)
            if not rows:
                return
            events = []
            for row in rows:
                try:
                    events.append(LoggedEvent(row["seq"], decode_event(row["payload"].encode())))
                except InvalidEvent:
                    self.undecodable += 1  # logged under older rules; cannot be fed
            last = rows[-1]["seq"]
            yield Chunk(events, len(rows))


# -- comparing tables -----------------------------------------------------------

_counter = itertools.count()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def primary_key(conn: Conn, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = $1::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey::int2[], a.attnum)", table)
    if not rows:
        raise ReplayError(f"{table} has no primary key; replay compares tables by it")
    return [row["attname"] for row in rows]


def _display(row: dict[str, Any]) -> dict[str, Any]:
    """A row for people: long values (raw bytes, summaries) cut short."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        text = value if isinstance(value, str) else None
        out[name] = text[:60] + "…" if text is not None and len(text) > 60 else value
    return out


def _changed_columns(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {name: {"from": before.get(name), "to": after.get(name)}
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)}


async def compare(conn: Conn, *, live: str, fresh: str, key: Sequence[str], label: str,
                  apply: bool) -> TableDiff:
    """Compare ``fresh`` (what the table should hold) with ``live`` (what it holds), by
    ``key``; with ``apply``, make ``live`` equal to ``fresh`` by writing only the rows
    that differ. Runs inside the caller's transaction (temporary tables)."""
    n = next(_counter)
    gone, new = f"replay_gone_{n}", f"replay_new_{n}"
    await conn.execute(f"CREATE TEMP TABLE {new} ON COMMIT DROP AS"
                       f" SELECT * FROM {fresh} EXCEPT SELECT * FROM {live}")
    # Both tables have a primary key, so no row is there twice: with nothing new and as
    # many rows, nothing is gone either, and the second comparison (the costlier half
    # of a replay that changes nothing) is not made.
    unchanged = await conn.fetchval(
        f"SELECT NOT EXISTS (SELECT 1 FROM {new})"
        f" AND (SELECT count(*) FROM {live}) = (SELECT count(*) FROM {fresh})")
    if unchanged:
        return TableDiff(label, added=0, changed=0, removed=0)
    await conn.execute(f"CREATE TEMP TABLE {gone} ON COMMIT DROP AS"
                       f" SELECT * FROM {live} EXCEPT SELECT * FROM {fresh}")
    cols = ", ".join(_quote(k) for k in key)
    same = " AND ".join(f"g.{_quote(k)} = n.{_quote(k)}" for k in key)
    row = await conn.fetchrow(
        f"SELECT (SELECT count(*) FROM {new} n WHERE NOT EXISTS"
        f"         (SELECT 1 FROM {gone} g WHERE {same})) AS added,"
        f"       (SELECT count(*) FROM {new} n WHERE EXISTS"
        f"         (SELECT 1 FROM {gone} g WHERE {same})) AS changed,"
        f"       (SELECT count(*) FROM {gone} g WHERE NOT EXISTS"
        f"         (SELECT 1 FROM {new} n WHERE {same})) AS removed")
    assert row is not None
    diff = TableDiff(label, added=row["added"], changed=row["changed"], removed=row["removed"])
    if diff.total:
        order = ", ".join(f"n.{_quote(k)}" for k in key)
        for sample in await conn.fetch(
                f"SELECT to_jsonb(g) AS before, to_jsonb(n) AS after FROM {new} n"
                f" JOIN {gone} g ON {same} ORDER BY {order} LIMIT {SAMPLES}"):
            before, after = json.loads(sample["before"]), json.loads(sample["after"])
            diff.samples.append({"change": "changed", "key": {k: after[k] for k in key},
                                 "columns": _changed_columns(before, after)})
        for kind, table, other in (("added", new, gone), ("removed", gone, new)):
            alias_order = ", ".join(f"n.{_quote(k)}" for k in key)
            for sample in await conn.fetch(
                    f"SELECT to_jsonb(n) AS r FROM {table} n WHERE NOT EXISTS"
                    f" (SELECT 1 FROM {other} g WHERE {same}) ORDER BY {alias_order}"
                    f" LIMIT {SAMPLES}"):
                diff.samples.append({"change": kind, "row": _display(json.loads(sample["r"]))})
    if apply and diff.total:
        await conn.execute(f"DELETE FROM {live} WHERE ({cols}) IN (SELECT {cols} FROM {gone})")
        await conn.execute(f"INSERT INTO {live} SELECT * FROM {new}")
    return diff


# -- rebuilding the failure log and the history ---------------------------------

SCRATCH_LEDGER = LedgerTables(failures=f"{SCRATCH}.failures", history=f"{SCRATCH}.history")
LIVE_LEDGER = LedgerTables()


async def drop_scratch(conn: Conn) -> None:
    """Drop what an earlier, interrupted replay left behind (and our own, when done)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE")


async def rebuild_ledger(conn: Conn, names: Iterable[str], *, dry_run: bool,
                         progress: Progress = _quiet, chunk: int = 20_000) -> Report:
    """Rebuild the failure log and/or the history from ``sync.outcomes``.

    ``conn`` must not be inside a transaction: the fold runs in short transactions of
    its own against scratch tables, and only the last one touches the live tables.
    """
    wanted = [name for name in LEDGER if name in set(names)]
    report = Report(what="rebuild " + ", ".join(wanted) + " from sync.outcomes",
                    dry_run=dry_run, source="sync.outcomes", unit="outcomes")
    await drop_scratch(conn)
    await conn.execute(f"CREATE SCHEMA {SCRATCH}")
    for name, live in (("failures", LIVE_LEDGER.failures), ("history", LIVE_LEDGER.history)):
        await conn.execute(
            f"CREATE UNLOGGED TABLE {SCRATCH}.{name} (LIKE {live} INCLUDING ALL)")
    # Every outcome at or below the mark is committed: the lock waits for the
    # transactions that are writing outcomes, and outcome ids are drawn in them.
    async with conn.transaction():
        await conn.execute("LOCK TABLE sync.outcomes IN EXCLUSIVE MODE")
        mark = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM sync.outcomes"))
    total = int(await conn.fetchval("SELECT count(*) FROM sync.outcomes WHERE id <= $1", mark))
    done = 0
    progress("outcomes", 0, total)
    last = 0
    while last < mark:
        # Id ranges, one short transaction each: no snapshot held for the whole fold.
        upper = min(mark, last + chunk)
        async with conn.transaction():
            counted: list[int] = []
            await fold_range(conn, tables=SCRATCH_LEDGER, after=last, through=upper,
                             chunk=chunk, on_chunk=counted.append)
        done += sum(counted)
        last = upper
        progress("outcomes", done, total)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("LOCK TABLE sync.outcomes IN EXCLUSIVE MODE")
        caught_up: list[int] = []
        await fold_range(conn, tables=SCRATCH_LEDGER, after=mark, chunk=chunk,
                         on_chunk=caught_up.append)
        report.events = done + sum(caught_up)
        if caught_up:
            report.notes.append(f"{sum(caught_up)} outcome(s) recorded during the rebuild"
                                " were folded in before the swap")
        for name in wanted:
            live = getattr(LIVE_LEDGER, name)
            report.tables.append(await compare(
                conn, live=live, fresh=getattr(SCRATCH_LEDGER, name),
                key=await primary_key(conn, live), label=live, apply=not dry_run))
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()
    await drop_scratch(conn)
    progress("outcomes", report.events, report.events)
    return report


# -- rebuilding a projection of the event log --------------------------------------


async def _schema_tables(conn: Conn, schema: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {f"{schema}.{row['tablename']}" for row in rows}


async def rebuild_from_events(conn: Conn, spec: ProjectionSpec, source: EventSource, *,
                              dry_run: bool, progress: Progress = _quiet, chunk: int = 5_000,
                              config: Callable[[], SyncConfig] = SyncConfig,
                              per_event: bool = False, lock_held: bool = False) -> Report:
    """Rebuild a projection of the event log (``spec.rebuild == "events"``) in place,
    in one transaction: its state tables are emptied (``TRUNCATE`` for its
    ``private_tables``, ``DELETE`` for the others) and filled again, and the result is
    compared with what was there.

    From the event log, a projection with ``from_last_states`` is filled set-based
    from each record's last event, and one with ``fill`` likewise but into scratch
    copies, whose rows that differ are then written to its tables; otherwise
    (``per_event``, or from Kafka, whose records the set-based query cannot reach)
    every event is fed, in order, to a fresh instance.

    The projector's batches wait meanwhile (``APPLY_LOCK``, taken here, or with
    ``lock_held`` held by the caller on another connection until this returns:
    ``rebuild_side_by_side``), so no event is applied twice or missed; readers keep the
    old rows until the commit (a private table's readers, its batches alone, wait);
    a rebuild that finds nothing to change rolls back, leaving even the stream tables
    alone.
    """
    assert spec.rebuild == "events" and spec.make is not None, spec.name
    report = Report(what=f"rebuild {spec.name} from the " + source.name, dry_run=dry_run,
                    source=source.name)
    schemas = sorted({table.split(".")[0] for table in spec.tables})
    present: set[str] = set()
    for schema in schemas:
        present |= await _schema_tables(conn, schema)
    if not present:
        report.notes.append(f"no {spec.name} tables in this database: nothing to rebuild")
        return report
    unknown = present - set(spec.tables) - set(spec.stream_tables)
    if unknown:
        raise ReplayError(f"{spec.name} has table(s) its registry entry does not name:"
                          f" {sorted(unknown)}; add them to projections/registry.py"
                          " (state or stream)")
    transaction = conn.transaction()
    await transaction.start()
    changed = False
    try:
        if not lock_held:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
        keys = {table: await primary_key(conn, table) for table in spec.tables}
        from_log = not per_event and isinstance(source, EventLogSource)
        fill = spec.fill if from_log else None
        from_last_states = spec.from_last_states if from_log else None
        # Each table's (what it holds, what it should hold) for the comparison.
        pairs: dict[str, tuple[str, str]] = {}
        for n, table in enumerate(spec.tables):
            if fill is not None:
                # Filled in place of the table, then only the rows that differ are
                # written to it: its key only (for the fill's ON CONFLICT), no other
                # index, and no WAL (temporary).
                pairs[table] = (table, f"replay_fresh_{n}")
                await conn.execute(f"CREATE TEMP TABLE replay_fresh_{n} (LIKE {table}"
                                   " INCLUDING DEFAULTS) ON COMMIT DROP")
                await conn.execute(f"ALTER TABLE replay_fresh_{n} ADD PRIMARY KEY"
                                   f" ({', '.join(_quote(k) for k in keys[table])})")
                continue
            pairs[table] = (f"replay_before_{n}", table)
            await conn.execute(f"CREATE TEMP TABLE replay_before_{n} ON COMMIT DROP AS"
                               f" SELECT * FROM {table}")
            if table in spec.private_tables:
                # Only the projection's batches read it, and they wait for the apply
                # lock: no reader needs its old rows. Emptied by TRUNCATE, the fill
                # meets no dead row of its own (each key a DELETE left would be checked
                # against it).
                await conn.execute(f"TRUNCATE {table}")
            else:
                # DELETE, not TRUNCATE: readers keep seeing the old rows until the commit.
                await conn.execute(f"DELETE FROM {table}")
        if fill is not None or from_last_states is not None:
            assert isinstance(source, EventLogSource)
            progress("records", 0, None)
            if fill is not None:
                rebuilt = await fill(conn, {table: fresh for table, (_, fresh) in pairs.items()})
            else:
                assert from_last_states is not None
                rebuilt = await from_last_states(conn)
            source.undecodable += rebuilt.undecodable
            report.events, report.unit = rebuilt.records, rebuilt.unit
            progress("records", rebuilt.records, rebuilt.records)
        else:
            await _feed(conn, spec.make(config), source, report, progress=progress,
                        chunk=chunk)
        for table, (held, fresh) in pairs.items():
            # With a scratch copy the differing rows are written to the table now (rolled
            # back with the rest when nothing changed or in a dry run); otherwise the
            # table was refilled and is compared with its copy aside.
            report.tables.append(await compare(
                conn, live=held, fresh=fresh, key=keys[table], label=table,
                apply=fill is not None))
        changed = report.changes > 0
        if changed and spec.reset_stream is not None:
            await spec.reset_stream(conn)
            report.notes.append(f"{spec.name} changed: its stream was cleared and stream"
                                " readers reload it")
    except BaseException:
        await transaction.rollback()
        raise
    if changed and not dry_run:
        await transaction.commit()
    else:
        await transaction.rollback()  # nothing to change: leave even the stream alone
    return report


Lanes = Callable[[], AbstractAsyncContextManager[Conn]]
"""Opens a connection of its own for a rebuild run side by side (and closes it)."""


def connections(connect: Callable[[], Awaitable[asyncpg.Connection]]) -> Lanes:
    """Lanes that each open a connection with ``connect`` and close it when done."""
    @asynccontextmanager
    async def lane() -> AsyncIterator[Conn]:
        own = await connect()
        try:
            yield own
        finally:
            await own.close()
    return lane


async def rebuild_side_by_side(conn: Conn, lanes: Lanes, specs: Sequence[ProjectionSpec],
                               source: EventLogSource, *, ledger: Iterable[str] = (),
                               dry_run: bool, progress: Progress = _quiet, width: int = 2,
                               finished: Callable[[str, Report], None] | None = None
                               ) -> list[Report]:
    """Rebuild projections of the event log, ``width`` at a time, each on a connection of
    its own (``lanes``), while ``conn`` holds ``APPLY_LOCK`` for all of them; with
    ``ledger`` (names of ``LEDGER``), the fold of the history and the failure log
    (``rebuild_ledger``) beside them, on a connection of its own, without that lock,
    which it does not need. The reports: the ledger's first, then in the order of
    ``specs``; each also, by its name (``ledger`` for the fold), to ``finished`` as soon
    as it is done (committed, unless a dry run or unchanged).

    Why: a rebuild takes turns between Python (decoding the records' last events, the
    projection's rules) and PostgreSQL (its statements), so one at a time leaves a
    core idle most of the time. The projections' tables are disjoint and no rebuild
    reads another's (nor the ledger's), so two at once cannot see each other's
    half-built rows.

    What it changes for the daemon: the projector's batches wait once, for the
    projections' rebuilds together, instead of once for each in turn. Each rebuild
    still commits or rolls back on its own, as one after the other did, and one
    failing cancels the others (each rolls back); ``conn`` writes nothing.
    """
    tables = [table for spec in specs for table in (*spec.tables, *spec.stream_tables)]
    if len(tables) != len(set(tables)):
        raise ValueError("projections rebuilt side by side must not share a table")
    folds = [name for name in LEDGER if name in set(ledger)]
    reports: dict[str, Report] = {}
    steps = len(specs) + (1 if folds else 0)
    waiting = list(specs)

    def done(name: str, report: Report) -> None:
        reports[name] = report
        if finished is not None:
            finished(name, report)
        progress("steps", len(reports), steps)

    async def lane() -> None:
        async with lanes() as own:
            while waiting:
                spec = waiting.pop(0)
                done(spec.name, await rebuild_from_events(own, spec, source, dry_run=dry_run,
                                                          lock_held=True))

    async def fold() -> None:
        async with lanes() as own:
            done("ledger", await rebuild_ledger(own, folds, dry_run=dry_run))

    async def rebuilds() -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
            async with asyncio.TaskGroup() as group:
                for _ in range(min(width, len(specs))):
                    group.create_task(lane())

    progress("steps", 0, steps)
    try:
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            if folds:
                group.create_task(fold())
            group.create_task(rebuilds())
    except BaseExceptionGroup as failed:
        while isinstance(failed, BaseExceptionGroup):  # the groups nest: the first error
            failed = failed.exceptions[0]
        raise failed from None  # what failed, as one at a time raises it
    return [reports[name] for name in (["ledger"] if folds else [])
            + [spec.name for spec in specs]]


async def _feed(conn: Conn, projection: Projection, source: EventSource, report: Report, *,
                progress: Progress, chunk: int) -> None:
    """Every event of the source, in order, through ``projection``: the per-event rebuild."""
    everything = Window()
    total = await source.total(conn, everything)
    done = 0
    progress("events", 0, total)
    async for part in source.chunks(conn, everything, size=chunk, applied_only=False):
        await projection.apply(conn, part.events)
        done += part.scanned
        report.events += len(part.events)
        progress("events", done, total)


# -- re-applying a window to the stores -----------------------------------------


def _store_ids(values: Iterable[str | None]) -> list[int]:
    return sorted({int(v) for v in values if v is not None and _SAFE_ID.match(v)})


class _Snapshots:
    """Rows of the tables a re-apply may write, before (first seen) and after (last)."""

    def __init__(self) -> None:
        self.before: dict[str, dict[str, Any]] = {}
        self.after: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}

    async def affected(self, conn: Conn, events: Sequence[LoggedEvent]
                       ) -> dict[str, list[int]]:
        """Store rows and links the events can touch: those of their links (a replay
        makes no new match)."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for item in events:
            e = item.event
            if e.module in SYNCED_MODULES:
                wanted.setdefault((e.module, e.source), set()).add(e.record_id)
        out: dict[str, set[int]] = {}
        for (module, side), ids in sorted(wanted.items()):
            rows = await conn.fetch(
                f"SELECT link_id, desk_id, crm_id FROM sync.links"
                f" WHERE module = $1 AND {side}_id = ANY($2::text[])", module, sorted(ids))
            out.setdefault("sync.links", set()).update(r["link_id"] for r in rows)
            out.setdefault(f"desk.{module}", set()).update(_store_ids(r["desk_id"] for r in rows))
            out.setdefault(f"crm.{module}", set()).update(_store_ids(r["crm_id"] for r in rows))
        return {table: sorted(ids) for table, ids in out.items() if ids}

    async def read(self, conn: Conn, table: str, ids: list[int]) -> dict[str, Any]:
        key = "link_id" if table == "sync.links" else "id"
        self.keys[table] = key
        rows = await conn.fetch(f"SELECT {key}::text AS k, to_jsonb(t) AS v FROM {table} t"
                                f" WHERE {key} = ANY($1::bigint[])", ids)
        return {row["k"]: json.loads(row["v"]) for row in rows}

    async def take_before(self, conn: Conn, affected: dict[str, list[int]]) -> None:
        for table, ids in affected.items():
            known = self.before.setdefault(table, {})
            fresh = [i for i in ids if str(i) not in known]
            rows = await self.read(conn, table, fresh) if fresh else {}
            for i in fresh:
                known[str(i)] = rows.get(str(i))

    async def take_after(self, conn: Conn, affected: dict[str, list[int]]) -> None:
        for table, ids in affected.items():
            rows = await self.read(conn, table, ids)
            after = self.after.setdefault(table, {})
            for i in ids:
                after[str(i)] = rows.get(str(i))

    def diffs(self) -> list[TableDiff]:
        out = []
        for table in sorted(self.before):
            diff = TableDiff(table)
            for key, before in sorted(self.before[table].items(), key=lambda kv: int(kv[0])):
                after = self.after.get(table, {}).get(key, before)
                if before == after:
                    continue
                if before is None:
                    diff.added += 1
                    sample: dict[str, Any] = {"change": "added", "row": _display(after)}
                elif after is None:
                    diff.removed += 1
                    sample = {"change": "removed", "row": _display(before)}
                else:
                    diff.changed += 1
                    sample = {"change": "changed", "key": {self.keys[table]: key},
                              "columns": _changed_columns(before, after)}
                if len(diff.samples) < SAMPLES:
                    diff.samples.append(sample)
            out.append(diff)
        return out


async def _advance_sequences(conn: Conn, tables: Iterable[str]) -> None:
    """Rows created again under their old ids: move each id sequence past them, so the
    store's next new record does not take an id a link already names. (Not
    transactional, hence only when the replay commits.)"""
    for table in tables:
        await conn.execute(
            f"SELECT setval(s.name, m.id) FROM"
            f" (SELECT pg_get_serial_sequence($1, 'id') AS name) s,"
            f" (SELECT max(id) AS id FROM {table}) m"
            f" WHERE s.name IS NOT NULL AND m.id >"
            f"  coalesce(pg_sequence_last_value(s.name::regclass), 0)", table)


async def reapply(conn: Conn, sync: SyncProjection, source: EventSource, window: Window, *,
                  dry_run: bool, progress: Progress = _quiet, chunk: int = 2_000) -> Report:
    """Apply the window's events to the stores again (OPS-07), in one transaction.

    Only events the sync applied before are taken; each goes through the sync in
    replay mode (see ``projections.sync``): no outcome, no history count, no new
    match, no record brought back from deletion. The projector's batches wait
    meanwhile (``APPLY_LOCK``); a replay that changes nothing rolls back.
    """
    report = Report(what="re-apply " + window.describe() + " from the " + source.name,
                    dry_run=dry_run, source=source.name)
    snapshots = _Snapshots()
    transaction = conn.transaction()
    await transaction.start()
    commit = False
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
        total = await source.total(conn, window)
        done = 0
        progress("events", 0, total)
        async for part in source.chunks(conn, window, size=chunk, applied_only=True):
            events = [item for item in part.events if window.admits(item.event)]
            affected = await snapshots.affected(conn, events)
            await snapshots.take_before(conn, affected)
            await sync.reapply(conn, events)
            await snapshots.take_after(conn, affected)
            done += part.scanned
            report.events += len(events)
            progress("events", done, total)
        report.tables = snapshots.diffs()
        commit = report.changes > 0 and not dry_run
        if commit:
            await _advance_sequences(conn, [t.table for t in report.tables
                                            if t.added and t.table != "sync.links"])
    except BaseException:
        await transaction.rollback()
        raise
    if commit:
        await transaction.commit()
    else:
        await transaction.rollback()
    return report
