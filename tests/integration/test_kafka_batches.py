"""``send_keyed`` on a real broker: every message on the partition ``producer.send``
would have chosen, in order per key, none lost or doubled, across full batches."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.kafka import ensure_topics, make_producer
from adapters.kafka_batches import send_keyed

PARTITIONS = 5


async def _read_all(bootstrap: str, topic: str, expected: int
                    ) -> dict[int, list[tuple[bytes, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sum(map(len, got.values())) < expected and loop.time() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                got[tp.partition].extend((r.key, r.value) for r in records)
        return got
    finally:
        await consumer.stop()


async def test_send_keyed_places_and_orders_like_send(kafka_bootstrap: str,
                                                      topic_prefix: str) -> None:
    batched, single = f"{topic_prefix}.batched", f"{topic_prefix}.single"
    await ensure_topics(kafka_bootstrap, [batched, single], partitions=PARTITIONS)
    # 300 keys, 20 events each, interleaved; values of 4 KiB so that a partition's
    # messages fill several of the producer's 1 MiB batches.
    messages = [(f"desk:contacts:{k}".encode(), f"{k}/{n}/".encode() + b"x" * 4096)
                for n in range(20) for k in range(300)]
    producer = make_producer(kafka_bootstrap)
    await producer.start()
    try:
        last = await send_keyed(producer, batched, messages)
        futures = [await producer.send(single, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    got = await _read_all(kafka_bootstrap, batched, len(messages))
    want = await _read_all(kafka_bootstrap, single, len(messages))
    assert {p: sorted(m) for p, m in got.items()} == {p: sorted(m) for p, m in want.items()}
    # Where each partition's last message went, as acknowledged (a fresh topic: 0 on).
    assert last == {p: len(records) - 1 for p, records in got.items() if records}
    for records in got.values():  # each key's events in the order they were given
        per_key: dict[bytes, list[int]] = defaultdict(list)
        for key, value in records:
            per_key[key].append(int(value.split(b"/")[1]))
        assert all(ns == list(range(20)) for ns in per_key.values())
    assert sum(map(len, got.values())) == len(messages)
