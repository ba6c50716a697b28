"""A store the daemon reaches over its API, as the composition root wires it: what
the batch reads of it (``projections.stores.deferred.RemoteReads``) and the target
its command writer delivers to (``adapters.command_writer.Target``). The hosted
desk's and CRM's adapters are each one of these."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from adapters.command_writer import Backoff, Target
from projections.stores.deferred import RemoteReads

RootTask = Callable[[asyncio.Event], Awaitable[None]]
"""A task the supervisor runs until the stop event (as ``daemon.runtime.supervisor``'s)."""


@dataclass(frozen=True)
class RemoteStore:
    reads: RemoteReads
    target: Target
    concurrency: int = 8
    """Records written at once (each record's writes stay in order)."""
    backoff: Backoff = field(default_factory=Backoff)
    recheck: float = 60.0
    """Seconds between tries while the store takes no write (``Unavailable``)."""
    capture: Callable[[asyncpg.Pool], RootTask] | None = None
    """Makes the store's change capture (a root task on the daemon's pool: a poll,
    a notification intake), which puts its changes into its outbox."""
