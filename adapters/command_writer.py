"""A remote store's writer: delivers the command outbox (``sync.commands``) to it.

One writer is active per store across replicas (a session advisory lock on a
connection of its own: a replica that dies releases it with its connection; the
others wait as standbys). It takes the oldest due command of up to
``concurrency`` records at a time, delivers them concurrently, and settles each in
one transaction with what came of it:

* landed: the command goes and the write's outcome, the record as the target now
  holds it (its id, its modification time), is appended to the store's outbox as
  a change of origin ``sync``, the way the embedded stores capture the sync's own
  writes; the projector records it like any event, exactly once;
* refused (``write_errors.Refused``): the command goes and its cause event's
  outcome is a failure with the refusal's reason, retryable like any failure; the
  record's later commands go on;
* unavailable (``write_errors.Unavailable``: credentials, a scope or the licence
  refused): nothing is failed; every write to the target waits ``recheck`` seconds
  and is tried again, and ``unavailable`` says why (``/readyz``, a metric);
* parked (``write_errors.Parked``: the store's credit budget, ``call_budget``):
  every write to the target waits until credits return; nothing fails and
  ``parked`` says why (the status, ``syncd_store_parked``);
* stale (``write_errors.Stale``: the record changed after the newest change of it
  the sync had seen): the command goes, for that newer change, once something will
  bring the sync's decision again (``remote_capture.after_stale_write``: the
  change's event, or, when only the record's time moved, a change touching no
  field); it waits while the store's capture has not fetched the new version, and
  past ``budget`` fails as an edit the sync never saw; what the store holds is
  unknown to the link from then on;
* transient (``write_errors.Transient``, a timeout, a lost connection): tried
  again after a capped exponential backoff with jitter, or the ``Retry-After`` the
  target asked for if longer; a record whose head waits holds back its own later
  commands only, but a ``Retry-After`` holds back the whole target (it speaks for
  the organisation's rate limit or outage, not for one record). Past ``budget``
  seconds since it was enqueued, the command fails as *target unreachable*.

A target that writes many records a call (``BatchTarget``: Zoho CRM's 100) is given
the due heads in calls of up to ``batch_size`` commands of one module and one kind
(creates, updates), as many calls at once as ``concurrency``; each command of a call
is settled by its own outcome as above, and what befalls the whole call (a timeout,
a 429, the credentials refused) befalls each of its commands.

A command naming a record the sync is still creating in the same store (a contact's
account, by its placeholder) waits until that create has landed, so the store can
resolve the placeholder by its external-id field.

A crash between the target's write and the settling transaction delivers the
command again with the same idempotency key, which the target adapter must honour
(an upsert by an external id, a look-up of the key before a create): one effect.

A CRM user's ticket action queued for a hosted desk (module ``ticket_actions``,
``projections.ticket_actions``) is not a record's write: the store's ``ActionTarget``
carries it out, one a call, and it is settled by ``ticket_actions.settle`` (its
outcome and its row) instead of being captured as a change of a record; what it did
to the ticket, the adapter captures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncpg
import structlog

from adapters import metrics
from adapters.exclusive import run_exclusively
from adapters.remote_capture import COMING, WAIT, after_stale_write, remember
from adapters.write_errors import (
    REASON_TARGET_UNREACHABLE,
    Parked,
    Refused,
    Stale,
    Transient,
    Unavailable,
)
from projections.catalog import Side
from projections.db import CONNECTION_LOST, Conn
from projections.events import ChangeEvent
from projections.ledger import Outcome, record_outcomes
from projections.stores import commands
from projections.stores.commands import Command
from projections.stores.outbox import Outbox
from projections.stores.port import is_placeholder
from projections.sync_plan import REASON_UNSEEN_EDIT
from projections.ticket_actions import APPLIED, FAILED, REASON_REFUSED, Result
from projections.ticket_actions import MODULE as ACTIONS
from projections.ticket_actions import settle as settle_action

log = structlog.get_logger(__name__)

_LOCK_BASE = 0x5359_4E43_574B_0000  # "SYNCWK" and the store's checksum


@dataclass(frozen=True, slots=True)
class Landed:
    """A write the target took: the record's id there, its values as it holds them
    now, and the modification time it gave them."""

    record_id: str
    values: dict[str, Any]
    modified_time: dt.datetime
    created_time: dt.datetime


class Target(Protocol):
    """A remote store, as its writer sees it."""

    store: Side

    async def write(self, command: Command) -> Landed:
        """Carry ``command`` out once, whatever the number of deliveries of its
        ``idempotency_key``; raise ``Transient`` or ``Refused`` if it did not land."""
        ...


@runtime_checkable
class BatchTarget(Target, Protocol):
    """A remote store that writes up to ``batch_size`` records a call."""

    batch_size: int

    async def write_many(self, commands: Sequence[Command]
                         ) -> list[Landed | BaseException]:
        """Carry ``commands`` out (one module, all creates or all updates), each once;
        the outcome of each, in order: what landed, or the error that refused,
        staled or delayed that one. An error of the whole call is raised."""
        ...


class ActionTarget(Protocol):
    """A remote desk that carries out CRM users' ticket actions."""

    async def carry_out(self, command: Command) -> Landed:
        """The action, once whatever the number of deliveries; ``Landed.values`` the
        ids it gave. ``Refused`` with the failure log's reason, ``Transient``…"""
        ...


