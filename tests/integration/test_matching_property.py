"""SYNC-06 and SYNC-10 as a property: matching never guesses. Whatever the order in which
records with one key arrive and however they are batched, a key held by exactly one
record on each side links them; held by more on either side it links none of them
and creates nothing (each is 'more than one matching record'); held on one side only,
one of them gets a twin and the others are 'already mapped'."""

from __future__ import annotations

import asyncio
import random

import asyncpg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from projections.batch import reset_offset
from projections.config import SyncConfig
from projections.keys import email_key
from projections.sync_plan import REASON_ALREADY_MAPPED, REASON_AMBIGUOUS
from tests.integration.test_convergence import TABLES, deliver, drain

KEYS = ("ann@x.org", "bo@y.net", "cy@z.com")

# Per key, the e-mails on each side: up to two records a side, in any letter case.
holders = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.randoms()),
                   min_size=len(KEYS), max_size=len(KEYS))


def _cased(email: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in email)


def interleaved(per_record: dict[tuple[str, str], list[bytes]], seed: int) -> list[bytes]:
    """The records' captures in one order ``seed`` picks, each record's in its own order."""
    rng = random.Random(seed)
    queues = [list(bodies) for bodies in per_record.values()]
    order: list[bytes] = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        order.append(queue.pop(0))
    return order


async def scenario(dsn: str, counts: list[tuple[int, int, random.Random]], seed: int,
                   batch_sizes: list[int]) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(f"TRUNCATE {TABLES}, desk.accounts, crm.accounts RESTART IDENTITY")
        await reset_offset(conn, "g", ("t", 0), 0)
        async with conn.transaction():  # all in the stores before any event is applied
            for key, (on_desk, on_crm, rng) in zip(KEYS, counts, strict=True):
                for side, n in (("desk", on_desk), ("crm", on_crm)):
                    for i in range(n):
                        await conn.execute(
                            f"INSERT INTO {side}.contacts (last_name, email) VALUES ($1, $2)",
                            f"{side}{i}", _cased(key, rng))
        per_record = await drain(conn)
        order = interleaved(per_record, seed)
        await deliver(conn, order, batch_sizes, 0, SyncConfig())
        links = await conn.fetch("SELECT desk_id, crm_id FROM sync.links")
        failures = await conn.fetch("SELECT source, record_id, reason FROM sync.failures"
                                    " WHERE status = 'open'")
        rows = {side: {str(r["id"]): email_key(r["email"]) for r in await conn.fetch(
            f"SELECT id, email FROM {side}.contacts")} for side in ("desk", "crm")}
        for key, (on_desk, on_crm, _) in zip(KEYS, counts, strict=True):
            ids = {side: {i for i, k in rows[side].items() if k == key} for side in rows}
            mine = [(link["desk_id"], link["crm_id"]) for link in links
                    if link["desk_id"] in ids["desk"] or link["crm_id"] in ids["crm"]]
            reasons = sorted(f["reason"] for f in failures
                             if f["record_id"] in ids[f["source"]])
            if on_desk and on_crm:
                assert (len(ids["desk"]), len(ids["crm"])) == (on_desk, on_crm)  # no twin
                if on_desk == on_crm == 1:
                    assert mine == [(min(ids["desk"]), min(ids["crm"]))] and reasons == []
                else:
                    assert mine == [] and reasons == [REASON_AMBIGUOUS] * (on_desk + on_crm)
            elif on_desk or on_crm:
                assert len(mine) == 1
                assert len(ids["desk"]) == max(on_desk, 1) and len(ids["crm"]) == max(on_crm, 1)
                assert reasons == [REASON_ALREADY_MAPPED] * (max(on_desk, on_crm) - 1)
    finally:
        await conn.close()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(counts=holders, seed=st.integers(0, 2**32),
       batch_sizes=st.lists(st.integers(1, 5), max_size=4))
def test_matching_never_guesses_whatever_the_order_or_batching(
        database_url: str, counts: list[tuple[int, int, random.Random]], seed: int,
        batch_sizes: list[int]) -> None:
    asyncio.run(scenario(database_url, counts, seed, batch_sizes))


EMAILS = st.sampled_from([*KEYS, "ANN@x.org ", None])
people = st.lists(st.tuples(EMAILS, EMAILS), max_size=3)


