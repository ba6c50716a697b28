"""Workloads for the benchmark: realistic stores, change streams and the raw limit.

Everything here is data generation and measurement plumbing; the product code
under test (relays, projector, sync projection, first sync) is used exactly as
the daemon wires it, observed through its public hooks (``BatchProbe`` for the
consumer loop's ``on_batch``, ``SendCounter`` for the relay's ``on_sent``).
``ops/bench/README.md`` describes each workload.

Seeding of records that exist *before* the scenario runs is done in SQL with
``generate_series`` under ``syncd.capture = 'off'`` (not captured), so seeding a
million rows costs seconds and no Python memory. Changes that must become
events are made the way a person's edits are: plain DML on the store tables,
captured by the triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import gc
import os
import random
import resource
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.demo import COMPANIES, FIRST, LAST, SUFFIX
from adapters.kafka import FETCH_MAX_WAIT_MS, ensure_topics, make_producer
from adapters.kafka_batches import send_keyed
from adapters.relay import FETCH_OUTBOX
from projections.batch import BatchOutcome, LoggedEvent
from projections.db import Conn
from projections.events import decode_event

Body = tuple[bytes, bytes]  # (key, value) as the relay produces them

INDUSTRIES = ["Retail", "Banking", "Logistics", "Health", "Energy", "Media", "Software"]


def born_base() -> dt.datetime:
    """Seeded records are created within the 290 days after this (inside a year's window)."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=330)


# -- measuring ---------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident memory of this process now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples this process's resident memory every ``interval`` seconds while running."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.peak = rss_bytes()
        self._task = asyncio.create_task(self._run(), name="bench-rss")

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.peak = max(self.peak, rss_bytes())
        return self.peak


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of a process from /proc (with its reaped children's); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process so far (Linux ``/proc``); 0 if unknown."""
    return _proc_cpu(pid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


class StatementTimes:
    """Where the database time of a phase goes: each statement's calls and seconds, by its
    text (asyncpg's query logger, so client-side time: the round trip included; COPY is
    not a logged query). Attached to the connections of the product's pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_text: dict[str, list[float]] = {}

    async def attach(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self.record)

    def record(self, query: Any) -> None:
        entry = self.by_text.setdefault(" ".join(query.query.split()), [0, 0.0])
        entry[0] += 1
        entry[1] += query.elapsed

    def reset(self) -> None:
        self.by_text.clear()

    def top(self) -> list[dict[str, Any]]:
        """The ``limit`` statements that took the most time, most first."""
        ranked = sorted(self.by_text.items(), key=lambda item: -item[1][1])[:self.limit]
        return [{"seconds": round(total, 2), "calls": int(calls),
                 "ms_each": round(total / calls * 1000, 2), "statement": text[:300]}
                for text, (calls, total) in ranked]


@dataclass
class CpuMeter:
    """CPU seconds used by this process, the embedded PostgreSQL (postmaster, its live
    backends and the ones that exited) and the embedded broker, between two reads.
    Unknown parts (configured services) read as 0."""

    postmaster: int | None = None
    broker: int | None = None

    def read(self) -> dict[str, float]:
        postgres = 0.0
        if self.postmaster is not None:
            postgres = _proc_cpu(self.postmaster, children=True) + sum(
                _proc_cpu(child) for child in _children(self.postmaster))
        return {"python": time.process_time(), "postgres": postgres,
                "broker": _proc_cpu(self.broker) if self.broker is not None else 0.0}

    @staticmethod
    def per_event(before: dict[str, float], after: dict[str, float], events: int
                  ) -> dict[str, float]:
        """Microseconds of CPU per event, by process."""
        return {name: round((after[name] - before[name]) / max(events, 1) * 1e6, 1)
                for name in before}


class GcMeter:
    """Seconds this process spent in the garbage collector's collections, by generation,
    and how many ran, between two reads (``gc.callbacks``; one a process: ``gc_meter``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.seconds[info["generation"]] += time.perf_counter() - self._began
        self.collections[info["generation"]] += 1

    def read(self) -> tuple[list[float], list[int]]:
        return list(self.seconds), list(self.collections)

    @staticmethod
    def per_event(before: tuple[list[float], list[int]], after: tuple[list[float], list[int]],
                  events: int) -> dict[str, dict[str, float]]:
        """Microseconds an event in each generation's collections, and their number."""
        return {f"gen{g}": {"us_per_event": round((after[0][g] - before[0][g])
                                                  / max(events, 1) * 1e6, 1),
                            "collections": after[1][g] - before[1][g]} for g in range(3)}


@functools.cache
def gc_meter() -> GcMeter:
    """The process's one ``GcMeter`` (each would add a callback to every collection)."""
    return GcMeter()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


# -- the product, observed through its hooks ------------------------------------------------------


class BatchProbe:
    """The consumer loop's ``on_batch`` hook: notes each committed batch's events and
    the time its transaction committed (``time.perf_counter()``); a batch that rolled
    back (``None``) counts for nothing, its events come again."""

    def __init__(self) -> None:
        self.applied = 0
        self.duplicates = 0  # copies the event log dropped (sent twice)
        self.rejected = 0  # messages that did not decode
        self.batches = 0
        self.progress: list[tuple[float, int]] = []  # (perf_counter, applied so far)
        self.on_commit: Callable[[Sequence[LoggedEvent], float], None] | None = None
        self.done = asyncio.Event()
        self.expect: int | None = None

    def __call__(self, outcome: BatchOutcome | None, at: float) -> None:
        if outcome is None:
            return
        events = outcome.applied
        self.applied += len(events)
        self.duplicates += outcome.duplicates
        self.rejected += len(outcome.rejected)
        self.batches += 1
        self.progress.append((at, self.applied))
        if self.on_commit is not None:
            self.on_commit(events, at)
        if self.expect is not None and self.applied >= self.expect:
            self.done.set()


class SendCounter:
    """An outbox relay's ``on_sent`` hook: counts the rows the broker acknowledged, each
    once, and when the last acknowledgement came (``time.perf_counter()``).

    Each once: a relay sends rows again after a failed send (some of whose messages
    may have landed) or when it takes them for lost, and counting sends made a
    scenario stop its relays when as many messages as rows were acknowledged, with
    rows still unsent behind the copies (a full-size run stalled so, 4 events short).
    The rows acknowledged are marked in a bitmap by outbox seq (a bit a seq, where a
    set of a million ints would weigh tens of MiB in the measured process)."""

    def __init__(self) -> None:
        self.acked = 0
        self.copies = 0  # rows acknowledged again
        self.last_ack = 0.0
        self._seen = bytearray()

    def __call__(self, seqs: list[int]) -> None:
        seen = self._seen
        for seq in seqs:
            byte, bit = divmod(seq, 8)
            if byte >= len(seen):
                seen.extend(bytes(max(byte + 1 - len(seen), len(seen))))
            if seen[byte] >> bit & 1:
                self.copies += 1
            else:
                seen[byte] |= 1 << bit
                self.acked += 1
        self.last_ack = time.perf_counter()


# -- seeding pre-existing records (not captured) -------------------------------------

_SEED_CONTACTS = """
INSERT INTO {schema}.contacts (first_name, last_name, email, phone, mobile, created_time,
                               modified_time)
SELECT ($1::text[])[1 + g % cardinality($1::text[])],
       ($2::text[])[1 + (g / 7) % cardinality($2::text[])],
       format($3::text, g),
       '+351 21' || lpad((g * 7919 % 10000000)::text, 7, '0'),
       CASE WHEN g % 3 = 0 THEN '+351 91' || lpad((g * 104729 % 10000000)::text, 7, '0') END,
       $4::timestamptz + make_interval(secs => g % $7::bigint),
       $4::timestamptz + make_interval(secs => g % $7::bigint)
FROM generate_series($5::bigint, $6::bigint) AS g
"""

_SEED_ACCOUNTS = """
INSERT INTO {schema}.accounts (account_name, website, phone, industry, created_time,
                               modified_time)
SELECT format($1::text, g), format('https://a%s.example', g),
       '+351 22' || lpad((g * 7919 % 10000000)::text, 7, '0'),
       ($2::text[])[1 + g % cardinality($2::text[])],
       $3::timestamptz + make_interval(secs => g % $6::bigint),
       $3::timestamptz + make_interval(secs => g % $6::bigint)
FROM generate_series($4::bigint, $5::bigint) AS g
"""


async def insert_contacts(conn: Conn, schema: str, first: int, last: int, email_format: str,
                          *, captured: bool, chunk: int = 100_000) -> None:
    """Contacts ``first..last`` in ``schema``; e-mail from ``email_format`` (``%s`` = n).

    ``captured=False`` writes them as pre-existing records (no events), created at
    times spread over 290 days; captured ones are new: created now."""
    await _insert_chunked(conn, _SEED_CONTACTS.format(schema=schema), (FIRST, LAST, email_format),
                          first, last, captured=captured, chunk=chunk)


async def insert_accounts(conn: Conn, schema: str, first: int, last: int, name_format: str,
                          *, captured: bool, chunk: int = 100_000) -> None:
    """Accounts ``first..last`` in ``schema``, as ``insert_contacts``."""
    await _insert_chunked(conn, _SEED_ACCOUNTS.format(schema=schema), (name_format, INDUSTRIES),
                          first, last, captured=captured, chunk=chunk)


async def _insert_chunked(conn: Conn, sql: str, head: tuple[Any, ...], first: int, last: int,
                          *, captured: bool, chunk: int) -> None:
    """Run a seeding statement over ``first..last`` in chunks, one transaction each;
    its parameters are ``head``, then creation time, chunk bounds and time spread."""
    born, spread = (dt.datetime.now(dt.UTC), 1) if captured else (born_base(), 25_000_000)
    for lo in range(first, last + 1, chunk):
        hi = min(last, lo + chunk - 1)
        async with conn.transaction():
            if not captured:
                await conn.execute("SET LOCAL syncd.origin = 'sync'")
                await conn.execute("SET LOCAL syncd.capture = 'off'")
            await conn.execute(sql, *head, born, lo, hi, spread)


def company_name_format(rng: random.Random) -> str:
    return f"{rng.choice(COMPANIES)} {rng.choice(SUFFIX)} %s"


# -- change streams (captured) -------------------------------------------------------


@dataclass
class Pools:
    """Linked pairs the steady stream updates and deletes: per module, (desk id, crm id)."""

    pairs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    async def load(cls, conn: Conn) -> Pools:
        rows = await conn.fetch(
            "SELECT module, desk_id::bigint AS d, crm_id::bigint AS c FROM sync.links"
            " ORDER BY link_id")
        pools = cls()
        for row in rows:
            pools.pairs.setdefault(row["module"], []).append((row["d"], row["c"]))
        return pools


# The steady stream's updates (and the latency scenario's writers): one statement per
# batch of rows, values in arrays; public for the scenarios.
UPDATE_CONTACTS = """
UPDATE {schema}.contacts t
SET phone = v.phone, first_name = coalesce(v.first_name, t.first_name),
    mobile = coalesce(v.mobile, t.mobile)
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS v(id, phone, first_name, mobile)
WHERE t.id = v.id
"""

UPDATE_ACCOUNTS = """
UPDATE {schema}.accounts t
SET phone = v.phone, industry = coalesce(v.industry, t.industry)
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v(id, phone, industry)
WHERE t.id = v.id
"""


@dataclass
class SteadyMix:
    """The steady stream's shape: 20% creates, 70% updates, 10% deletes; contacts and
    accounts (4:1); both directions (each statement picks a store)."""

    creates: float = 0.2
    updates: float = 0.7
    deletes: float = 0.1
    accounts_share: float = 0.2
    statement_rows: int = 50


class SteadyStream:
    """Makes ``total`` captured changes on both stores, in the proportions of ``mix``.

    Creates are new records (unique e-mails and names, so nothing matches: each
    becomes a create on the other side). Updates touch linked records of the pools,
    on either side, changing the phone (always, to a fresh value, so no update is a
    no-op) and now and then the first name or mobile / the industry. Deletes move
    linked records to the recycle bin; a deleted pair is not updated again.
    """

    def __init__(self, pools: Pools, *, total: int, seed: int = 11,
                 mix: SteadyMix | None = None) -> None:
        self.pools = {m: list(p) for m, p in pools.pairs.items()}
        self.total = total
        self.mix = mix or SteadyMix(statement_rows=max(1, min(50, total // 40)))
        self.rng = random.Random(seed)
        self.counts = {"create": 0, "update": 0, "delete": 0}
        self._next_new = 10_000_000
        self._token = 0

    def _module(self) -> str:
        return "accounts" if self.rng.random() < self.mix.accounts_share else "contacts"

    def _phone(self) -> str:
        self._token += 1
        return f"+33 1 {self._token:09d}"

    def plan(self) -> list[tuple[str, str, str, int]]:
        """Statements as (op, side, module, rows), shuffled; rows sum to ``total``."""
        per = self.mix.statement_rows
        want = {"create": round(self.total * self.mix.creates),
                "delete": round(self.total * self.mix.deletes)}
        want["update"] = self.total - want["create"] - want["delete"]
        pool_size = sum(len(p) for p in self.pools.values())
        if want["delete"] > pool_size // 2:
            raise ValueError("pools too small for the deletes")
        statements: list[tuple[str, str, str, int]] = []
        for op, rows in want.items():
            while rows > 0:
                n = min(per, rows)
                statements.append((op, self.rng.choice(["desk", "crm"]), self._module(), n))
                rows -= n
        self.rng.shuffle(statements)
        return statements

    async def run(self, desk: Conn, crm: Conn) -> None:
        """Run the plan on two connections (one per store) concurrently."""
        plan = self.plan()
        desk_plan = [s for s in plan if s[1] == "desk"]
        crm_plan = [s for s in plan if s[1] == "crm"]
        await asyncio.gather(self._run(desk, desk_plan), self._run(crm, crm_plan))

    async def _run(self, conn: Conn, plan: list[tuple[str, str, str, int]]) -> None:
        for op, side, module, rows in plan:
            pool = self.pools.setdefault(module, [])
            if op != "create" and len(pool) < rows:
                module = "contacts"
                pool = self.pools.setdefault(module, [])
            if op == "create":
                first = self._next_new
                self._next_new += rows
                if module == "contacts":
                    await insert_contacts(conn, side, first, first + rows - 1,
                                          f"new.{side}.%s@steady.example", captured=True)
                else:
                    await insert_accounts(conn, side, first, first + rows - 1,
                                          f"New {side} account %s", captured=True)
            elif op == "update":
                rows = min(rows, len(pool))
                picked = self.rng.sample(range(len(pool)), rows)
                ids = sorted(pool[i][0 if side == "desk" else 1] for i in picked)
                phones = [self._phone() for _ in ids]
                if module == "contacts":
                    names = [self.rng.choice(FIRST) if self.rng.random() < 0.3 else None
                             for _ in ids]
                    mobiles = [self._phone() if self.rng.random() < 0.1 else None for _ in ids]
                    await conn.execute(UPDATE_CONTACTS.format(schema=side), ids, phones,
                                       names, mobiles)
                else:
                    industries = [self.rng.choice(INDUSTRIES) if self.rng.random() < 0.3
                                  else None for _ in ids]
                    await conn.execute(UPDATE_ACCOUNTS.format(schema=side), ids, phones,
                                       industries)
            else:
                victims = [pool.pop(self.rng.randrange(len(pool))) for _ in range(rows)]
                ids = sorted(v[0 if side == "desk" else 1] for v in victims)
                await conn.execute(
                    f"UPDATE {side}.{module} SET deleted = true WHERE id = ANY($1::bigint[])",
                    ids)
            self.counts[op] += rows


# -- reading the events back ---------------------------------------------------------


async def outbox_bodies(conn: Conn, source: str, *, chunk: int = 5000
                        ) -> AsyncIterator[list[Body]]:
    """The events waiting in a store's outbox, encoded exactly as the relay sends them."""
    query = FETCH_OUTBOX.format(schema=source)
    cursor = 0
    while True:
        rows = await conn.fetch(query, cursor, chunk, source)
        if not rows:
            return
        cursor = rows[-1]["seq"]
        yield [(f"{source}:{r['key']}".encode(), r["body"].encode()) for r in rows]


async def event_log_bodies(conn: Conn, *, chunk: int = 5000, after: int = 0,
                           limit: int | None = None) -> AsyncIterator[list[Body]]:
    """Events from the event log (the payload as stored), in log order."""
    cursor = after
    left = limit
    while left is None or left > 0:
        take = chunk if left is None else min(chunk, left)
        rows = await conn.fetch(
            "SELECT seq, source || ':' || module || ':' || record_id AS key, payload::text AS body"
            " FROM syncd.event_log WHERE seq > $1 ORDER BY seq LIMIT $2", cursor, take)
        if not rows:
            return
        cursor = rows[-1]["seq"]
        if left is not None:
            left -= len(rows)
        yield [(r["key"].encode(), r["body"].encode()) for r in rows]


# -- the raw limit -------------------------------------------------------------------

RAW_COLUMNS = ("event_id", "source", "module", "record_id", "op", "origin", "modified_at",
               "captured_at", "payload", "kafka_partition", "kafka_offset")

_RAW_TABLE = """
CREATE TABLE IF NOT EXISTS bench_raw_events (
    event_id uuid, source text, module text, record_id text, op text, origin text,
    modified_at timestamptz, captured_at timestamptz, payload jsonb,
    kafka_partition integer, kafka_offset bigint
)
"""


@dataclass
class RawFigures:
    """The raw limit of the stack on one set of events: aiokafka produce (acks=all),
    then consume, decode (the product's decoder) and COPY into one plain table."""

    events: int = 0
    produce_seconds: float = 0.0
    sink_seconds: float = 0.0
    sink_cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def produce_rate(self) -> float:
        return self.events / self.produce_seconds if self.produce_seconds else 0.0

    @property
    def sink_rate(self) -> float:
        """Consume + decode + COPY (events already on the topic): a sink's raw limit."""
        return self.events / self.sink_seconds if self.sink_seconds else 0.0

    @property
    def full_rate(self) -> float:
        """Produce, then consume + decode + COPY: the whole path's raw limit."""
        total = self.produce_seconds + self.sink_seconds
        return self.events / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "produce_seconds": round(self.produce_seconds, 3),
                "sink_seconds": round(self.sink_seconds, 3),
                "produce_per_s": round(self.produce_rate), "sink_per_s": round(self.sink_rate),
                "full_per_s": round(self.full_rate),
                "sink_cpu_us_per_event": self.sink_cpu_us}


def _raw_row(partition: int, offset: int, value: bytes) -> tuple[Any, ...]:
    event = decode_event(value)
    return (event.event_id, event.source, event.module, event.record_id, event.op,
            event.origin, event.modified_at, event.captured_at, value.decode(), partition,
            offset)


async def produce_all(bootstrap: str, topic: str, bodies: AsyncIterator[list[Body]]) -> int:
    producer = make_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        async for chunk in bodies:  # as the relays produce (adapters.kafka_batches)
            await send_keyed(producer, topic, chunk)
            sent += len(chunk)
    finally:
        await producer.stop()
    return sent


def raw_consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A plain consumer, tuned like the product's (same fetch sizes), no group."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS)


async def sink_all(dsn: str, bootstrap: str, topic: str, expect: int, *,
                   batch_max: int = 5000, timeout: float = 600.0,
                   meter: CpuMeter | None = None) -> tuple[int, dict[str, float]]:
    """Consume ``expect`` messages from the beginning, decode, COPY each batch (one
    transaction per batch, as the product does); return how many were written and,
    with a meter, the CPU per event (read before the connection closes)."""
    cpu = meter.read() if meter is not None else None
    conn = await asyncpg.connect(dsn)
    consumer = raw_consumer(bootstrap)
    await consumer.start()
    try:
        await conn.execute(_RAW_TABLE)
        partitions = consumer.partitions_for_topic(topic) or set()
        while not partitions:
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        written = 0
        deadline = time.monotonic() + timeout
        while written < expect:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw sink: {written} of {expect} in {timeout} s")
            batch = await consumer.getmany(timeout_ms=200, max_records=batch_max)
            rows = [_raw_row(tp.partition, rec.offset, rec.value)
                    for tp, records in batch.items() for rec in records]
            if rows:
                await conn.copy_records_to_table("bench_raw_events", records=rows,
                                                 columns=RAW_COLUMNS)
                written += len(rows)
        spent = (CpuMeter.per_event(cpu, meter.read(), written)
                 if meter is not None and cpu is not None else {})
        return written, spent
    finally:
        await consumer.stop()
        await conn.close()


async def raw_limit(dsn: str, bootstrap: str, topic: str, partitions: int,
                    bodies: Callable[[], AsyncIterator[list[Body]]],
                    meter: CpuMeter | None = None) -> RawFigures:
    """Measure the raw limit on these events, on a fresh topic and a plain table."""
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    figures = RawFigures()
    started = time.perf_counter()
    figures.events = await produce_all(bootstrap, topic, bodies())
    figures.produce_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _, figures.sink_cpu_us = await sink_all(dsn, bootstrap, topic, figures.events, meter=meter)
    figures.sink_seconds = time.perf_counter() - started
    return figures


async def raw_latency(dsn: str, bootstrap: str, topic: str, partitions: int,
                      bodies: list[Body], *, rate: float) -> list[float]:
    """Produce ``bodies`` at ``rate`` per second while a raw sink consumes, decodes and
    COPYs them; return each event's seconds from send to its COPY committed."""
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    producer = make_producer(bootstrap)
    await producer.start()
    conn = await asyncpg.connect(dsn)
    await conn.execute(_RAW_TABLE)
    consumer = raw_consumer(bootstrap)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)

    async def sink() -> None:
        while len(latencies) < len(bodies):
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            records = [(tp.partition, rec.offset, rec.value)
                       for tp, items in batch.items() for rec in items]
            if not records:
                continue
            rows = [_raw_row(p, o, v) for p, o, v in records]
            await conn.copy_records_to_table("bench_raw_events", records=rows,
                                             columns=RAW_COLUMNS)
            now = time.perf_counter()
            latencies.extend(now - sent_at[v] for _, _, v in records)

    async def source() -> None:
        tick = 0.05
        per_tick = max(1, round(rate * tick))
        start = time.perf_counter()
        for i in range(0, len(bodies), per_tick):
            target = start + (i // per_tick) * tick
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            futures = []
            for key, value in bodies[i:i + per_tick]:
                sent_at[value] = time.perf_counter()
                futures.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*futures)

    try:
        await asyncio.wait_for(asyncio.gather(source(), sink()),
                               timeout=len(bodies) / rate + 60)
    finally:
        await consumer.stop()
        await producer.stop()
        await conn.close()
    return latencies
