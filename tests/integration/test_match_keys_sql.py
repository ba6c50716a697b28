"""SYNC-06 as a property: PostgreSQL and Python compute the same key for every text."""

from __future__ import annotations

import asyncio

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.keys import WHITESPACE, account_key, email_key

# PostgreSQL text holds no NUL and UTF-8 no surrogate; every other code point is fair game,
# with the characters the two sides used to disagree on drawn more often.
_TRICKY = st.sampled_from([*WHITESPACE, "İ", "I", "i", "\u0131", "ß", "ẞ", "Σ", "ς", "µ", "K", "Å"])
_ANY = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_TEXT = st.text(st.one_of(_ANY, _TRICKY), max_size=40)


async def _sql_keys(dsn: str, texts: list[str]) -> list[tuple[str | None, str | None]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT syncd.email_key(t) AS e, syncd.account_key(t) AS a"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n", texts)
    finally:
        await conn.close()
    return [(row["e"], row["a"]) for row in rows]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(texts=st.lists(_TEXT, min_size=1, max_size=40))
def test_python_and_postgresql_give_the_same_keys(database_url: str, texts: list[str]) -> None:
    got = asyncio.run(_sql_keys(database_url, texts))
    assert got == [(email_key(t), account_key(t)) for t in texts]


async def test_the_candidate_query_uses_the_key_index(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in await conn.fetch(
            "EXPLAIN SELECT id FROM crm.contacts WHERE syncd.email_key(email) = ANY($1)",
            ["a@b.c"]))
    finally:
        await conn.close()
    assert "crm_contacts_email" in plan
