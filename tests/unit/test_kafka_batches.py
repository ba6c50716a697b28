"""The batched producer's placement is Kafka's default partitioner's, exactly: a key
placed differently after an upgrade would put one record's events on two partitions."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka_batches import murmur2, partition_of


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_murmur2_is_kafkas(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_a_key_lands_where_the_default_partitioner_puts_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_known_values() -> None:
    """Values of Kafka's own ``Utils.murmur2`` (its UtilsTest), as signed ints there."""
    for text, signed in ((b"21", -973932308), (b"foobar", -790332482),
                         (b"a-little-bit-long-string", -985981536),
                         (b"a-little-bit-longer-string", -1486304829),
                         (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
                         (b"abc", 479470107)):
        assert murmur2(text) == signed & 0xFFFFFFFF
