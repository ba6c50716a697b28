"""The signals' origin and the handshake board decide a customer's standing by one rule
(HS-01, HS-02): on random streams of CRM contacts, leads and deals and desk tickets
(e-mail and phone keys, converted leads, deleted records), every open ticket's board
column matches the origin the signals projection computes from its own tables."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.batch import Message, apply_batch, reset_offset
from projections.events import encode_event
from projections.handshake import HandshakeProjection
from projections.sales_signals import PersonState, SalesSignalsProjection, State, TicketState
from tests.support.events import change

BASE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
EMAILS = ["ana@x.org", "ANA@x.org ", "bo@x.org", None]
PHONES = ["+33 6 12 34 56 78", "06.12.34.56.78", "555-123-4567", None]

people = st.builds(
    lambda module, rid, op, email, phone, converted: (
        "crm", module, str(rid), op,
        {"email": email, "phone": phone, **({"converted": True} if converted else {})}),
    st.sampled_from(["contacts", "leads"]), st.integers(1, 4),
    st.sampled_from(["create", "update", "update", "delete"]), st.sampled_from(EMAILS),
    st.sampled_from(PHONES), st.booleans())
deals = st.builds(
    lambda rid, contact, stage, op: ("crm", "deals", str(rid), op,
                                     {"contact_id": contact, "stage": stage}),
    st.integers(1, 3), st.integers(1, 4), st.sampled_from(["Open", "won", "lost", "other"]),
    st.sampled_from(["update", "update", "delete"]))
tickets = st.builds(
    lambda rid, email, phone, status: ("desk", "tickets", str(rid), "update",
                                       {"department_id": 1, "status": status,
                                        "requester_email": email, "requester_phone": phone}),
    st.integers(1, 4), st.sampled_from(EMAILS), st.sampled_from(PHONES),
    st.sampled_from(["Open", "Open", "Closed"]))
COLUMN_ORIGINS: dict[str, set[str | None]] = {
    "new": {None}, "contacts_leads": {"lead", "contact"}, "opportunities": {"contact"},
    "customers": {"customer"}}


async def check(dsn: str, stream: list[tuple[str, str, str, str, dict[str, Any]]],
                size: int) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        tables = [f"{r['schemaname']}.{r['tablename']}" for r in await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN"
            " ('handshake', 'sales_signals') AND tablename <> 'stream_state'")]
        await conn.execute(f"TRUNCATE {', '.join(tables)}, syncd.event_log, sync.deferred,"
                           " syncd.consumer_offsets")
        await reset_offset(conn, "g", ("t", 0), 0)
        bodies = [encode_event(change(source=source, module=module, record_id=rid, op=op,
                                      values=values, at=BASE + dt.timedelta(seconds=n),
                                      event_id=uuid.UUID(int=n + 1)))
                  for n, (source, module, rid, op, values) in enumerate(stream)]
        for first in range(0, len(bodies), size):
            messages = [Message("t", 0, first + i, body)
                        for i, body in enumerate(bodies[first:first + size])]
            outcome = await apply_batch(
                conn, group_id="g", messages=messages, starts={("t", 0): first},
                projections=[HandshakeProjection(), SalesSignalsProjection()])
            assert outcome.fenced is None
        state = State(
            tickets=[TicketState(**dict(r)) for r in await conn.fetch(
                "SELECT * FROM sales_signals.tickets")],
            people=[PersonState(r["kind"], r["record_id"], tuple(r["email_keys"]),
                                tuple(r["phone_keys"])) for r in await conn.fetch(
                "SELECT * FROM sales_signals.people")],
            deals=[(r["deal_id"], r["contact_id"], r["stage"]) for r in await conn.fetch(
                "SELECT * FROM sales_signals.deals")])
        board = await conn.fetch("SELECT ticket_id, board_column FROM handshake.board")
        for row in board:
            found = state.origin_of(state.tickets[row["ticket_id"]])
            assert found in COLUMN_ORIGINS[row["board_column"]], (row, found)
    finally:
        await conn.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.lists(st.one_of(people, people, deals, tickets, tickets), min_size=5,
                       max_size=40),
       size=st.integers(1, 10))
def test_the_board_and_the_origins_agree(database_url: str,
                                         stream: list[tuple[str, str, str, str,
                                                            dict[str, Any]]],
                                         size: int) -> None:
    """Every open ticket's column is its requester's origin's standing."""
    asyncio.run(check(database_url, stream, size))
