"""Apply the numbered SQL files of ``migrations/``: each once, in order.

Two replicas may start together, so the whole run holds a session-level
advisory lock; the second waits, then finds everything applied. Each file
runs in its own transaction together with its bookkeeping row, so a failed
file leaves nothing half-applied. A file whose text changed after it was
applied is refused: the schema it describes is no longer what the database
holds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from migrations import DIRECTORY
from projections.db import Conn

log = structlog.get_logger(__name__)

LOCK_KEY = 0x5359_4E43_4D49_4752  # "SYNCMIGR"
_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations cannot be applied; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = DIRECTORY) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match["name"], path.read_text())
    return [found[v] for v in sorted(found)]


_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS syncd;
CREATE TABLE IF NOT EXISTS syncd.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


async def migrate(conn: Conn, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing; return how many files were applied."""
    todo = load_migrations() if migrations is None else migrations
    applied_count = 0
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        # Only the owner may create: a least-privilege role (docs/reliability.md) runs
        # this at every start, and CREATE ... IF NOT EXISTS checks the privilege first.
        if await conn.fetchval("SELECT to_regclass('syncd.schema_migrations')") is None:
            await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM syncd.schema_migrations")
        applied = {row["version"]: row for row in rows}
        for migration in todo:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql was changed "
                        "after it was applied (checksum differs); restore the file or add a "
                        "new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO syncd.schema_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            applied_count += 1
            log.info("migration_applied", version=migration.version, name=migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_count


async def pending(conn: Conn, migrations: list[Migration] | None = None) -> list[int]:
    """Versions not yet applied (empty when the schema is current)."""
    todo = load_migrations() if migrations is None else migrations
    exists = await conn.fetchval("SELECT to_regclass('syncd.schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        rows = await conn.fetch("SELECT version FROM syncd.schema_migrations")
        done = {row["version"] for row in rows}
    return [m.version for m in todo if m.version not in done]
