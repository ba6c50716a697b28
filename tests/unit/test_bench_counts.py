"""How the benchmark counts what the relays sent (ops/bench/workloads.py)."""

from __future__ import annotations

from ops.bench.workloads import SendCounter


def test_a_row_sent_again_counts_once_and_as_a_copy() -> None:
    """A relay sends rows again after a failed send or when it takes them for lost.
    Counting sends, a scenario waiting for as many acknowledgements as rows stopped
    its relays with rows still unsent behind the copies (a full-size run stalled so,
    4 events short)."""
    counter = SendCounter()
    counter([1, 2, 3, 4])
    counter([3, 4])  # the failed send's tail, sent again
    assert (counter.acked, counter.copies) == (4, 2)
    counter([5, 1_000_003])  # far seqs grow the bitmap
    counter([1_000_003])
    assert (counter.acked, counter.copies) == (6, 3)
    assert counter.last_ack > 0
