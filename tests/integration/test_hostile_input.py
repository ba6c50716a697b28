"""The hostile-input catalogue: each bad input gets a clear error and changes nothing
else, and the partition keeps moving (issue 5, invariant 4 and 5)."""

from __future__ import annotations

import json
import uuid

import pytest

from adapters.kafka import make_producer
from projections.events import encode_event
from projections.mapping import MappingError, build_mapping
from tests.support.events import change
from tests.support.pipeline import Pipeline

GOOD = json.loads(encode_event(change(record_id="x", values={"last_name": "ok"})))

def bad(record_id: str, **changes: object) -> bytes:
    """The good envelope with some fields changed (each case its own record)."""
    return json.dumps(GOOD | {"record_id": record_id} | changes).encode()


CATALOGUE: list[tuple[str, bytes]] = [
    ("malformed JSON", b'{"v": 1, "event_id": '),
    ("wrong type", bad("wt", values=["not", "an", "object"])),
    ("missing envelope field", json.dumps({k: v for k, v in GOOD.items()
                                           if k not in ("source", "record_id")}).encode()),
    ("unknown module", bad("um", module="spaceships")),
    ("unknown operation", bad("uo", op="explode")),
    ("payload over the size limit", bad("big", values={"last_name": "x" * 300_000})),
    ("NUL byte in text", bad("nul", values={"last_name": "a\u0000b"})),
    ("invalid UTF-8", b'{"v": 1, "source": "desk", "module": "\xff\xfe"}'),
    ("time without zone", bad("tz", modified_at="2026-01-01T00:00:00")),
]


