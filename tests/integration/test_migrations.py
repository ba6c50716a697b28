from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from adapters.migrate import MigrationError, load_migrations, migrate, pending


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_applied_in_order_each_once(empty_database_url: str, tmp_path: Path) -> None:
    """Files apply by number, not by listing order, and a second run applies nothing."""
    write(tmp_path, "0002_use.sql", "INSERT INTO t (v) VALUES ('second');")
    write(tmp_path, "0001_make.sql", "CREATE TABLE t (v text);")
    write(tmp_path, "0010_more.sql", "INSERT INTO t (v) VALUES ('tenth');")
    migrations = load_migrations(tmp_path)
    assert [m.version for m in migrations] == [1, 2, 10]
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await migrate(conn, migrations) == 3
        assert await migrate(conn, migrations) == 0
        assert [r["v"] for r in await conn.fetch("SELECT v FROM t")] == ["second", "tenth"]
        assert await pending(conn, migrations) == []
    finally:
        await conn.close()


async def test_two_concurrent_migrators_do_not_race(empty_database_url: str,
                                                    tmp_path: Path) -> None:
    """Two replicas migrating at once: the advisory lock makes one wait; each file once."""
    write(tmp_path, "0001_slow.sql",
          "SELECT pg_sleep(0.5); CREATE TABLE once (id int); INSERT INTO once VALUES (1);")
    migrations = load_migrations(tmp_path)
    a = await asyncpg.connect(empty_database_url)
    b = await asyncpg.connect(empty_database_url)
    try:
        counts = await asyncio.gather(migrate(a, migrations), migrate(b, migrations))
        assert sorted(counts) == [0, 1]
        assert await a.fetchval("SELECT count(*) FROM once") == 1
    finally:
        await a.close()
        await b.close()


async def test_changed_checksum_stops_startup(empty_database_url: str, tmp_path: Path) -> None:
    """An applied file whose text changed is a clear error naming the file."""
    write(tmp_path, "0001_make.sql", "CREATE TABLE t (v text);")
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, load_migrations(tmp_path))
        write(tmp_path, "0001_make.sql", "CREATE TABLE t (v text, w text);")
        with pytest.raises(MigrationError, match=r"0001_make\.sql was changed"):
            await migrate(conn, load_migrations(tmp_path))
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_half_applied(empty_database_url: str,
                                                            tmp_path: Path) -> None:
    """A failing file rolls back with its bookkeeping row; it is tried again next time."""
    write(tmp_path, "0001_bad.sql", "CREATE TABLE half (id int); SELECT * FROM missing_table;")
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, load_migrations(tmp_path))
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await pending(conn, load_migrations(tmp_path)) == [1]
    finally:
        await conn.close()


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    """Only NNNN_name.sql files are migrations."""
    write(tmp_path, "1_x.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_shipped_migrations_are_numbered_contiguously() -> None:
    """The project's own migrations are 1..N with no gap."""
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_a_first_sync_under_way_keeps_its_progress(empty_database_url: str) -> None:
    """0032 counts the first sync's released rows instead of counting the outboxes: a
    first sync under way when it applies keeps its figure (captured less what waits)."""
    from adapters import initial_sync

    shipped = load_migrations()
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, [m for m in shipped if m.version < 32])
        await conn.execute(
            "INSERT INTO syncd.initial_sync (source, module, cutoff, total, captured)"
            " VALUES ('crm', 'contacts', now(), 9, 7), ('crm', 'accounts', now(), 2, 2),"
            " ('desk', 'contacts', now(), 5, 5)")
        for side, origins in (("crm", ["import"] * 3), ("desk", ["import", "user"])):
            await conn.execute(
                f"INSERT INTO {side}.outbox (module, record_id, op, \"values\", modified_at,"
                " created_at, origin) SELECT 'contacts', n::text, 'create', '{}', now(), now(), o"
                " FROM unnest($1::text[]) WITH ORDINALITY AS u(o, n)", origins)
        await migrate(conn, shipped)
        assert await initial_sync.progress(conn) == initial_sync.Progress(16, 14, 14 - 3 - 1)
    finally:
        await conn.close()
