"""Capture compiled per table (migration 0033): every captured table's triggers call a
function of its own that holds the statement ``syncd.capture_sql`` builds from the
table's columns now, and a column added to a captured table is captured once the
captures are compiled again (what a migration that changes a store table must do)."""

from __future__ import annotations

import asyncpg

_CAPTURED = """
SELECT t.tgrelid::regclass::text AS rel, substr(t.tgname, length('capture_') + 1) AS op,
       p.proname, p.pronamespace::regnamespace::text AS schema, p.prosrc,
       syncd.capture_sql(substr(t.tgname, length('capture_') + 1), t.tgrelid) AS wanted,
       syncd.capture_function(substr(t.tgname, length('capture_') + 1), t.tgrelid) AS own,
       pg_get_triggerdef(t.oid) AS def
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
WHERE NOT t.tgisinternal AND t.tgname IN ('capture_insert', 'capture_update', 'capture_delete')
ORDER BY 1, 2
"""


async def stale(conn: asyncpg.Connection) -> list[str]:
    """The captured tables' triggers whose function is not their own compiled one, or
    holds another statement than the table's columns give now."""
    found = []
    for row in await conn.fetch(_CAPTURED):
        if (row["schema"], row["proname"]) != ("syncd", row["own"]):
            found.append(f"{row['rel']} {row['op']}: calls {row['schema']}.{row['proname']}")
        elif row["wanted"] not in row["prosrc"]:
            found.append(f"{row['rel']} {row['op']}: built from other columns")
    return found


async def test_every_captured_table_calls_its_compiled_capture(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(_CAPTURED)
        tables = {row["rel"] for row in rows}
        # Every store table is captured, each for the three operations.
        assert {"desk.contacts", "crm.contacts", "crm.accounts", "desk.tickets",
                "desk.ticket_attachments", "crm.tasks"} <= tables
        assert len(rows) == 3 * len(tables)
        assert await stale(conn) == []
        # The sync's writes to the CRM's contacts and accounts are still captured
        # ('with_sync', migrations 0013 and 0025); the others' are not.
        with_sync = {row["rel"] for row in rows if "'with_sync'" in row["def"]}
        assert with_sync == {"crm.contacts", "crm.accounts"}
    finally:
        await conn.close()


async def test_a_column_added_is_captured_once_compiled_again(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ALTER TABLE desk.contacts ADD COLUMN nickname text")
        assert await stale(conn) == ["desk.contacts update: built from other columns"]
        await conn.execute(
            "INSERT INTO desk.contacts (id, email, created_time, modified_time)"
            " VALUES (1, 'ann@example.org', now(), now())")
        await conn.execute("UPDATE desk.contacts SET nickname = 'Annie' WHERE id = 1")
        # Built from the old columns: the new one's change is not seen.
        assert await conn.fetchval(
            "SELECT count(*) FROM desk.outbox WHERE op = 'update'") == 0

        compiled = await conn.fetchval("SELECT syncd.compile_captures()")
        assert compiled == len(await conn.fetch(_CAPTURED))
        assert await stale(conn) == []
        await conn.execute("UPDATE desk.contacts SET nickname = 'Ann' WHERE id = 1")
        row = await conn.fetchrow(
            "SELECT op, changed, \"values\" ->> 'nickname' AS nickname FROM desk.outbox"
            " WHERE op = 'update'")
        assert row is not None and (row["op"], row["changed"], row["nickname"]) == (
            "update", ["nickname"], "Ann")
    finally:
        await conn.close()


async def test_a_table_not_compiled_is_captured_by_the_generic_functions(
        database_url: str) -> None:
    """A captured table a migration made without compiling it still records what the
    compiled functions would: the generic functions run the same statements."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("""
            CREATE TABLE crm.campaigns (id bigint PRIMARY KEY, name text,
                custom jsonb NOT NULL DEFAULT '{}', deleted boolean NOT NULL DEFAULT false,
                created_time timestamptz NOT NULL, modified_time timestamptz NOT NULL);
            CREATE TRIGGER capture_insert AFTER INSERT ON crm.campaigns
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_insert();
            CREATE TRIGGER capture_update AFTER UPDATE ON crm.campaigns
                REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_update();
            CREATE TRIGGER capture_delete AFTER DELETE ON crm.campaigns
                REFERENCING OLD TABLE AS old_rows
                FOR EACH STATEMENT EXECUTE FUNCTION syncd.capture_delete();
        """)
        assert len(await stale(conn)) == 3

        async def capture_once() -> list[tuple[str, list[str] | None]]:
            await conn.execute(
                "INSERT INTO crm.campaigns (id, name, created_time, modified_time)"
                " VALUES (7, 'spring', now(), now())")
            await conn.execute("UPDATE crm.campaigns SET name = 'summer',"
                               " custom = '{\"budget\": 3}' WHERE id = 7")
            await conn.execute("UPDATE crm.campaigns SET deleted = true WHERE id = 7")
            await conn.execute("DELETE FROM crm.campaigns WHERE id = 7")
            rows = await conn.fetch("DELETE FROM crm.outbox RETURNING seq, op, changed")
            return [(r["op"], r["changed"]) for r in sorted(rows, key=lambda r: r["seq"])]

        generic = await capture_once()
        assert generic == [("create", None), ("update", ["custom.budget", "name"]),
                           ("delete", ["deleted"]), ("delete", None)]
        await conn.execute("SELECT syncd.compile_captures()")
        assert await stale(conn) == []
        assert await capture_once() == generic
    finally:
        await conn.close()
