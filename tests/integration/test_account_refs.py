"""A contact's account reference is synced through the mapping table (issue 15): each
side points at its own twin of the account, a reference to an account not linked yet
waits for it, one to an account that does not exist fails alone, and nothing loops."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from adapters.relay import FETCH_OUTBOX
from daemon.service.failures import retry_failures
from projections.batch import Message, apply_batch, reset_offset
from projections.config import SyncConfig
from projections.sync import SyncProjection
from projections.sync_plan import REASON_UNKNOWN_ACCOUNT
from tests.support.pipeline import Pipeline


async def twin(pipe: Pipeline, module: str, side: str, record_id: int) -> int | None:
    """The other side's record linked to ``side``'s ``record_id``."""
    other = "crm" if side == "desk" else "desk"
    found = await pipe.fetchval(
        f"SELECT {other}_id::bigint FROM sync.links WHERE module = $1 AND {side}_id = $2",
        module, str(record_id))
    return int(found) if found is not None else None


async def account_of(pipe: Pipeline, side: str, contact_id: int) -> int | None:
    found = await pipe.fetchval(f"SELECT account_id FROM {side}.contacts WHERE id = $1",
                                contact_id)
    return int(found) if found is not None else None


async def open_failures(pipe: Pipeline) -> list[tuple[str, str, str]]:
    rows = await pipe.fetch("SELECT source, record_id, reason FROM sync.failures"
                            " WHERE status = 'open' ORDER BY id")
    return [(r["source"], r["record_id"], r["reason"]) for r in rows]


async def assert_quiet(pipe: Pipeline) -> None:
    """No loop: once drained, the outboxes stay empty and nothing is logged, decided or
    written any more."""
    await pipe.drain()
    query = ("SELECT (SELECT count(*) FROM syncd.event_log), (SELECT count(*) FROM"
             " sync.outcomes), (SELECT max(modified_time) FROM desk.contacts),"
             " (SELECT max(modified_time) FROM crm.contacts)")
    before = tuple(await pipe.fetchrow(query) or ())
    await asyncio.sleep(0.5)
    await pipe.drain()
    assert tuple(await pipe.fetchrow(query) or ()) == before
    assert await pipe.fetchval("SELECT (SELECT count(*) FROM desk.outbox)"
                               " + (SELECT count(*) FROM crm.outbox)") == 0


async def test_crm_reference_reaches_the_desk_twin_changed_and_cleared(
        pipeline: Pipeline) -> None:
    """The acceptance check: a CRM contact linked to account A ends, on the desk,
    pointing at A's desk twin; a change of only its account, and clearing it, follow;
    the sync's own writes are echoes, nothing loops."""
    acme = await pipeline.fetchval(
        "INSERT INTO crm.accounts (account_name) VALUES ('Acme') RETURNING id")
    globex = await pipeline.fetchval(
        "INSERT INTO crm.accounts (account_name) VALUES ('Globex') RETURNING id")
    await pipeline.drain()
    contact = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email, account_id) VALUES ('Doe', 'd@x.org', $1)"
        " RETURNING id", acme)
    await pipeline.drain()
    desk_contact = await twin(pipeline, "contacts", "crm", contact)
    assert desk_contact is not None
    desk_acme = await twin(pipeline, "accounts", "crm", acme)
    assert desk_acme is not None
    assert await account_of(pipeline, "desk", desk_contact) == desk_acme
    assert await account_of(pipeline, "crm", contact) == acme  # the source is left alone
    await assert_quiet(pipeline)

    await pipeline.execute("UPDATE crm.contacts SET account_id = $1 WHERE id = $2",
                           globex, contact)
    await pipeline.drain()
    assert await account_of(pipeline, "desk", desk_contact) == await twin(
        pipeline, "accounts", "crm", globex)
    await pipeline.execute("UPDATE crm.contacts SET account_id = NULL WHERE id = $1", contact)
    await pipeline.drain()
    assert await account_of(pipeline, "desk", desk_contact) is None
    assert await open_failures(pipeline) == []
    assert await pipeline.fetchval("SELECT count(*) FROM sync.pending_refs") == 0
    await assert_quiet(pipeline)


