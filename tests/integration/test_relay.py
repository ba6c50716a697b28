"""The relay sends again only what is lost, not a backlog the projector is behind on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from structlog.testing import capture_logs

from adapters.relay import OutboxRelay, Sent


async def _log_one(conn: asyncpg.Connection) -> None:
    """An event the projector recorded (of the other store: ours wait behind it)."""
    await conn.execute(
        "INSERT INTO syncd.event_log (event_id, source, module, record_id, op, origin,"
        " modified_at, captured_at, payload, kafka_topic, kafka_partition, kafka_offset)"
        " VALUES ($1, 'desk', 'contacts', '1', 'update', 'user', now(), now(), '{}', 't', 0, 0)",
        uuid.uuid4())


async def test_a_backlog_behind_a_busy_projector_is_not_sent_again(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO crm.contacts (last_name) SELECT 'r' || g"
                           " FROM generate_series(1, 3) g")
        row = await conn.fetchrow("SELECT min(seq), max(seq) FROM crm.outbox")
        assert row is not None
        oldest, newest = row
        relay = OutboxRelay(dsn=database_url, bootstrap="unused:9092", topic="t",
                            source="crm", partitions=1, resend_after=0.5)
        relay.cursor = newest
        relay._sent.append(Sent(newest, time.monotonic() - 60, {}))  # long ago, still there
        # The projector is busy (the event log grows), so ours may simply be queued
        # behind: nothing is sent again, however long ago it was sent.
        for _ in range(8):
            await _log_one(conn)
            await relay._rewind(conn, force=False)
            assert relay.cursor == newest
            await asyncio.sleep(0.15)
        # The projector gets no further: the rows are taken for lost and sent again.
        await asyncio.sleep(0.6)
        await relay._rewind(conn, force=False)
        assert relay.cursor == oldest - 1
    finally:
        await conn.close()


async def test_rows_stuck_while_the_log_grows_are_sent_again_in_the_end(
        database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO crm.contacts (last_name) VALUES ('r')")
        row = await conn.fetchrow("SELECT min(seq), max(seq) FROM crm.outbox")
        assert row is not None
        oldest, newest = row
        relay = OutboxRelay(dsn=database_url, bootstrap="unused:9092", topic="t",
                            source="crm", partitions=1, resend_after=0.1)
        relay.cursor = newest
        relay._sent.append(Sent(newest, time.monotonic() - 60, {}))
        # The log keeps growing but our oldest row never leaves: after ten times
        # resend_after it is sent again all the same (lost, not queued).
        deadline = time.monotonic() + 3
        while relay.cursor == newest and time.monotonic() < deadline:
            await _log_one(conn)
            await relay._rewind(conn, force=False)
            await asyncio.sleep(0.05)
        assert relay.cursor == oldest - 1
        assert time.monotonic() < deadline
    finally:
        await conn.close()


async def _sent_to_offset(conn: asyncpg.Connection, database_url: str, *, acked: int,
                          stored: int, resend_after: float) -> tuple[OutboxRelay, int, str]:
    """Three CRM rows a relay sent, acknowledged up to offset ``acked`` of the one
    partition, and a projector group stored at ``stored``: the relay, the seq before
    the oldest row (where a resend starts), the group."""
    await conn.execute("INSERT INTO crm.contacts (last_name) SELECT 'r' || g"
                       " FROM generate_series(1, 3) g")
    row = await conn.fetchrow("SELECT min(seq), max(seq) FROM crm.outbox")
    assert row is not None
    oldest, newest = row
    group = f"g-{uuid.uuid4()}"
    await conn.execute("INSERT INTO syncd.consumer_offsets (group_id, topic, partition,"
                       " next_offset) VALUES ($1, 't', 0, $2)", group, stored)
    relay = OutboxRelay(dsn=database_url, bootstrap="unused:9092", topic="t",
                        source="crm", partitions=1, resend_after=resend_after, group_id=group)
    relay.cursor = newest
    relay._partitions = [0]
    relay._sent.append(Sent(newest, time.monotonic() - 60, {0: acked}))
    return relay, oldest - 1, group


async def test_a_backlog_the_projector_reads_towards_is_sent_again_only_once_passed(
        database_url: str) -> None:
    """A first sync's desk rows wait behind the CRM's on every partition for minutes: as
    long as the projector's stored offset moves towards where they went, they are queued,
    not lost (the relay sent all 500,000 again after ten times resend_after); once the
    projector has read past that offset and the row is still here, it is lost, and sent
    again at once."""
    conn = await asyncpg.connect(database_url)
    try:
        relay, resend_from, group = await _sent_to_offset(
            conn, database_url, acked=500, stored=10, resend_after=0.1)
        sent = relay.cursor
        for _ in range(30):  # 1.5 s: fifteen times resend_after
            await conn.execute("UPDATE syncd.consumer_offsets SET next_offset = next_offset"
                               " + 10 WHERE group_id = $1", group)
            await relay._rewind(conn, force=False)
            assert relay.cursor == sent
            await asyncio.sleep(0.05)
        await conn.execute("UPDATE syncd.consumer_offsets SET next_offset = 501"
                           " WHERE group_id = $1", group)
        await relay._rewind(conn, force=False)
        assert relay.cursor == resend_from
    finally:
        await conn.close()


async def test_a_partition_read_again_from_its_start_sends_again(database_url: str) -> None:
    """The projector's offset going back (the broker lost the partition's log, and it
    reads it again from the start) is the rows sent before it lost: sent again."""
    conn = await asyncpg.connect(database_url)
    try:
        relay, resend_from, group = await _sent_to_offset(
            conn, database_url, acked=400, stored=300, resend_after=60)
        sent = relay.cursor
        await relay._rewind(conn, force=False)
        assert relay.cursor == sent  # behind, and not yet known to move: the timing rule
        await conn.execute("UPDATE syncd.consumer_offsets SET next_offset = 0"
                           " WHERE group_id = $1", group)
        await relay._rewind(conn, force=False)
        assert relay.cursor == resend_from
    finally:
        await conn.close()


class _Batch:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object:
        self.values.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.values)


class _Ack:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Producer:
    """Records what the relay sends; every batch is acknowledged at once, at the next
    offsets of its partition."""

    def __init__(self, partitions: frozenset[int] = frozenset({0, 1})) -> None:
        self.sent: list[str] = []
        self.partitions = partitions
        self.ends = dict.fromkeys(partitions, 0)

    async def partitions_for(self, _topic: str) -> set[int]:
        return set(self.partitions)

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, _topic: str, *,
                         partition: int) -> asyncio.Future[_Ack]:
        self.sent.extend(json.loads(value)["record_id"] for value in batch.values)
        done: asyncio.Future[_Ack] = asyncio.get_running_loop().create_future()
        done.set_result(_Ack(self.ends[partition]))
        self.ends[partition] += len(batch.values)
        return done


@pytest.mark.parametrize("under_way", [True, False], ids=["under-way", "first-read"])
async def test_a_row_committed_after_a_later_one_is_sent_when_it_commits(
        database_url: str, under_way: bool) -> None:
    """Sequence values are drawn before commit: the relay reads past a row that
    commits late, and must still send it at once, not resend_after later."""
    slow = await asyncpg.connect(database_url)
    fast = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(database_url)
    producer = _Producer()
    relay = OutboxRelay(dsn=database_url, bootstrap="unused:9092", topic="t",
                        source="crm", partitions=1, poll_interval=0.05, resend_after=600)
    stop = asyncio.Event()
    task = asyncio.create_task(relay._relay(conn, producer, stop))
    try:
        expected = []
        if under_way:
            first = await fast.fetchval(
                "INSERT INTO crm.contacts (last_name) VALUES ('first') RETURNING id")
            await _until(lambda: str(first) in producer.sent)
            expected.append(str(first))
        slow_id, fast_id = await _committed_late(
            slow, fast, sent=lambda fast_row: fast_row in producer.sent)
        await _until(lambda: str(slow_id) in producer.sent)  # well before resend_after
        assert sorted(producer.sent) == sorted([*expected, str(fast_id), str(slow_id)])
    finally:
        stop.set()
        await task
        for c in (slow, fast, conn):
            await c.close()


async def test_a_row_sent_late_is_not_lost_when_the_projector_passes_the_send_before(
        database_url: str) -> None:
    """A row that commits after a later one goes out in a later send than the seqs
    around it: the projector reading past the earlier send's offset has not read it
    yet. (Taken for lost, it sent everything from it again: the latency run at 2,000
    changes/s did, and its p50 went from under a second to seven.)"""
    slow = await asyncpg.connect(database_url)
    fast = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(database_url)
    check = await asyncpg.connect(database_url)
    group = f"g-{uuid.uuid4()}"
    await check.execute("INSERT INTO syncd.consumer_offsets (group_id, topic, partition,"
                        " next_offset) VALUES ($1, 't', 0, 0)", group)
    producer = _Producer(frozenset({0}))
    relay = OutboxRelay(dsn=database_url, bootstrap="unused:9092", topic="t", source="crm",
                        partitions=1, poll_interval=0.05, resend_after=600, group_id=group)
    stop = asyncio.Event()
    task = asyncio.create_task(relay._relay(conn, producer, stop))
    try:
        slow_id, fast_id = await _committed_late(
            slow, fast, sent=lambda fast_row: producer.sent == [fast_row])  # at offset 0
        await _until(lambda: producer.sent == [str(fast_id), str(slow_id)])  # at 1
        stop.set()
        await task
        cursor = relay.cursor
        # The projector has recorded the fast row and read past offset 0, not 1.
        await check.execute("DELETE FROM crm.outbox WHERE record_id = $1", str(fast_id))
        await check.execute("UPDATE syncd.consumer_offsets SET next_offset = 1"
                            " WHERE group_id = $1", group)
        await relay._rewind(check, force=False)
        assert relay.cursor == cursor
        await check.execute("UPDATE syncd.consumer_offsets SET next_offset = 2"
                            " WHERE group_id = $1", group)
        await relay._rewind(check, force=False)  # past it now, and the row still here
        assert relay.cursor < cursor
    finally:
        stop.set()
        await task
        for c in (slow, fast, conn, check):
            await c.close()


async def _committed_late(slow: asyncpg.Connection, fast: asyncpg.Connection, *,
                          sent: Callable[[str], bool]) -> tuple[int, int]:
    """A CRM contact ("slow") whose seq is drawn first but that commits only once a later
    one ("fast") is sent (``sent`` says when, given the fast row's id): their ids."""
    late = slow.transaction()
    await late.start()
    slow_id = await slow.fetchval(
        "INSERT INTO crm.contacts (last_name) VALUES ('slow') RETURNING id")
    fast_id = await fast.fetchval(
        "INSERT INTO crm.contacts (last_name) VALUES ('fast') RETURNING id")
    await _until(lambda: sent(str(fast_id)))
    await late.commit()
    return slow_id, fast_id


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_each_outbox_numbers_its_rows_without_holes(database_url: str) -> None:
    """A relay watches holes in its outbox's numbering for rows still committing:
    the other store's rows must not make holes in it."""
    conn = await asyncpg.connect(database_url)
    try:
        for i in range(3):
            await conn.execute("INSERT INTO desk.contacts (last_name) VALUES ($1)", f"d{i}")
            await conn.execute("INSERT INTO crm.contacts (last_name) VALUES ($1)", f"c{i}")
        for source in ("desk", "crm"):
            seqs = [r["seq"] for r in await conn.fetch(
                f"SELECT seq FROM {source}.outbox ORDER BY seq")]
            assert seqs == list(range(seqs[0], seqs[0] + 3)), (source, seqs)
    finally:
        await conn.close()


async def test_a_broker_away_when_the_producer_starts_is_waited_for(
        database_url: str) -> None:
    """The relay's producer meeting no broker (one restarting, two down at once on a
    cluster: the chaos run on the real cluster found it) waits and tries again; it
    used to end the relay, and with it the daemon."""
    from daemon.runtime.embedded import free_port

    relay = OutboxRelay(dsn=database_url, bootstrap=f"127.0.0.1:{free_port('127.0.0.1')}",
                        topic="t", source="crm", partitions=1)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        await asyncio.sleep(3)
        assert not task.done(), task.exception() if task.done() else None
        stop.set()
        await asyncio.wait_for(task, 10)
    assert any(e["event"] == "broker_unavailable" and e.get("task") == "relay-crm"
               for e in logs)