async def produce(pipe: Pipeline, messages: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(pipe.bootstrap)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(pipe.topic, value, key=key)
    finally:
        await producer.stop()


async def test_every_bad_event_fails_alone_and_the_partition_moves(pipeline: Pipeline) -> None:
    """Each catalogue entry lands in the failure log with its reason and raw bytes; a good
    event sent after all of them on the same partition key is applied."""
    key = b"desk:contacts:x"
    after = change(record_id="after", values={"last_name": "After"})
    await produce(pipeline, [(key, raw) for _, raw in CATALOGUE] + [(key, encode_event(after))])
    await pipeline.wait_for_count("SELECT count(*) FROM syncd.event_log", 1)
    failures = await pipeline.fetch(
        "SELECT reason, raw FROM sync.failures ORDER BY id")
    raws = {bytes(r["raw"]) for r in failures}
    for name, raw in CATALOGUE:
        assert raw in raws, name
    assert {r["reason"] for r in failures} == {"incorrect parameter or value"}
    assert await pipeline.fetchval(
        "SELECT count(*) FROM crm.contacts WHERE last_name = 'After'") == 1


async def test_duplicate_event_id_with_other_content_is_ignored(pipeline: Pipeline) -> None:
    """A second event with a known id changes nothing, whatever it carries."""
    event_id = uuid.uuid4()
    first = change(record_id="d1", values={"last_name": "First"}, event_id=event_id)
    forged = change(record_id="d1", values={"last_name": "Forged"}, event_id=event_id, at=60)
    await produce(pipeline, [(first.key, encode_event(first))])
    await pipeline.wait_for_count("SELECT count(*) FROM syncd.event_log", 1)
    await produce(pipeline, [(forged.key, encode_event(forged))])
    later = change(record_id="d2", values={"last_name": "Later"})
    await produce(pipeline, [(later.key, encode_event(later))])
    await pipeline.wait_for_count("SELECT count(*) FROM syncd.event_log", 2)
    names = {r["last_name"] for r in await pipeline.fetch("SELECT * FROM crm.contacts")}
    assert names == {"First", "Later"}


async def test_events_of_one_record_out_of_order_converge(pipeline: Pipeline) -> None:
    """An older change arriving after a newer one does not roll the record back."""
    await pipeline.execute("INSERT INTO desk.contacts (id, last_name, phone)"
                           " OVERRIDING SYSTEM VALUE VALUES (900, 'Order', 'p0')")
    await pipeline.settle()
    newer = change(record_id="900", op="update", values={"last_name": "Order", "phone": "new"},
                   changed=["phone"], at=10**8)
    older = change(record_id="900", op="update", values={"last_name": "Order", "phone": "old"},
                   changed=["phone"], at=10**7)
    await produce(pipeline, [(newer.key, encode_event(newer)), (older.key, encode_event(older))])
    await pipeline.wait_for_count("SELECT count(*) FROM syncd.event_log", 3)
    assert await pipeline.fetchval("SELECT phone FROM crm.contacts") == "new"


@pytest.mark.parametrize("name", [
    "  Ω ‮محمد‬ 🦄 ",                         # right-to-left text, emoji, spaces
    "Robert'); DROP TABLE crm.contacts;--",   # SQL-looking
    "x" * 5000,                               # very long
])
async def test_odd_but_valid_values_arrive_intact(pipeline: Pipeline, name: str) -> None:
    """Unusual text is carried byte for byte; values are always bound, never pasted."""
    await pipeline.execute(
        "INSERT INTO desk.contacts (last_name, email) VALUES ($1, $2)",
        name, '"very.unusual@"@example.com')
    await pipeline.settle()
    row = await pipeline.fetchrow("SELECT last_name, email FROM crm.contacts")
    assert row is not None and row["last_name"] == name
    assert row["email"] == '"very.unusual@"@example.com'


async def test_timestamps_far_in_the_past_and_future(pipeline: Pipeline) -> None:
    """Times at the edges of the calendar are taken as they are, and order as they should."""
    for record_id, stamp in [("past", "0001-01-01T00:00:00+00:00"),
                             ("future", "9999-12-31T23:59:59+00:00")]:
        event = json.loads(encode_event(change(record_id=record_id,
                                               values={"last_name": record_id})))
        event |= {"modified_at": stamp, "created_at": stamp, "captured_at": stamp}
        await produce(pipeline, [(record_id.encode(), json.dumps(event).encode())])
    await pipeline.wait_for_count("SELECT count(*) FROM syncd.event_log", 2)
    names = {r["last_name"] for r in await pipeline.fetch("SELECT * FROM crm.contacts")}
    assert names == {"past", "future"}


@pytest.mark.parametrize(("entry", "message"), [
    ({"desk": "no_such_column", "crm": "email"}, "does not exist"),
    ({"desk": "custom.bad-name; DROP", "desk_type": "text", "crm": "email"},
     "not a valid key"),
    ({"desk": "custom.1st", "desk_type": "text", "crm": "email"}, "not a valid key"),
    ({"desk": "custom.x", "crm": "email"}, "need a type"),
    ({"desk": "email", "crm": "custom.n", "crm_type": "integer"}, "incompatible"),
])
def test_bad_mappings_are_refused(entry: dict[str, str], message: str) -> None:
    """A mapping naming a missing column or an invalid identifier is refused, by name."""
    with pytest.raises(MappingError, match=message):
        build_mapping("contacts", [entry])


def test_a_custom_fields_key_keeps_its_case() -> None:
    """``custom.<key>`` is the field's API name as the store spells it: Zoho CRM's are
    capitalised (``Customer_Tier``), and ``customer_tier`` would be another field."""
    mapping = build_mapping("contacts", [
        {"desk": "custom.cf_tier", "desk_type": "text",
         "crm": "custom.Customer_Tier", "crm_type": "text"}])
    assert mapping.custom_keys("crm") == ["Customer_Tier"]
    assert mapping.custom_keys("desk") == ["cf_tier"]


async def test_captured_change_that_does_not_decode_leaves_the_outbox(
        pipeline: Pipeline) -> None:
    """An outbox row whose event is rejected is released with the rejection (it once
    stayed, and the relay sent it again for ever)."""
    await pipeline.execute(
        "INSERT INTO desk.outbox (module, record_id, op, \"values\", modified_at, created_at,"
        " origin) VALUES ('spaceships', '1', 'create', '{}', now(), now(), 'user')")
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT reason FROM sync.failures WHERE module = 'unknown'") == (
        "incorrect parameter or value")