async def test_desk_reference_reaches_the_crm_two_way_not_one_way(pipeline: Pipeline) -> None:
    """Two-way, a desk contact's account reaches the CRM as the account's CRM twin;
    one-way CRM -> desk, a desk change of it is not sent, and the CRM's next change of
    the contact gives the desk the CRM's reference again."""
    north = await pipeline.fetchval(
        "INSERT INTO desk.accounts (account_name) VALUES ('North') RETURNING id")
    south = await pipeline.fetchval(
        "INSERT INTO desk.accounts (account_name) VALUES ('South') RETURNING id")
    await pipeline.drain()
    contact = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email, account_id) VALUES ('Roe', 'r@x.org', $1)"
        " RETURNING id", north)
    await pipeline.drain()
    crm_contact = await twin(pipeline, "contacts", "desk", contact)
    crm_north = await twin(pipeline, "accounts", "desk", north)
    assert crm_contact is not None and crm_north is not None
    assert await account_of(pipeline, "crm", crm_contact) == crm_north
    await assert_quiet(pipeline)

    pipeline.configure(direction="crm_to_desk")
    await pipeline.execute("UPDATE desk.contacts SET account_id = $1 WHERE id = $2",
                           south, contact)
    await pipeline.drain()
    assert await account_of(pipeline, "crm", crm_contact) == crm_north
    await pipeline.execute("UPDATE crm.contacts SET phone = '1' WHERE id = $1", crm_contact)
    await pipeline.drain()
    assert await account_of(pipeline, "desk", contact) == north
    assert await pipeline.fetchval("SELECT phone FROM desk.contacts WHERE id = $1",
                                   contact) == "1"
    assert await open_failures(pipeline) == []
    await assert_quiet(pipeline)


async def test_a_reference_waits_for_its_account_then_resolves(pipeline: Pipeline) -> None:
    """A contact whose account is not linked yet (the account's event comes later) is
    written without it; the reference waits, and is written when the account links."""
    assert pipeline.pool is not None
    async with pipeline.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL syncd.capture = 'off'")  # there already, no event
        acme = await conn.fetchval(
            "INSERT INTO crm.accounts (account_name) VALUES ('Acme') RETURNING id")
    contact = await pipeline.fetchval(
        "INSERT INTO crm.contacts (first_name, last_name, email, account_id)"
        " VALUES ('Jo', 'Doe', 'd@x.org', $1) RETURNING id", acme)
    await pipeline.drain()
    desk_contact = await twin(pipeline, "contacts", "crm", contact)
    assert desk_contact is not None
    assert await pipeline.fetchval("SELECT first_name FROM desk.contacts WHERE id = $1",
                                   desk_contact) == "Jo"
    assert await account_of(pipeline, "desk", desk_contact) is None
    assert [tuple(r) for r in await pipeline.fetch(
        "SELECT side, contact_id, account_id FROM sync.pending_refs")] == [
        ("desk", str(desk_contact), str(acme))]
    assert await open_failures(pipeline) == []

    await pipeline.execute("UPDATE crm.accounts SET website = 'acme.example' WHERE id = $1",
                           acme)
    await pipeline.drain()
    desk_acme = await twin(pipeline, "accounts", "crm", acme)
    assert desk_acme is not None
    assert await account_of(pipeline, "desk", desk_contact) == desk_acme
    assert await pipeline.fetchval("SELECT count(*) FROM sync.pending_refs") == 0
    assert await open_failures(pipeline) == []
    await assert_quiet(pipeline)


