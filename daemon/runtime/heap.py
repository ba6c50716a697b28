"""The garbage collector's settings for the daemon's process.

Why: the projector works in batches. Each event's decoded values, its link, its
outcome and the rows it writes live until the batch commits, and reference counting
frees them then; almost none of it is ever cyclic garbage. CPython's cyclic collector
does not know that: it runs a young collection every 700 net allocations, each walking
the batch's live objects again to find none to free and promoting them, and the
promoted objects in turn set off full collections that walk the whole heap, the
imported modules' objects included, every few batches. So the process freezes what
exists once it has started (never walked again: modules, configuration) and lets the
young generation grow to about a batch's worth of objects before it is collected.
The collector still runs, so cyclic garbage is still freed, only later.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_AFTER = 100_000
"""Net allocations between young collections (CPython's default is 700)."""


def settle() -> None:
    """Freeze the objects made so far and space the young collections out: once, when
    the process has imported and configured what it runs."""
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, older, oldest)
