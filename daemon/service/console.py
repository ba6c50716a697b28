"""What the operator console shows beyond the API's use cases: the departments to
pick a board from, and the first sync's progress per source and module."""

from __future__ import annotations

from typing import Any

import asyncpg


async def departments(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The desk departments the handshake board knows, by name."""
    rows = await pool.fetch("SELECT department_id, name FROM handshake.departments"
                            " ORDER BY lower(coalesce(name, department_id)), department_id")
    return [{"id": r["department_id"], "name": r["name"]} for r in rows]


async def first_sync(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The first sync's progress (SYNC-08): captured of total, per source and module."""
    rows = await pool.fetch("SELECT source, module, total, captured, finished_at"
                            " FROM syncd.initial_sync ORDER BY source, module")
    return [{"source": r["source"], "module": r["module"], "total": r["total"],
             "captured": r["captured"], "finished": r["finished_at"] is not None}
            for r in rows]