async def test_an_unknown_account_fails_only_the_reference(pipeline: Pipeline) -> None:
    """A reference to an account its store does not hold is a failure with its reason;
    the contact's other fields still sync (it is written without an account)."""
    contact = await pipeline.fetchval(
        "INSERT INTO crm.contacts (first_name, last_name, email, account_id)"
        " VALUES ('Al', 'Poe', 'p@x.org', 987654) RETURNING id")
    await pipeline.drain()
    desk_contact = await twin(pipeline, "contacts", "crm", contact)
    assert desk_contact is not None
    row = await pipeline.fetchrow("SELECT first_name, last_name, account_id FROM desk.contacts"
                                  " WHERE id = $1", desk_contact)
    assert row is not None and tuple(row) == ("Al", "Poe", None)
    assert await open_failures(pipeline) == [("crm", str(contact), REASON_UNKNOWN_ACCOUNT)]
    detail = await pipeline.fetchval("SELECT detail FROM sync.failures")
    assert "crm account 987654 does not exist" in detail
    assert await pipeline.fetchval("SELECT count(*) FROM sync.pending_refs") == 0
    history = await pipeline.fetchrow(
        "SELECT added, failed FROM sync.history WHERE module = 'contacts'")
    assert history is not None and tuple(history) == (1, 1)
    # Once the account exists, retrying the failure writes the reference (the retried
    # change equals what the CRM holds, but the desk lacks the account: no echo).
    assert pipeline.pool is not None
    await pipeline.execute("INSERT INTO crm.accounts (id, account_name) VALUES (987654, 'Late')")
    await pipeline.drain()
    assert await account_of(pipeline, "desk", desk_contact) is None
    retried = await retry_failures(pipeline.pool, ids=None, reason=REASON_UNKNOWN_ACCOUNT,
                                   everything=False)
    assert retried["retried"] == 1
    await pipeline.drain()
    assert await account_of(pipeline, "desk", desk_contact) == await twin(
        pipeline, "accounts", "crm", 987654)
    assert await open_failures(pipeline) == []
    await assert_quiet(pipeline)


async def _outbox(conn: asyncpg.Connection) -> list[bytes]:
    bodies = []
    for source in ("desk", "crm"):
        rows = await conn.fetch(FETCH_OUTBOX.format(schema=source), 0, 10_000, source)
        bodies += [row["body"].encode() for row in rows
                   if json.loads(row["body"])["origin"] != "sync"]
    return bodies


async def _deliver(conn: asyncpg.Connection, bodies: list[bytes], offset: int) -> int:
    """One batch of ``bodies``, in that order, through a new projection (a restart)."""
    messages = [Message("t", 0, offset + i, body) for i, body in enumerate(bodies)]
    outcome = await apply_batch(conn, group_id="g", messages=messages,
                                starts={("t", 0): offset},
                                projections=[SyncProjection(SyncConfig)])
    assert outcome.fenced is None and outcome.problems == []
    return offset + len(bodies)


def _module(body: bytes) -> str:
    return str(json.loads(body)["module"])


async def test_contact_before_its_account_in_one_batch_and_across_batches(
        database_url: str) -> None:
    """Log order decides nothing: a contact whose account's event comes after it, in
    the same batch or in a later one (a restart between), ends at the account's twin."""
    conn = await asyncpg.connect(database_url, server_settings={"timezone": "UTC"})
    try:
        await reset_offset(conn, "g", ("t", 0), 0)
        for n, name in enumerate(("Acme", "Globex")):
            account = await conn.fetchval(
                "INSERT INTO desk.accounts (account_name) VALUES ($1) RETURNING id", name)
            await conn.execute("INSERT INTO desk.contacts (last_name, email, account_id)"
                               " VALUES ('Doe', $1, $2)", f"d{n}@x.org", account)
        bodies = await _outbox(conn)
        contacts = [b for b in bodies if _module(b) == "contacts"]
        accounts = [b for b in bodies if _module(b) == "accounts"]
        # Acme: contact then account, one batch. Globex: the contact now, its account
        # in the next batch.
        offset = await _deliver(conn, [contacts[0], accounts[0], contacts[1]], 0)
        assert [tuple(r) for r in await conn.fetch(
            "SELECT side, account_id FROM sync.pending_refs")] == [
            ("crm", json.loads(accounts[1])["record_id"])]
        await _deliver(conn, [accounts[1]], offset)
        pairs = await conn.fetch(
            "SELECT d.account_id AS desk_account, c.account_id AS crm_account,"
            " a.crm_id::bigint AS twin FROM sync.links l"
            " JOIN desk.contacts d ON d.id = l.desk_id::bigint"
            " JOIN crm.contacts c ON c.id = l.crm_id::bigint"
            " JOIN sync.links a ON a.module = 'accounts' AND a.desk_id = d.account_id::text"
            " WHERE l.module = 'contacts' ORDER BY d.id")
        assert len(pairs) == 2
        assert all(p["crm_account"] == p["twin"] is not None for p in pairs)
        assert await conn.fetchval("SELECT count(*) FROM sync.pending_refs") == 0
        assert await conn.fetchval("SELECT count(*) FROM sync.failures") == 0
    finally:
        await conn.close()
