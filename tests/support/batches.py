"""Events applied as the projector applies a topic's messages: in batches, each batch
with fresh projection instances (a restart between batches)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from projections.batch import Message, Projection, apply_batch
from projections.db import Conn
from projections.events import ChangeEvent, encode_event


async def deliver_batches(conn: Conn, events: Sequence[ChangeEvent], *, start: int,
                          size: int, projections: Callable[[], list[Projection]]
                          ) -> tuple[int, int]:
    """Apply ``events`` from offset ``start`` of one partition in batches of ``size``
    through ``projections()``; the next offset, and how many events were applied (a
    redelivered event is not applied again)."""
    offset, applied = start, 0
    for first in range(0, len(events), size):
        chunk = events[first:first + size]
        messages = [Message("t", 0, offset + i, encode_event(e)) for i, e in enumerate(chunk)]
        outcome = await apply_batch(conn, group_id="g", messages=messages,
                                    starts={("t", 0): offset}, projections=projections())
        assert outcome.fenced is None
        offset += len(chunk)
        applied += len(outcome.applied)
    return offset, applied
