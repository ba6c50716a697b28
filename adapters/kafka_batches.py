"""Keyed messages produced a batch per partition, not a call per message.

The relays (and the signals publisher) send thousands of keyed messages at a time.
``AIOKafkaProducer.send`` costs a coroutine, a future, a size estimate and a
partitioner call per message, and aiokafka's partitioner is Kafka's murmur2 written
byte by byte in Python (about 11 µs a key here). ``send_keyed`` instead places each
message with the same hash, word by word, fills one ``BatchBuilder`` per partition
and hands each full batch to ``send_batch``: the broker sees the same partitions,
the same order per key and acks=all.

The partition of a key must never change while a topic holds its events (the
projector relies on one partition per record, in order), so the hash is Kafka's
default partitioner's, exactly: ``murmur2(key) & 0x7fffffff`` modulo the number of
partitions (``tests/unit/test_kafka_batches.py`` holds it to aiokafka's).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = words << 2
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives ``key`` (``partitions`` sorted)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


async def send_keyed(producer: AIOKafkaProducer, topic: str,
                     messages: Iterable[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce ``(key, value)`` messages in their order, one batch per partition at a
    time; return once the broker acknowledged every one (as ``producer`` acks), with
    the offset each partition's last message got. Raises what a failed batch raised
    (then some may have been written: the callers send again, and their readers drop
    copies)."""
    partitions = sorted(await producer.partitions_for(topic))
    open_batches: dict[int, Any] = {}  # aiokafka's BatchBuilder, untyped
    sent: list[tuple[int, int, asyncio.Future[Any]]] = []  # partition, count, ack

    async def send(partition: int, batch: Any) -> None:
        count = batch.record_count()
        sent.append((partition, count, await producer.send_batch(batch, topic,
                                                                 partition=partition)))

    for key, value in messages:
        partition = partition_of(key, partitions)
        batch = open_batches.get(partition)
        if batch is None:
            batch = open_batches[partition] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            # Full: this one goes, and the message opens the partition's next batch.
            await send(partition, batch)
            batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a message of {len(key) + len(value)} bytes exceeds"
                                 " the producer's batch size")
    for partition, batch in open_batches.items():
        await send(partition, batch)
    acks = await asyncio.gather(*(ack for _, _, ack in sent))
    last: dict[int, int] = {}
    for (partition, count, _), ack in zip(sent, acks, strict=True):
        # The ack names the batch's first offset; its messages follow one by one.
        last[partition] = max(last.get(partition, -1), ack.offset + count - 1)
    return last
