"""A store the daemon reaches over its API, as the composition root wires it: what
the batch reads of it (``projections.stores.deferred.RemoteReads``) and the target
its command writer delivers to (``adapters.command_writer.Target``). The hosted
desk's and CRM's adapters are each one of these."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from adapters.call_budget import CallBudget
from adapters.command_writer import ActionTarget, Backoff, Target
from adapters.store_access import Checks
from projections.stores.deferred import RemoteReads
from projections.stores.desk_tickets import DeskTickets
from projections.stores.port import Found, Values
from projections.sync_plan import held_keys

RootTask = Callable[[asyncio.Event], Awaitable[None]]
"""A task the supervisor runs until the stop event (as ``daemon.runtime.supervisor``'s)."""


class WebhookIntake(Protocol):
    """A store's callbacks to the daemon (``POST /webhooks/{name}``), as its adapter
    reads them: checked, then captured into its outbox before they are answered."""

    name: str

    def authentic(self, query: Mapping[str, str]) -> bool:
        """Whether the callback carries the secret the store was given."""
        ...

    async def accept(self, pool: asyncpg.Pool, raw: bytes) -> int:
        """Capture the callback's changes; return how many; ``ValueError`` for a body
        that is not the store's."""
        ...


@dataclass(frozen=True)
class RemoteStore:
    reads: RemoteReads
    target: Target
    concurrency: int = 8
    """Write calls at once: a record each, or up to a batch target's ``batch_size``
    records each (each record's writes stay in order)."""
    backoff: Backoff = field(default_factory=Backoff)
    recheck: float = 60.0
    """Seconds between tries while the store takes no write (``Unavailable``)."""
    capture: Callable[[asyncpg.Pool], RootTask] | None = None
    """Makes the store's change capture (a root task on the daemon's pool: a poll,
    a notification intake), which puts its changes into its outbox."""
    intake: WebhookIntake | None = None
    """The store's callbacks, when it makes them (the HTTP listener routes them)."""
    budget: CallBudget | None = None
    """What the organisation may spend; counting credits, its spending is recorded
    (``adapters.credit_ledger``) for restarts and replicas to see."""
    tickets: Callable[[asyncpg.Pool], DeskTickets] | None = None
    """A hosted desk's ticket actions for the handshake board, on the readers' pool
    (the capture of what they change)."""
    actions: Callable[[asyncpg.Pool], ActionTarget] | None = None
    """A hosted desk's carrying out of CRM users' ticket actions, for its writer (the
    capture of what they change on the pool)."""
    access: Checks | None = None
    """The store's checks of its credentials, scopes and licence (``syncd integration
    check``'s), made before its capture and writer start (``store_access``)."""
    mapping_check: Callable[[str, list[str]], Awaitable[str | None]] | None = None
    """Why the store cannot hold the custom fields a mapping names on its side (the
    module, their keys), or None: asked before a mapping changes."""


async def find_by_keys(module: str, keys: Sequence[str], *, secondary: bool,
                       search: Callable[[list[str]], Awaitable[list[Values]]],
                       keys_a_call: int = 1, at_once: int = 4) -> list[Found]:
    """The port's ``find`` over a store's own search: ``search`` is called with up to
    ``keys_a_call`` keys at a time (each record's values with its ``id``), ``at_once``
    calls at a time; what comes back is checked against the sync's normalised keys,
    since a store's matching is not the sync's."""
    wanted = list(dict.fromkeys(keys))
    gate = asyncio.Semaphore(at_once)

    async def one(chunk: list[str]) -> list[Values]:
        async with gate:
            return await search(chunk)

    answers = await asyncio.gather(*(one(wanted[start:start + keys_a_call])
                                     for start in range(0, len(wanted), keys_a_call)))
    asked = set(wanted)
    found: dict[tuple[str, str], Found] = {}
    for values in (v for answer in answers for v in answer):
        for held, via in held_keys(module, values, secondary=secondary):
            if held in asked:
                found[(values["id"], held)] = Found(values["id"], values, held, via)
    return sorted(found.values(), key=lambda f: (f.id, f.key))