WriteOutcome = Landed | BaseException


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter, and the time a command may keep
    failing transiently before it is a failure."""

    base: float = 0.5
    cap: float = 300.0
    budget: float = 24 * 3600.0

    def delay(self, attempts: int, *, asked: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempts, 30))
        wait = random.uniform(ceiling / 2, ceiling)
        return max(wait, asked or 0.0)


class CommandWriter:
    def __init__(self, pool: asyncpg.Pool, target: Target, *, concurrency: int = 8,
                 backoff: Backoff | None = None, poll_interval: float = 5.0,
                 attempt_timeout: float = 30.0, recheck: float = 60.0,
                 actions: ActionTarget | None = None) -> None:
        self.pool = pool
        self.target = target
        self.actions = actions
        self.store: Side = target.store
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self.attempt_timeout = attempt_timeout
        self.active = asyncio.Event()
        self.hold_until = 0.0  # time.monotonic(): a Retry-After holds the whole target
        self.recheck = recheck
        self.unavailable: str | None = None
        """Why no write can go to the target (``Unavailable``), until one lands."""
        self.parked: str | None = None
        """Why writes wait for the store's API credits (``Parked``), until one lands."""

    @property
    def lock_key(self) -> int:
        return _LOCK_BASE + zlib.crc32(self.store.encode()) % 0xFFFF

    async def run(self, stop: asyncio.Event) -> None:
        """A root task: wait to be the store's one writer, then deliver until
        ``stop``."""
        await run_exclusively(self.pool, self.lock_key, stop, self._deliver_while_held,
                              task=f"writer-{self.store}", active=self.active)

    async def _deliver_while_held(self, lock_conn: Conn,
                                  stop: asyncio.Event) -> None:
        """Deliver while due commands are there; otherwise sleep until the next one is
        due, a batch enqueues some (NOTIFY on the lock's connection), or at most
        ``poll_interval`` (a missed notification costs that much delay, no more)."""
        log.info("writer_active", store=self.store)
        wake = asyncio.Event()

        def woken(*_: object) -> None:
            wake.set()

        await lock_conn.add_listener(commands.NOTIFY_CHANNEL, woken)
        exported = 0.0
        try:
            while not stop.is_set():
                wake.clear()
                delivered = await self.deliver_once()
                if time.monotonic() - exported >= 1.0 or not delivered:
                    await self.export_depth()
                    exported = time.monotonic()
                if delivered:
                    continue
                async with self.pool.acquire() as conn:
                    due_in = await commands.next_due_in(conn, self.store)
                held = self.hold_until - time.monotonic()
                if held > 0:  # a Retry-After: nothing goes to the target before
                    sleep = held
                else:
                    sleep = self.poll_interval if due_in is None else min(
                        self.poll_interval, max(due_in, 0.01))
                stopped = asyncio.ensure_future(stop.wait())
                notified = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({stopped, notified}, timeout=sleep,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
                    notified.cancel()
                # The lock's connection must still be ours: a lost one released the lock.
                await lock_conn.fetchval("SELECT 1")
        finally:
            with contextlib.suppress(*CONNECTION_LOST, asyncpg.PostgresError):
                await lock_conn.remove_listener(commands.NOTIFY_CHANNEL, woken)

    async def deliver_once(self) -> int:
        """Deliver the due heads once; return how many commands were taken."""
        if time.monotonic() < self.hold_until:
            return 0
        size = self.target.batch_size if isinstance(self.target, BatchTarget) else 1
        async with self.pool.acquire() as conn:
            heads = await commands.due_heads(conn, self.store, limit=self.concurrency * size)
        creating = await self._creating(heads)
        ready = [c for c in heads if not _names(c) & creating]
        if len(ready) < len(heads):
            async with self.pool.acquire() as conn:
                for command in heads:
                    if _names(command) & creating:
                        await commands.retry_later(
                            conn, command, after=self.backoff.base,
                            error="waiting for a record it names to be created")
        gate = asyncio.Semaphore(self.concurrency)

        async def deliver(call: list[Command]) -> None:
            async with gate:
                await self._deliver(call)

        await asyncio.gather(*(deliver(call) for call in _calls(ready, size)))
        return len(heads)

    async def _deliver(self, call: list[Command]) -> None:
        """One call of the target for ``call``'s commands, each settled by its outcome."""
        started = time.perf_counter()
        outcomes: list[WriteOutcome]
        try:
            if call[0].module == ACTIONS:
                outcomes = [await asyncio.wait_for(self._carry_out(call[0]),
                                                   self.attempt_timeout)]
            elif len(call) == 1:
                outcomes = [await asyncio.wait_for(self.target.write(call[0]),
                                                   self.attempt_timeout)]
            else:
                assert isinstance(self.target, BatchTarget)
                outcomes = await asyncio.wait_for(self.target.write_many(call),
                                                  self.attempt_timeout)
                if len(outcomes) != len(call):
                    raise Transient(f"{len(outcomes)} outcomes for {len(call)} writes")
        except Exception as err:  # the whole call's: each of its commands'
            outcomes = [err] * len(call)
        elapsed = time.perf_counter() - started
        for command, outcome in zip(call, outcomes, strict=True):
            await self._settle(command, outcome, elapsed)

    async def _settle(self, command: Command, outcome: WriteOutcome, elapsed: float) -> None:
        if isinstance(outcome, Landed):
            if self.unavailable is not None:
                log.info("store_available_again", store=self.store)
                self.unavailable = None
                metrics.STORE_UNAVAILABLE.labels(self.store).set(0)
            if self.parked is not None:
                log.info("store_writes_resumed", store=self.store)
                self.parked = None
            metrics.COMMAND_ATTEMPTS.labels(self.store, "landed").inc()
            metrics.COMMAND_DELIVERY_SECONDS.labels(self.store).observe(elapsed)
            await self._landed(command, outcome)
        elif isinstance(outcome, Unavailable):
            metrics.COMMAND_ATTEMPTS.labels(self.store, "unavailable").inc()
            self._unavailable(outcome.detail)
        elif isinstance(outcome, Parked):
            metrics.COMMAND_ATTEMPTS.labels(self.store, "parked").inc()
            await self._park(command, outcome)
        elif isinstance(outcome, Stale):
            metrics.COMMAND_ATTEMPTS.labels(self.store, "stale").inc()
            await self._superseded(command, outcome)
        elif isinstance(outcome, Refused):
            metrics.COMMAND_ATTEMPTS.labels(self.store, "refused").inc()
            log.warning("write_refused", store=self.store, module=command.module,
                        record=command.record_key, reason=outcome.reason,
                        detail=outcome.detail)
            await self._fail(command, outcome.reason, outcome.detail)
        elif isinstance(outcome, Exception):  # Transient, TimeoutError, OSError, a defect
            # Anything else a target adapter raises is its own defect: said loudly, and
            # retried like a transient error (the budget still ends it as a failure),
            # never allowed to stop the other records' deliveries.
            if not isinstance(outcome, (Transient, TimeoutError, OSError)):
                log.error("write_failed_unexpectedly", store=self.store,
                          module=command.module, record=command.record_key,
                          error=f"{type(outcome).__name__}: {outcome}", exc_info=outcome)
            metrics.COMMAND_ATTEMPTS.labels(self.store, "transient").inc()
            asked = outcome.retry_after if isinstance(outcome, Transient) else None
            if asked is not None:
                # The target said when to come back: a rate limit or an outage of the
                # whole organisation, not of this record.
                if time.monotonic() + asked > self.hold_until:
                    metrics.COMMAND_HELD_SECONDS.labels(self.store).inc(asked)
                self.hold_until = max(self.hold_until, time.monotonic() + asked)
            await self._transient(command, _describe(outcome), asked)
        else:  # a BaseException (a cancellation) is not an outcome: passed on
            raise outcome

    async def _superseded(self, command: Command, stale: Stale) -> None:
        """The record changed since the write was decided: the command goes once
        something will bring the decision again (``remote_capture.after_stale_write``),
        and the link no longer claims to know what the store holds. While the capture
        has not fetched the record's new version the command waits (backing off); past
        the budget it fails as an edit the sync never saw, retryable like any failure."""
        async with self.pool.acquire() as conn, conn.transaction():
            then = COMING
            if stale.modified_time is not None and command.record_id is not None:
                then = await after_stale_write(conn, self.store, command.module,
                                               command.record_id, stale.modified_time)
            if then != WAIT:
                log.info("write_superseded", store=self.store, module=command.module,
                         record=command.record_key, detail=stale.detail, then=then)
                await commands.done(conn, command)
                await commands.forget_held(conn, command)
                return
        waited = _waited(command)
        if waited > self.backoff.budget:
            await self._fail(command, REASON_UNSEEN_EDIT,
                             f"{stale.detail}, and no capture of it came in {waited:.0f} s")
            return
        delay = self.backoff.delay(command.attempts)
        log.info("write_waits_for_capture", store=self.store, module=command.module,
                 record=command.record_key, retry_in=round(delay, 2), detail=stale.detail)
        async with self.pool.acquire() as conn:
            await commands.retry_later(conn, command, after=delay,
                                       error=f"stale, waiting for the capture: {stale.detail}")

    def _unavailable(self, detail: str) -> None:
        """Hold every write until ``recheck`` seconds from now, and say so once."""
        if self.unavailable is None:
            log.error("store_unavailable", store=self.store, detail=detail,
                      retry_in=self.recheck)
        self.unavailable = detail
        metrics.STORE_UNAVAILABLE.labels(self.store).set(1)
        self.hold_until = max(self.hold_until, time.monotonic() + self.recheck)

    async def _park(self, command: Command, err: Parked) -> None:
        """The store's credit budget holds every write until ``err.retry_after``: the
        command waits (not a failed attempt against its budget of time), said once."""
        if self.parked is None:
            log.warning("store_writes_parked", store=self.store, detail=err.detail,
                        retry_in=round(err.retry_after, 1))
        self.parked = err.detail
        self.hold_until = max(self.hold_until, time.monotonic() + err.retry_after)
        async with self.pool.acquire() as conn:
            await commands.retry_later(conn, command, after=err.retry_after,
                                       error=f"parked: {err.detail}")

    def state(self) -> str:
        """What the writer is doing, for the status: ``writing``, or why not."""
        if self.unavailable is not None:
            return f"unavailable: {self.unavailable}"
        if self.parked is not None:
            return f"parked: {self.parked}"
        return "writing" if self.active.is_set() else "standby"

    async def _carry_out(self, command: Command) -> Landed:
        if self.actions is None:
            raise Refused(REASON_REFUSED, f"the {self.store} store does not"
                          " carry out ticket actions")
        return await self.actions.carry_out(command)

    async def _landed(self, command: Command, landed: Landed) -> None:
        if command.module == ACTIONS:
            async with self.pool.acquire() as conn, conn.transaction():
                await commands.done(conn, command)
                await settle_action(conn, command, Result(APPLIED, ids=landed.values))
            return
        event = ChangeEvent(
            event_id=uuid.uuid4(), source=self.store, module=command.module,
            record_id=landed.record_id, op="create" if command.op == "create" else "update",
            values=landed.values, changed=None if command.op == "create"
            else sorted(command.payload), modified_at=landed.modified_time,
            created_at=landed.created_time, origin="sync",
            captured_at=dt.datetime.now(dt.UTC))
        async with self.pool.acquire() as conn, conn.transaction():
            await commands.done(conn, command)
            await commands.landed(conn, command, record_id=landed.record_id,
                                  modified_time=landed.modified_time)
            # So that the store's capture takes its copy of this write for old news.
            await remember(conn, self.store, command.module, landed.record_id,
                           landed.values, landed.modified_time)
            await Outbox(conn, self.store).append(event, keep_id=False, origin="sync")

    async def _creating(self, heads: list[Command]) -> set[str]:
        """The records the heads name (as values) whose creates are still queued: one
        query for all of them."""
        named = sorted(set().union(*(_names(c) for c in heads)))
        if not named:
            return set()
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT record_key FROM sync.commands WHERE store = $1"
                " AND record_key = ANY($2::text[])", self.store, named)
        return {row["record_key"] for row in rows}

    async def _transient(self, command: Command, detail: str, asked: float | None) -> None:
        waited = _waited(command)
        if waited > self.backoff.budget:
            await self._fail(command, REASON_TARGET_UNREACHABLE,
                             f"still failing after {waited:.0f} s ({command.attempts + 1}"
                             f" attempts): {detail}")
            return
        delay = self.backoff.delay(command.attempts, asked=asked)
        log.info("write_retry_scheduled", store=self.store, module=command.module,
                 record=command.record_key, attempts=command.attempts + 1,
                 retry_in=round(delay, 2), error=detail)
        async with self.pool.acquire() as conn:
            await commands.retry_later(conn, command, after=delay, error=detail)

    async def _fail(self, command: Command, reason: str, detail: str) -> None:
        if reason == REASON_TARGET_UNREACHABLE:
            metrics.COMMAND_ATTEMPTS.labels(self.store, "expired").inc()
        async with self.pool.acquire() as conn, conn.transaction():
            await commands.done(conn, command)
            if command.module == ACTIONS:  # the action's outcome and row, as applied ones
                await settle_action(conn, command, Result(FAILED, reason, detail))
                return
            cause = command.cause
            await commands.forget_held(conn, command)
            await record_outcomes(conn, [Outcome(
                seq=None, event_id=cause.event_id if cause else None,
                source=cause.source if cause else self.store,
                module=cause.module if cause else command.module,
                record_id=cause.record_id if cause else command.record_key,
                captured_at=dt.datetime.now(dt.UTC), outcome="failed", reason=reason,
                detail=f"writing to the {self.store}: {detail}"[:2000])])

    async def export_depth(self) -> None:
        async with self.pool.acquire() as conn:
            depth = await commands.depth(conn, self.store)
        metrics.COMMANDS_QUEUED.labels(self.store).set(depth.queued)
        metrics.COMMAND_OLDEST_AGE.labels(self.store).set(depth.oldest_age)


def _names(command: Command) -> set[str]:
    """The placeholders of other records the command names as values."""
    return {v for v in command.payload.values()
            if isinstance(v, str) and is_placeholder(v)} - {command.record_key}


def _calls(heads: list[Command], size: int) -> list[list[Command]]:
    """The heads as calls of at most ``size`` commands, each of one module and one
    kind (creates, updates), oldest first."""
    groups: dict[tuple[str, bool], list[Command]] = {}
    for command in heads:
        groups.setdefault((command.module, command.record_id is None), []).append(command)
    return [group[start:start + (1 if module == ACTIONS else size)]
            for (module, _), group in groups.items()
            for start in range(0, len(group), 1 if module == ACTIONS else size)]


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}" if not isinstance(err, Transient) else err.detail


def _waited(command: Command) -> float:
    """Seconds since ``command`` was enqueued (what its retry budget is held to)."""
    enqueued = command.enqueued_at or dt.datetime.now(dt.UTC)
    return (dt.datetime.now(dt.UTC) - enqueued).total_seconds()
