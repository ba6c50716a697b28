"""The database connection type every projection takes, and the match-key locks."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.InternalClientError)
"""What asyncpg raises when the database went away under a task (refused, reset or
terminated connections, a server shutting down): the long-running tasks log it, wait
and start over, since what they did not commit is done again. A connection the server
terminates mid-operation sometimes surfaces as ``InternalClientError`` ("cannot switch
to state …; another operation is in progress", MagicStack/asyncpg#1069) rather than
``InterfaceError``; the pool terminates such a connection when its reset fails."""


# Match-key locks (OWN-05) live in the two-int advisory lock space, apart from the
# single-key locks (APPLY_LOCK, the relays', replay's): (class, bucket). A key is
# hashed into one of KEY_BUCKETS buckets, so a batch takes at most KEY_BUCKETS locks
# per class however many keys it holds: the lock table is shared by the whole server
# (max_locks_per_transaction x max_connections, 6,400 by default), and a lock per key
# ran it out of space on a first sync's batches. Two batches that share a bucket
# wait for each other, which is only ever slower, never wrong. Within a transaction
# locks are taken in ascending (class, bucket) order, which keeps replicas free of
# deadlocks: the sync's match keys first, then the handshake's contacts, its match
# keys and its moves lock (the handshake runs while the sync plans, before it writes).
# The sync's references lock (``refs.REFS_LOCK``, single-key space) is taken with its
# writes, after all of those; a batch resolving waiting references locks
# those contacts' links after it, so two replicas can deadlock there: PostgreSQL
# detects it and the batch is read again (``syncd_batches_conflicted_total``).
KEY_BUCKETS = 1024
SYNC_MATCH_KEYS = 1
HANDSHAKE_CONTACTS = 2
HANDSHAKE_KEYS = 3
HANDSHAKE_MOVES = 4
REMOTE_CAPTURE = 5  # (class, hashtext of "store.module"): adapters.remote_capture


def key_buckets(keys: Iterable[str]) -> list[int]:
    """The sorted buckets of ``keys`` (crc32: the same in every process and version)."""
    return sorted({zlib.crc32(key.encode()) % KEY_BUCKETS for key in keys})


async def lock_keys(conn: Conn, lock_class: int, keys: Iterable[str]) -> None:
    """Take the transaction advisory locks of ``keys`` in ``lock_class``, in order."""
    buckets = key_buckets(keys)
    if buckets:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, b) FROM unnest($2::int[]) AS b",
            lock_class, buckets)


def loads_json(text: str) -> Any:
    """JSON text from PostgreSQL as Python values: msgspec, several times faster than the
    json module and giving the same values; the json module for what msgspec refuses
    (a number beyond a float's range, which json reads as infinity)."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)
