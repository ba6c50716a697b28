from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition

from daemon.consumer import ConsumerLoop


class FakeConn:
    def __init__(self) -> None:
        self.resets: list[tuple[Any, ...]] = []

    async def execute(self, _query: str, *args: Any) -> str:
        self.resets.append(args)
        return "INSERT 0 1"


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConn()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield self.conn


class RebalancingConsumer:
    """Reports a lost log on two partitions, and loses one of them to a rebalance while
    the beginning offsets are being asked for."""

    def __init__(self, projector: ConsumerLoop) -> None:
        self.projector = projector
        self.seeks: list[tuple[TopicPartition, int]] = []

    def highwater(self, _tp: TopicPartition) -> int:
        return 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.projector.positions.pop(("t", 1), None)  # revoked meanwhile
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_reset_detection_survives_a_rebalance_during_its_await() -> None:
    """A partition revoked while a broker reset is being handled is left to its new
    owner; the handling neither crashes nor resets it (it once raised KeyError)."""
    pool = FakePool()
    projector = ConsumerLoop(pool=pool, bootstrap="unused", topic="t", group_id="g",  # type: ignore[arg-type]
                          projections=[])
    projector.positions = {("t", 0): 50, ("t", 1): 70}
    consumer = RebalancingConsumer(projector)
    await projector._detect_broker_reset(consumer)
    assert consumer.seeks == [(TopicPartition("t", 0), 0)]
    assert projector.positions == {("t", 0): 0}
    assert [(args[1], args[2]) for args in pool.conn.resets] == [("t", 0)]