Edit = tuple[str, int, str, str | None]
edits = st.lists(st.tuples(st.sampled_from(["desk", "crm"]), st.integers(0, 2),
                           st.sampled_from(["email", "secondary_email"]), EMAILS), max_size=4)


async def outcome(dsn: str, desk: list[tuple[str | None, str | None]],
                  crm: list[tuple[str | None, str | None]], changes: list[Edit], seed: int,
                  batch_sizes: list[int]) -> tuple[object, ...]:
    """The links, open failures and records the sync leaves with secondary e-mails matched:
    the records created, then ``changes`` made (side, n-th record, field, value), the
    captures delivered in the order ``seed`` picks, in ``batch_sizes``. A twin is named
    by the record it was made for (ids follow the order of creation)."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        await conn.execute(f"TRUNCATE {TABLES}, desk.accounts, crm.accounts RESTART IDENTITY")
        await reset_offset(conn, "g", ("t", 0), 0)
        async with conn.transaction():
            for side, records in (("desk", desk), ("crm", crm)):
                for i, (email, secondary) in enumerate(records):
                    await conn.execute(
                        f"INSERT INTO {side}.contacts (last_name, email, secondary_email)"
                        " VALUES ($1, $2, $3)", f"{side}{i}", email, secondary)
        for side, n, field, value in changes:  # each its own capture, after the creates
            await conn.execute(f"UPDATE {side}.contacts SET {field} = $1,"
                               " modified_time = now() WHERE id = $2", value, n + 1)
        per_record = await drain(conn)
        order = interleaved(per_record, seed)
        await deliver(conn, order, batch_sizes, 0, SyncConfig(match_secondary_email=True))
        originals = {"desk": len(desk), "crm": len(crm)}

        def name(side: str, record_id: str, twin_of: str) -> str:
            return (f"{side}{record_id}" if int(record_id) <= originals[side]
                    else f"twin of {twin_of}")

        links = sorted((name("desk", r["desk_id"], f"crm{r['crm_id']}"),
                        name("crm", r["crm_id"], f"desk{r['desk_id']}"))
                       for r in await conn.fetch("SELECT desk_id, crm_id FROM sync.links"))
        failures = sorted((r["source"], r["record_id"], r["reason"]) for r in await conn.fetch(
            "SELECT source, record_id, reason FROM sync.failures WHERE status = 'open'"))
        counts = [await conn.fetchval(f"SELECT count(*) FROM {side}.contacts")
                  for side in ("desk", "crm")]
        return links, failures, counts
    finally:
        await conn.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(desk=people, crm=people, changes=edits, seed=st.integers(0, 2**32),
       batch_sizes=st.lists(st.integers(1, 5), max_size=4))
# Found by a longer search: a pair matched in the batch plans a write taking a CRM
# record's secondary e-mail away, but that record's newer change is still on its way,
# so the write waits (the guard) and the record keeps the e-mail meanwhile.
@example(desk=[("bo@y.net", "cy@z.com"), (None, "ann@x.org"), ("cy@z.com", "bo@y.net")],
         crm=[("bo@y.net", "cy@z.com"), ("bo@y.net", None)],
         changes=[("crm", 0, "email", "ann@x.org"), ("desk", 2, "secondary_email", "cy@z.com"),
                  ("crm", 0, "email", None), ("desk", 1, "email", None)],
         seed=898296, batch_sizes=[])
def test_secondary_emails_match_alike_however_the_events_are_batched(
        database_url: str, desk: list[tuple[str | None, str | None]],
        crm: list[tuple[str | None, str | None]], changes: list[Edit], seed: int,
        batch_sizes: list[int]) -> None:
    """SYNC-06 with secondary e-mails: the same events in the same order give the same
    links, failures and twins in one batch, in batches of one, or cut anywhere. A pair
    matched on its primary e-mail can leave one record without its old secondary
    e-mail once merged; a later record of the same batch holding that e-mail found the
    record as loaded and failed as "already mapped", where a batch of its own found it
    free and was matched or got a twin."""
    one_by_one = asyncio.run(outcome(database_url, desk, crm, changes, seed, [1] * 12))
    assert asyncio.run(outcome(database_url, desk, crm, changes, seed, [])) == one_by_one
    assert asyncio.run(outcome(database_url, desk, crm, changes, seed,
                               batch_sizes)) == one_by_one
