"""Each record's last state, read from the event log for a set-based rebuild (issue 19).

Why: a projection whose state tables are a function of its records' *last* events (and,
at most, a few facts a query finds directly) need not be rebuilt by running its live
code over every logged event. One query picks each record's newest event of the
modules it reads; only those are decoded, and the projection reduces them by its own
rules, so no rule is written twice. A newest event that no longer decodes (logged under
older rules) is skipped by the per-event path too, which then keeps the record's state
from before it: such records' events are read again, in log order, and the caller's
reduction keeps the last that decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from projections.batch import LoggedEvent, Projection
from projections.db import Conn
from projections.events import InvalidEvent, decode_event

_EVENTS_OF = (
    "SELECT e.seq, e.payload::text AS payload FROM syncd.event_log e"
    " JOIN unnest($1::text[], $2::text[], $3::text[]) AS r(source, module, record_id)"
    "  USING (source, module, record_id) ORDER BY e.seq")


@dataclass(frozen=True)
class Rebuilt:
    records: int
    """Records whose last state was read (or events read, by ``unit``)."""
    undecodable: int
    """Newest events that did not decode (their records' earlier events were used)."""
    unit: str = "records' last events"


def decoded(rows: Sequence[Any]) -> tuple[list[LoggedEvent], int]:
    """The rows' events (``seq``, ``payload``) that decode, and how many did not."""
    events: list[LoggedEvent] = []
    bad = 0
    for row in rows:
        try:
            events.append(LoggedEvent(row["seq"], decode_event(row["payload"].encode())))
        except InvalidEvent:
            bad += 1
    return events, bad


_OWN_EVENTS = ("SELECT seq, payload::text AS payload FROM syncd.event_log"
               " WHERE source = $1 AND module = $2 AND seq > $3 ORDER BY seq LIMIT $4")


async def own_events(conn: Conn, source: str, module: str, projection: Projection, *,
                     chunk: int = 5000) -> Rebuilt:
    """Every logged event of one module, in log order, through ``projection`` (a fresh
    instance): for a projection that reads one module only but must walk its events in
    order (not a function of each record's last state), the per-event rebuild without
    reading and decoding the rest of the log. An event that does not decode is skipped,
    as the per-event path skips it."""
    after, count, bad = 0, 0, 0
    while True:
        rows = await conn.fetch(_OWN_EVENTS, source, module, after, chunk)
        if not rows:
            return Rebuilt(count, bad, unit=f"{source} {module} events")
        events, failed = decoded(rows)
        if events:
            await projection.apply(conn, events)
        after, count, bad = rows[-1]["seq"], count + len(rows), bad + failed


def newest_of(modules: str) -> str:
    """A FROM item: each record's newest logged event among ``modules`` (a condition on
    ``source`` and ``module``), as ``e`` (a row of ``syncd.event_log``). Grouped by hash
    on the narrow columns, the payloads read by primary key afterwards (sorting the
    whole log with its payloads spills to disk). For the set-based rebuilds, in Python
    (``last_events``) or in SQL (the CRM view's, the statistics' CRM people)."""
    return ("(SELECT max(seq) AS seq FROM syncd.event_log WHERE " + modules
            + " GROUP BY source, module, record_id) AS last JOIN syncd.event_log e USING (seq)")


async def last_events(conn: Conn, modules: str) -> tuple[list[LoggedEvent], Rebuilt]:
    """Each record's newest event among ``modules`` (a condition on ``source`` and
    ``module``), in log order, with every event of the records whose newest does not
    decode (the caller keeps, per record, the last it is given)."""
    rows = await conn.fetch(
        "SELECT e.seq, e.source, e.module, e.record_id, e.payload::text AS payload"
        " FROM " + newest_of(modules))
    events, bad = decoded(rows)
    if bad:
        kept = {item.seq for item in events}
        failed = [row for row in rows if row["seq"] not in kept]
        older = await conn.fetch(_EVENTS_OF, [r["source"] for r in failed],
                                 [r["module"] for r in failed], [r["record_id"] for r in failed])
        events += decoded(older)[0]
    events.sort(key=lambda item: item.seq)
    return events, Rebuilt(len(rows), bad)