class NewLeaderConsumer:
    """A real Kafka partition just after its leader died: the new leader's fetch
    responses carry a high watermark one behind the old leader's, which its followers
    had not yet acknowledged; ListOffsets answers the true end."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def highwater(self, _tp: TopicPartition) -> int:
        return 51

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 52 for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_a_new_leaders_lagging_high_watermark_is_not_a_lost_log() -> None:
    """A high watermark below the stored position that ListOffsets does not confirm
    reads nothing again (on a real cluster a leader kill once re-read a partition
    from its beginning: stored offset 52, the new leader's high watermark 51)."""
    pool = FakePool()
    projector = ConsumerLoop(pool=pool, bootstrap="unused", topic="t", group_id="g",  # type: ignore[arg-type]
                             projections=[])
    projector.positions = {("t", 0): 52}
    consumer = NewLeaderConsumer()
    await projector._detect_broker_reset(consumer)
    assert consumer.seeks == []
    assert projector.positions == {("t", 0): 52}
    assert pool.conn.resets == []


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.value = b"{}"


async def test_partition_revoked_during_a_batch_does_not_crash(monkeypatch: Any) -> None:
    """A partition revoked while its batch was being applied is dropped from the
    positions, not crashed on (it once raised KeyError and stopped the daemon)."""
    from daemon import consumer as module
    from projections.batch import BatchOutcome

    projector = ConsumerLoop(pool=FakePool(), bootstrap="unused", topic="t",  # type: ignore[arg-type]
                          group_id="g", projections=[])
    projector.positions = {("t", 0): 5, ("t", 1): 9}

    async def applied_while_revoked(*_args: Any, **_kwargs: Any) -> BatchOutcome:
        projector.positions.pop(("t", 0))  # the rebalance listener ran meanwhile
        return BatchOutcome()

    monkeypatch.setattr(module, "apply_batch", applied_while_revoked)
    batch = {TopicPartition("t", 0): [Record(5), Record(6)], TopicPartition("t", 1): [Record(9)]}
    assert await projector._apply(object(), batch) is True  # type: ignore[arg-type]
    assert projector.positions == {("t", 1): 10}


class StopRaisesCancelled:
    """A consumer whose group coordinator is gone: it is never assigned anything, and
    its ``stop()`` raises ``CancelledError`` of its own (aio-libs/aiokafka#647)."""

    made = 0

    def __init__(self) -> None:
        StopRaisesCancelled.made += 1

    def subscribe(self, _topics: list[str], listener: Any = None) -> None:
        pass

    async def start(self) -> None:
        pass

    async def getmany(self, **_options: Any) -> dict[Any, Any]:
        await asyncio.sleep(0.01)
        return {}

    def assignment(self) -> set[Any]:
        return set()

    def highwater(self, _tp: TopicPartition) -> None:
        return None

    async def stop(self) -> None:
        raise asyncio.CancelledError


async def run_for(seconds: float, **options: Any) -> None:
    """Run a projector, with the consumers ``make_consumer`` gives, for ``seconds``: it
    must still be running then, and end when asked to stop."""
    projector = ConsumerLoop(pool=FakePool(), bootstrap="unused", topic="t",  # type: ignore[arg-type]
                             group_id="g", projections=[], **options)
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    await asyncio.sleep(seconds)
    assert not task.done(), task
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_consumer_whose_stop_raises_cancelled_is_replaced(monkeypatch: Any) -> None:
    """The watchdog replaces a stalled consumer even when its ``stop()`` raises
    CancelledError: the loop goes on with a new consumer (after a cluster outage the
    CancelledError once ended the projector's task)."""
    from daemon import consumer as module

    StopRaisesCancelled.made = 0
    monkeypatch.setattr(module, "make_consumer", lambda *_a, **_k: StopRaisesCancelled())
    await run_for(1.5, stall_after=0.1)  # stalled after 0.1 s, replaced 1 s later
    assert StopRaisesCancelled.made >= 2



class NoBrokerToBootstrap(StopRaisesCancelled):
    """Every broker of the cluster is down: ``start()`` cannot bootstrap."""

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")

    async def stop(self) -> None:
        pass


async def test_a_cluster_with_no_broker_up_is_waited_for(monkeypatch: Any) -> None:
    """A consumer that cannot bootstrap (the whole cluster restarting) is replaced
    and tried again; it once ended the projector's task, and with it the daemon."""
    from daemon import consumer as module

    StopRaisesCancelled.made = 0
    monkeypatch.setattr(module, "make_consumer", lambda *_a, **_k: NoBrokerToBootstrap())

    async def not_refused(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(module, "refusal", not_refused)
    await run_for(1.5)
    assert StopRaisesCancelled.made >= 2


class FetchHangs(StopRaisesCancelled):
    """A consumer whose fetch never returns (its group rejoining for ever, as the
    embedded broker's coordinator once left one in a chaos run)."""

    async def getmany(self, **_options: Any) -> dict[Any, Any]:
        await asyncio.Event().wait()
        return {}

    async def stop(self) -> None:
        pass


async def test_a_consumer_whose_fetch_hangs_is_replaced(monkeypatch: Any) -> None:
    """The watchdog runs between fetches, so a fetch that never returns would keep
    it from ever firing: the fetch is bounded by the stall time, and a consumer
    stuck in it is replaced like a stalled one (and stop is not held up by it)."""
    from daemon import consumer as module

    StopRaisesCancelled.made = 0
    monkeypatch.setattr(module, "make_consumer", lambda *_a, **_k: FetchHangs())
    await run_for(2.0, stall_after=0.2)  # stuck 0.2 s, replaced 1 s later, stuck again
    assert StopRaisesCancelled.made >= 2


class NeverAssigned(StopRaisesCancelled):
    """A consumer subscribed before ``start()``: aiokafka's start waits for the group to
    assign it partitions, and a group that never does (a rebalance that never ends,
    with a member gone) keeps it waiting for ever."""

    started = 0

    async def start(self) -> None:
        NeverAssigned.started += 1
        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass


async def test_a_start_that_never_returns_is_replaced(monkeypatch: Any) -> None:
    """A consumer whose start never returns is replaced after ``stall_after``, like one
    whose fetches stall: a chaos run once saw the projector hang there for good after a
    lost database connection, the relays resending and the replica never ready."""
    from daemon import consumer as module

    NeverAssigned.started = 0
    monkeypatch.setattr(module, "make_consumer", lambda *_a, **_k: NeverAssigned())
    await run_for(1.8, stall_after=0.2)  # stalled after 0.2 s, replaced 1 s later, again
    assert NeverAssigned.started >= 2
