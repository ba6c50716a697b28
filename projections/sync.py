"""The sync projection: change events in, both stores and the mapping table out.

For each batch, in one transaction (the projector's):

1. lock the match keys of every unlinked record in the batch (sorted, so two
   replicas take them in the same order) and the batch's link rows;
2. read, in bulk, the links, the match candidates and the account links the
   contacts' references name;
3. walk the events in log order in memory: match or create, merge per field
   (newest wins, see ``merge``), check every value against its target field,
   and decide what each side must hold;
4. write, in bulk: accounts first, then the contacts' account references are
   decided (``projections.refs``: translated through the account links, left
   waiting in ``sync.pending_refs``, or failed), then contacts, products, links,
   waiting references, failures, history.

Writes carry ``syncd.origin = 'sync'`` so capture ignores them (SYNC-14); each
link also keeps a fingerprint of what each side is known to hold, and a
change equal to it is dropped as an echo, which covers remote stores that
cannot carry an origin tag. Time comes only from the events.

``SyncProjection.reapply`` runs the same batch in *replay* mode (OPS-07, for
``projections.replay``): events that were applied already are applied again to
the stores, treating what either side holds as unknown, so that a store
restored from an older backup is written again. It records no outcome (a
replay is not a new sync), decides no new match, never brings back a record
deleted since, and writes a row only where it differs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from projections.batch import (
    APPLY_LOCK,
    NOTHING_TO_REPORT,
    Beside,
    LoggedEvent,
    ProjectionReport,
)
from projections.catalog import OTHER, SYNCED_MODULES, Side
from projections.config import SyncConfig
from projections.db import SYNC_MATCH_KEYS, Conn, loads_json, lock_keys
from projections.events import ChangeEvent, decode_event
from projections.ledger import Outcome, record_outcomes
from projections.merge import (
    fingerprint,
    newest,
)
from projections.refs import (
    REFS_LOCK,
    Ref,
    ref_of,
    ref_problem,
    store_waiting,
    waiting_for,
)
from projections.stores.kinds import EMBEDDED, StoreKinds
from projections.stores.port import SYNC_KEY_FIELD, Store, is_placeholder
from projections.sync_plan import (
    APPLIED_OUTCOMES,
    EPOCH,
    REASON_UNKNOWN_ACCOUNT,
    REASON_UNSEEN_EDIT,
    BatchResult,
    Candidate,
    Link,
    Planner,
    Write,
    match_keys,
)

# The links of a batch's records, locked in one statement in link_id order (the lock
# node sits above the sort). The ids are found first, each side's through its own
# index, into one array (an init plan, evaluated once): a row locked by another batch
# is then rechecked, once that batch commits, against the array alone. Joined to the
# lookup instead, a row another batch had just updated was dropped from the result
# (its pair then looked unlinked: a delete of it was not recorded on the link).
_LOCK_LINKS = """
SELECT * FROM sync.links WHERE link_id = ANY(ARRAY(
    SELECT k.link_id FROM unnest($1::text[], $2::text[], $3::text[]) AS w(module, side, id)
    JOIN sync.links k ON k.module = w.module AND k.desk_id = w.id WHERE w.side = 'desk'
    UNION ALL
    SELECT k.link_id FROM unnest($1::text[], $2::text[], $3::text[]) AS w(module, side, id)
    JOIN sync.links k ON k.module = w.module AND k.crm_id = w.id WHERE w.side = 'crm'))
ORDER BY link_id FOR UPDATE
"""


_LINK_ROWS = """
json_to_recordset($1::json) AS r(link_id bigint, module text, desk_id text, crm_id text,
    state jsonb, desk_fp text, crm_fp text, desk_gone text, crm_gone text,
    desk_seen timestamptz, crm_seen timestamptz, updated_at timestamptz,
    linked_at timestamptz)"""
_UPDATE_LINKS = f"""
UPDATE sync.links l SET desk_id = r.desk_id, crm_id = r.crm_id, state = r.state,
    desk_fp = r.desk_fp, crm_fp = r.crm_fp, desk_gone = r.desk_gone, crm_gone = r.crm_gone,
    desk_seen = r.desk_seen, crm_seen = r.crm_seen, updated_at = r.updated_at
FROM {_LINK_ROWS}
WHERE l.link_id = r.link_id
"""
_INSERT_LINKS = f"""
INSERT INTO sync.links (module, desk_id, crm_id, state, desk_fp, crm_fp, desk_gone, crm_gone,
    desk_seen, crm_seen, updated_at, linked_at)
SELECT module, desk_id, crm_id, state, desk_fp, crm_fp, desk_gone, crm_gone, desk_seen,
    crm_seen, updated_at, linked_at
FROM {_LINK_ROWS}
"""
_encode_links = msgspec.json.Encoder().encode


DECIDE_SLICE = 100
"""Events decided between two yields to the projections running beside the planner:
small enough that a statement of theirs waits little for the planner (a few ms of
Python), large enough that the yields cost nothing measurable."""


@dataclass(frozen=True, slots=True)
class Drained:
    """One round of the resume drain: how many queued events it applied, and its report."""

    events: int
    report: ProjectionReport


class SyncProjection:
    """Keeps both stores and the mapping table consistent (SYNC-01 … SYNC-15)."""

    name = "sync"

    def __init__(self, config: Callable[[], SyncConfig], *,
                 stores: StoreKinds = EMBEDDED) -> None:
        self.config = config
        self.stores = stores  # the port's adapter for each store (projections.stores)

    def _relevant(self, events: Sequence[LoggedEvent]) -> list[LoggedEvent]:
        """The events the sync decides: of synced modules, and not the sync's own
        writes, but for a deferred store's landings (they bring the record's id and
        modification time, see ``projections.stores.deferred``)."""
        return [item for item in events if item.event.module in SYNCED_MODULES and (
            item.event.origin != "sync" or self.stores.deferred(item.event.source))]

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        return await self.apply_beside(conn, events, None)

    async def apply_beside(self, conn: Conn, events: Sequence[LoggedEvent],
                           beside: Beside | None) -> ProjectionReport:
        """``apply``, running ``beside`` (the projections of the log) while the batch is
        planned: after the reads and their locks, before the writes
        (``projections.batch.PlansBeside``). It runs exactly once whatever the batch
        holds: on its own when there is nothing to plan."""
        cfg = self.config()
        relevant = self._relevant(events)
        if not relevant or not cfg.active:
            if beside is not None:
                await beside()
            return NOTHING_TO_REPORT
        # Paused, or still catching up after a pause: keep log order by queueing.
        if cfg.paused or await conn.fetchval("SELECT EXISTS (SELECT 1 FROM sync.deferred)"):
            await conn.execute(
                "INSERT INTO sync.deferred (seq) SELECT unnest($1::bigint[])"
                " ON CONFLICT DO NOTHING", [item.seq for item in relevant])
            if beside is not None:
                await beside()
            return NOTHING_TO_REPORT
        return (await _Batch(conn, cfg, self.stores).run(relevant, beside)).report()

    async def drain_deferred(self, conn: Conn, *, limit: int = 2000) -> Drained:
        """Apply the oldest events queued while paused; say how many were applied and
        what could not be (the caller logs and counts it once committed).

        Runs in its own transaction, beside live batches: those keep queueing
        while anything is queued, so log order holds.
        """
        cfg = self.config()
        if cfg.paused or not cfg.active:
            return Drained(0, NOTHING_TO_REPORT)
        # Like a projector batch: a replay writing in place waits for this and holds it off.
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", APPLY_LOCK)
        rows = await conn.fetch(
            "DELETE FROM sync.deferred d USING syncd.event_log e"
            " WHERE d.seq = e.seq AND d.seq IN"
            " (SELECT seq FROM sync.deferred ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING e.seq, e.payload::text AS payload", limit)
        if not rows:
            return Drained(0, NOTHING_TO_REPORT)
        events = [LoggedEvent(row["seq"], decode_event(row["payload"].encode()))
                  for row in sorted(rows, key=lambda r: r["seq"])]
        result = await _Batch(conn, cfg, self.stores).run(events)
        return Drained(len(events), result.report())

    async def reapply(self, conn: Conn, events: Sequence[LoggedEvent]) -> BatchResult:
        """Apply events that were applied before again, in replay mode (see the module
        docstring); the caller holds the transaction. Re-applying an event whose values
        were superseded changes nothing: the merge keeps the newest value per field.

        Only the events whose recorded outcome says the sync applied them are taken:
        not an echo, a failure, a one-way desk change (recorded as skipped, or, before
        that was recorded, not at all) or anything else the sync decided to leave. So
        a re-apply honours the sync type in force when each event was applied, not
        the one in force now."""
        cfg = self.config()
        relevant = self._relevant(events)
        if not relevant or not cfg.active:
            return BatchResult()
        applied = {row["seq"] for row in await conn.fetch(
            "SELECT seq FROM sync.outcomes WHERE seq = ANY($1::bigint[])"
            " AND outcome = ANY($2::text[])",
            [item.seq for item in relevant], list(APPLIED_OUTCOMES))}
        relevant = [item for item in relevant if item.seq in applied]
        if not relevant:
            return BatchResult()
        return await _Batch(conn, cfg, self.stores, replay=True).run(relevant)


async def held_while_paused(conn: Conn, side: Side, module: str,
                            ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` have a change logged but held in ``sync.deferred`` (sync paused,
    or catching up after a pause): applying it will decide their pairs again."""
    # The queue drives, each of its rows finding its event by the log's key (OFFSET 0
    # keeps the planner from flattening the lateral lookup into a join): the log has
    # no index by record, and a plain join read all of it whenever the planner took
    # the (usually empty, never analysed) queue for a large one.
    return {row["record_id"] for row in await conn.fetch(
        "SELECT e.record_id FROM sync.deferred d CROSS JOIN LATERAL ("
        " SELECT record_id FROM syncd.event_log WHERE seq = d.seq AND source = $1"
        " AND module = $2 AND record_id = ANY($3::text[]) OFFSET 0) e",
        side, module, list(ids))}


class _Batch(Planner):
    """One batch of the sync: load the planner's state (through the store port and
    the sync's tables), decide (``Planner.decide``), carry the plan out."""

    def __init__(self, conn: Conn, cfg: SyncConfig, stores: StoreKinds, *,
                 replay: bool = False) -> None:
        super().__init__(cfg, replay=replay)
        self.conn = conn
        # The stores, through the port: the sync's own tables (links, outcomes, the
        # pause queue, waiting references) it reads and writes itself.
        self.stores: dict[Side, Store] = {side: stores.adapter(conn, side)
                                          for side in ("desk", "crm")}
        self.created_accounts: set[int] = set()  # id(link) of accounts created this batch
        self.ref_outcomes: list[Outcome] = []  # recorded when they failed (see _settle_refs)
        self.earlier_causes: set[int] = set()  # id() of those of events of earlier batches
        self.refs_settled: list[tuple[Link, Side]] = []
        self.refs_waiting: list[tuple[Link, Side, int, int]] = []
        self.stale_refs: list[tuple[Side, str]] = []

    # -- reading ---------------------------------------------------------------

    async def run(self, logged: list[LoggedEvent], beside: Beside | None = None
                  ) -> BatchResult:
        logged = [item for item in logged if self._applies(item.event)]
        if not logged:
            if beside is not None:
                await beside()
            return self.result
        events = [item.event for item in logged]
        await self._load_links(events)
        if self.replay:
            # What either side holds is unknown (it may have been restored from a
            # backup): no event is an echo and every side is compared and written.
            for link in self.links.values():
                link.known_fp = {"desk": link.desk_fp, "crm": link.crm_fp}
                link.desk_fp = link.crm_fp = None
        else:
            await self._load_candidates(events)
        await self._load_ref_links(events)
        if beside is None:
            self.decide(logged)
        else:
            await self._decide_beside(logged, beside)
        await self._flush()
        self.result.problems = [o for o in self.outcomes if o.outcome == "failed"]
        return self.result

    async def _decide_beside(self, logged: list[LoggedEvent], beside: Beside) -> None:
        """Decide while ``beside`` runs on the connection: the decisions are made a slice
        at a time, yielding between slices, so that whenever ``beside`` waits for a
        statement the planner's Python runs (the planner makes none). Both are done when
        this returns: the writes that follow have the connection to themselves."""
        task = asyncio.ensure_future(beside())
        try:
            for start in range(0, len(logged), DECIDE_SLICE):
                await asyncio.sleep(0)  # let ``beside`` send its next statement
                self.decide(logged[start:start + DECIDE_SLICE])
        finally:
            # Even when deciding failed: the batch's rollback must not race its statement.
            await task

    async def _load_links(self, events: list[ChangeEvent]) -> None:
        wanted: dict[tuple[str, Side], set[str]] = {}
        for e in events:
            ids = wanted.setdefault((e.module, e.source), set())
            ids.add(e.record_id)
            if isinstance(key := e.values.get(SYNC_KEY_FIELD), str) and is_placeholder(key):
                ids.add(key)  # a deferred store's record the sync created, linked under it
        await self._read_links([(module, side, record_id)
                                for (module, side), ids in sorted(wanted.items())
                                for record_id in sorted(ids)])

    async def _read_links(self, records: list[tuple[str, Side, str]]) -> None:
        """Read and lock the links of ``records`` (module, side, id): all in one statement,
        in ``link_id`` order. Row locks: two replicas never write the same pair at once
        (OWN-05). One statement, because a pair's desk and CRM records are on different
        partitions: two batches locking by side in turn (one statement a side) each
        took one side's rows of the other's pairs first, and deadlocked."""
        if not records:
            return
        modules, sides, ids = (list(column) for column in zip(*records, strict=True))
        rows = await self.conn.fetch(_LOCK_LINKS, modules, sides, ids)
        for row in rows:
            self._remember(self._link_from_row(row))

    def _link_from_row(self, row: Any) -> Link:
        return Link(
            module=row["module"], desk_id=row["desk_id"], crm_id=row["crm_id"],
            state=loads_json(row["state"]), desk_fp=row["desk_fp"], crm_fp=row["crm_fp"],
            desk_gone=row["desk_gone"], crm_gone=row["crm_gone"],
            desk_seen=row["desk_seen"], crm_seen=row["crm_seen"],
            linked_at=row["linked_at"], updated_at=row["updated_at"], link_id=row["link_id"],
        )

    async def _load_candidates(self, events: list[ChangeEvent]) -> None:
        """Lock the match keys of unlinked records, then read who holds them."""
        wanted: dict[tuple[str, Side], set[str]] = {}
        for e in events:
            if (e.module, e.source, e.record_id) in self.links or e.op == "delete":
                continue
            for key in match_keys(e.module, e.values, secondary=self.cfg.match_secondary_email):
                # Both sides: the other side's holders are the candidates, this side's
                # are rivals for them (a match must be one to one, whatever the order).
                wanted.setdefault((e.module, OTHER[e.source]), set()).add(key)
                wanted.setdefault((e.module, e.source), set()).add(key)
        if not wanted:
            return
        # Serialise matching on the key: two replicas (or two partitions) that see
        # a new desk and a new CRM record with one e-mail must not both create.
        await lock_keys(self.conn, SYNC_MATCH_KEYS,
                        (f"{module}:{key}" for (module, _), keys in wanted.items()
                         for key in keys))
        for (module, side), keys in sorted(wanted.items()):
            await self._read_candidates(module, side, sorted(keys))

    async def _read_candidates(self, module: str, side: Side, keys: list[str]) -> None:
        found = await self.stores[side].find(module, keys,
                                             secondary=self.cfg.match_secondary_email)
        if found:
            ids = {item.id for item in found} | {key for item in found if isinstance(
                key := item.values.get(SYNC_KEY_FIELD), str) and is_placeholder(key)}
            await self._read_links([(module, side, record_id) for record_id in sorted(ids)])
        for item in found:
            # A record the sync created whose link still names its placeholder (its
            # landing is on its way) is that linked record, not a free candidate.
            key = item.values.get(SYNC_KEY_FIELD)
            record_id = key if isinstance(key, str) and (module, side, key) in self.links \
                else item.id
            self.loaded[(module, side, record_id)] = item.values
            self.candidates.setdefault((module, side, item.key), []).append(
                Candidate(record_id, item.values, via_secondary=item.via_secondary))

    async def _load_ref_links(self, events: list[ChangeEvent]) -> None:
        """Read the account links the batch's contact references name (their events',
        their pairs', their match candidates'), so most resolve while deciding."""
        refs: set[Ref] = set()
        for e in events:
            account = e.values.get("account_id")
            if e.module == "contacts" and account is not None and ref_problem(account) is None:
                refs.add((e.source, account))
        for (module, _, _), link in self.links.items():
            ref = ref_of(link.state) if module == "contacts" else None
            if ref is not None:
                refs.add(ref)
        for (module, side, _), found in self.candidates.items():
            for cand in found if module == "contacts" else []:
                account = cand.values.get("account_id")
                if account is not None:
                    refs.add((side, account))
        await self._read_ref_links(refs)

    async def _read_ref_links(self, refs: set[Ref]) -> None:
        """The account links of ``refs`` that the batch does not hold, as committed now.
        No row lock: they are only read (REFS_LOCK orders what must not be missed)."""
        wanted = {side: sorted({str(account) for s, account in refs if s == side
                                and ("accounts", side, str(account)) not in self.links})
                  for side in ("desk", "crm")}
        if not wanted["desk"] and not wanted["crm"]:
            return
        rows = await self.conn.fetch(
            "SELECT * FROM sync.links WHERE module = 'accounts'"
            " AND (desk_id = ANY($1::text[]) OR crm_id = ANY($2::text[]))",
            wanted["desk"], wanted["crm"])
        for row in rows:
            link = self._link_from_row(row)
            for side in ("desk", "crm"):
                self.ref_links[("accounts", side, link.id_on(side) or "")] = link

    # -- deciding ----------------------------------------------------------------

    # -- writing -----------------------------------------------------------------

    async def _flush(self) -> None:
        for store in self.stores.values():
            await store.mark_own_writes()
        # Accounts first, on both sides: a contact is written the id its account has
        # on that side, which a created account only has once it is written.
        await self._write_module("accounts")
        await self._settle_refs()
        await self._write_module("contacts")
        await self._write_module("products")
        if not self.replay:
            # Now that created contacts have their ids.
            await store_waiting(
                self.conn,
                [*self.stale_refs, *((side, contact) for link, side in self.refs_settled
                                     if (contact := link.id_on(side)))],
                [(side, contact, account, seq) for link, side, account, seq
                 in self.refs_waiting if (contact := link.id_on(side))])
        await self._flush_links()
        if not self.replay:
            self.outcomes.extend(o for o in self.ref_outcomes if o.outcome == "failed")
            await record_outcomes(self.conn, self.outcomes)

    async def _write_module(self, module: str) -> None:
        for side in ("crm", "desk"):
            writes = [w for w in self.writes.values()
                      if w.link.module == module and w.side == side]
            if writes:
                await self._write_table(side, module, writes)

    async def _settle_refs(self) -> None:
        """Decide the account references of the batch's contacts, before they are
        written (projections.refs): each side is written the twin of the account its
        pair's reference names; a reference to an account not linked yet waits in
        sync.pending_refs; one to an account its store does not hold is a failure of
        its own (the contact is written without it). References that were waiting for
        an account this batch linked are decided too, and written if they must be.

        A replay only translates (links as they are): it leaves no reference waiting,
        resolves none and records no failure."""
        linked = [] if self.replay else self._new_account_links()
        if not self.replay and (linked or any(
                self._crosses_unresolved(link, side) for link, side, _ in
                self.ref_checks.values())):
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", REFS_LOCK)
            if linked:
                await self._load_waiting(linked)
        pairs = [*((w.link, w.side) for w in self.writes.values()),
                 *((link, side) for link, side, _ in self.ref_checks.values())]
        await self._read_ref_links({ref for link, side in pairs
                                    if self._crosses_unresolved(link, side)
                                    and (ref := ref_of(link.state)) is not None})
        if self.replay:
            return
        unknown: dict[Side, set[int]] = {}
        for link, side, _ in self.ref_checks.values():
            ref = ref_of(link.state)
            if ref is not None and self._crosses_unresolved(link, side):
                unknown.setdefault(ref[0], set()).add(ref[1])
        exists = {side: {int(i) for i in await self.stores[side].existing(
                      "accounts", sorted(str(i) for i in ids))}
                  for side, ids in sorted(unknown.items())}
        mapping = self.cfg.mappings["contacts"]
        for link, side, cause in self.ref_checks.values():
            if self.cfg.direction == "crm_to_desk" and side == "crm":
                continue  # one-way: nothing goes to the CRM; a waiting reference stays
            ref = ref_of(link.state)
            twin = self._account_on(ref, side)
            if ref is None or ref[0] == side or twin is not None:
                self.refs_settled.append((link, side))
                if (twin is not None and ref is not None and ref[0] != side
                        and ("contacts", side, id(link)) not in self.writes
                        and link.id_on(side) and link.gone(side) is None
                        and fingerprint(self._wanted(link.state, mapping, side))
                        != link.pending.get(side, link.fp(side))):
                    self._ref_write(link, side, cause)
            elif ref[1] in exists.get(ref[0], set()):
                if cause.seq is not None:
                    self.refs_waiting.append((link, side, ref[1], cause.seq))
            else:
                self.refs_settled.append((link, side))
                failed = replace(cause, outcome="unchanged", reason=None, detail="", id=None)
                self._fail_outcome(failed, REASON_UNKNOWN_ACCOUNT,
                                   f"{ref[0]} account {ref[1]} does not exist; the {side}"
                                   " contact is written without an account")
                self.ref_outcomes.append(failed)

    def _new_account_links(self) -> list[tuple[Side, str]]:
        """(side, id) of both accounts of each pair that got an id this batch (newly
        linked, or a side created again): references may be waiting for them."""
        out: set[tuple[Side, str]] = set()
        for (module, _, _), link in self.links.items():
            if (module == "accounts" and link.dirty and link.desk_id and link.crm_id
                    and (link.link_id is None or id(link) in self.created_accounts)):
                out.update((("desk", link.desk_id), ("crm", link.crm_id)))
        return sorted(out)

    async def _load_waiting(self, accounts: list[tuple[Side, str]]) -> None:
        """The references waiting for ``accounts``: their pairs join the checks, with
        the event that set each reference (what fails if the write cannot land)."""
        rows = await waiting_for(self.conn, accounts)
        # These pairs' row locks come late, after REFS_LOCK: a batch holding one of them
        # and waiting for REFS_LOCK deadlocks with this one. PostgreSQL detects it and
        # the consumer reads the rolled-back batch again, as for any conflicted batch;
        # it takes two replicas (or the resume drain) and a new account link at once.
        await self._read_links(sorted(
            {("contacts", r["side"], r["contact_id"]) for r in rows}
            - {key for key in self.links if key[0] == "contacts"}))
        for row in rows:
            waiting: Side = row["side"]
            link = self.links.get(("contacts", waiting, row["contact_id"]))
            if link is None:  # that contact is no longer linked under this id
                self.stale_refs.append((waiting, row["contact_id"]))
                continue
            cause = Outcome(row["seq"], row["event_id"], row["source"], "contacts",
                            row["record_id"], row["captured_at"])
            self.ref_outcomes.append(cause)
            self.earlier_causes.add(id(cause))
            self.ref_checks.setdefault((id(link), waiting), (link, waiting, cause))

    def _ref_write(self, link: Link, side: Side, cause: Outcome) -> None:
        """Write a contact again for its reference alone (its account has just linked);
        guarded like every write. Its values are the merged state's, at flush time."""
        stamp = EPOCH + dt.timedelta(microseconds=newest(link.state))
        # The event of this batch that set the reference counts the write; one of an
        # earlier batch was counted then.
        claims = [] if id(cause) in self.earlier_causes else [(cause, "updated")]
        self.writes[("contacts", side, id(link))] = Write(
            link=link, side=side, values={}, modified_at=stamp, created_at=stamp,
            create=False, outcomes=claims, cause=cause)
        link.dirty = True
        self.result.written += 1

    async def _write_table(self, side: Side, module: str, writes: list[Write]) -> None:
        mapping = self.cfg.mappings[module]
        columns = sorted({f.name for f in mapping.fields(side) if not f.name.startswith("custom.")}
                         | ({"account_id"} if module == "contacts" else set()))
        creates = [w for w in writes if w.create]
        if module == "accounts":
            self.created_accounts.update(id(w.link) for w in creates)
        store = self.stores[side]
        if self.replay and store.deferred:
            # A replay repairs the stores in the daemon's database; a remote store is
            # its own record (its reconciliation poll brings what it holds).
            return
        if creates:
            ids = await store.allocate_ids(module, len(creates))
            for write, new_id in zip(creates, ids, strict=True):
                write.link.set_id(side, new_id)
                self._remember(write.link)
        for write in writes:
            # Decided per event, written once: what the side must hold is what the
            # final merged state says, not what an earlier event of the batch said.
            write.values = self._wanted(write.link.state, mapping, side)
            write.modified_at = max(write.modified_at,
                                    EPOCH + dt.timedelta(microseconds=newest(write.link.state)))
        if self.replay:
            writes = await self._replay_writes(side, module, writes)
            creates = [w for w in writes if w.create]
        rows = [self._row(w, side, module) for w in writes]
        extra = ["department_id"] if side == "desk" and module == "products" else []
        create_rows = [r for r, w in zip(rows, writes, strict=True) if w.create]
        update_rows = [r for r, w in zip(rows, writes, strict=True) if not w.create]
        landed = await store.create(module, [*columns, *extra], create_rows,
                                    causes=[w.cause for w in creates])
        if update_rows:
            updates = [w for w in writes if not w.create]
            landed.update(await store.update(module, columns, update_rows,
                                             [w.link.seen(side) for w in updates],
                                             causes=[w.cause for w in updates]))
            refused = [w for w in updates if (w.link.id_on(side) or "") not in landed]
            if refused and not self.replay:
                landed.update(await self._held_back(side, module, columns, refused))
        for write in writes:
            record_id = write.link.id_on(side) or ""
            if record_id in landed:
                # Made (at that modification time), or accepted by a deferred store:
                # its landing event brings the time the store gave it.
                if (moment := landed[record_id]) is not None:
                    write.link.saw(side, moment)
                write.link.set_fp(side, fingerprint(write.values))
                write.link.rewritten = True
                for outcome, what in write.outcomes:
                    outcome.outcome = what
            else:
                # The row is newer than anything we have seen of it: an edit whose event
                # has not been applied yet. That event will bring it; until then we do
                # not know what this side holds.
                write.link.set_fp(side, None)

    async def _held_back(self, side: Side, module: str, columns: list[str],
                         refused: list[Write]) -> dict[str, dt.datetime | None]:
        """Writes the guard refused: each lands later or fails now, never neither
        (ARCHITECTURE invariant 5).

        * The row's newer change is still on its way (in the store's outbox, or
          queued while paused): that change's event brings the write; until then
          what the side holds is unknown.
        * Nothing is on its way, but the row still holds what the sync knows it
          holds (only its modification time moved, or a column outside the
          mapping): it is written now.
        * Nothing is on its way and the row holds values the sync never saw (a
          change that was not captured): nothing would ever bring the write, so it
          is a failure with its reason, retried like any failure.
        """
        store = self.stores[side]
        ids = [w.link.id_on(side) or "" for w in refused]
        pending = (await store.changes_in_flight(module, ids)
                   | await held_while_paused(self.conn, side, module, ids))
        rows = await store.read(module, ids)
        mapping = self.cfg.mappings[module]
        now: list[Write] = []
        for write in refused:
            record_id = write.link.id_on(side) or ""
            if record_id in pending:
                continue
            row = rows.get(record_id)
            known = write.link.fp(side)
            if row is not None and known is not None and known == fingerprint(
                    self._held(row.values, mapping, side)):
                write.link.saw(side, row.modified_time)
                now.append(write)
                continue
            detail = (f"{side} record {record_id} changed after the sync last saw it"
                      f" ({write.link.seen(side)}) and no change of it was captured")
            causes: list[Outcome | None] = [o for o, _ in write.outcomes] or [write.cause]
            for outcome in causes:
                if outcome is not None:
                    self._fail_outcome(outcome, REASON_UNSEEN_EDIT, detail)
        if not now:
            return {}
        return await store.update(module, columns, [self._row(w, side, module) for w in now],
                                  [w.link.seen(side) for w in now],
                                  causes=[w.cause for w in now])

    async def _replay_writes(self, side: Side, module: str, writes: list[Write]) -> list[Write]:
        """Replay: keep only the writes a row needs. A row that holds the values already
        is left alone (known to hold them); so is a row as new as the newest change the
        sync has seen of it: it lost nothing, and what it holds beyond the merged values
        is that side's own change (one made in one-way mode, say), not for a re-apply
        to undo. A row older than that (brought back from a backup) is written again; a
        missing one (lost with a restore) is created again under its linked id, so the
        link stays right."""
        mapping = self.cfg.mappings[module]
        store = self.stores[side]
        rows = await store.read(module, [w.link.id_on(side) or "" for w in writes])
        held = {record_id: row.values for record_id, row in rows.items()}
        current = {record_id: row.modified_time for record_id, row in rows.items()}
        missing = [w.link.id_on(side) or "" for w in writes
                   if (w.link.id_on(side) or "") not in held]
        deleting: set[str] = set()
        if missing:
            # A row deleted by hand whose delete is still on its way (in the outbox
            # until the event log has it) is not missing: it must not come back.
            deleting = await store.deletes_in_flight(module, missing)
        needed: list[Write] = []
        for write in writes:
            values = held.get(write.link.id_on(side) or "")
            if values is None and write.link.id_on(side) in deleting:
                continue
            seen = write.link.seen(side)
            if values is None:
                write.create = write.keep_id = True
            elif (not values.get("deleted") and fingerprint(self._held(values, mapping, side))
                  == fingerprint(write.values)):
                write.link.set_fp(side, fingerprint(write.values))
                continue
            elif seen is not None and current[write.link.id_on(side) or ""] >= seen:
                continue
            needed.append(write)
        return needed

    def _row(self, write: Write, side: Side, module: str) -> dict[str, Any]:
        row: dict[str, Any] = {"id": write.link.id_on(side) or ""}  # text on the port
        custom: dict[str, Any] = {}
        for name, value in write.values.items():
            if name.startswith("custom."):
                custom[name[7:]] = value
            else:
                row[name] = value
        row["custom"] = custom
        row["created_time"] = write.created_at  # msgspec writes them as RFC 3339
        row["modified_time"] = write.modified_at
        if side == "desk" and module == "products":
            row["department_id"] = self.cfg.products_department_id
        return row

    async def _flush_links(self) -> None:
        seen: set[int] = set()
        fresh: list[Link] = []
        known: list[Link] = []
        for link in self.links.values():
            if id(link) in seen or not link.dirty or not link.desk_id or not link.crm_id:
                continue
            seen.add(id(link))
            if self.replay:
                # A re-apply changes a link only where it wrote a row again (its seen
                # time and fingerprint); what it merged again was merged already.
                if not link.rewritten:
                    continue
                for side in ("desk", "crm"):
                    if link.fp(side) is None and link.known_fp is not None:
                        link.set_fp(side, link.known_fp[side])
            (fresh if link.link_id is None else known).append(link)
        # Each list of links as one JSON array of objects, encoded by msgspec straight from
        # the dataclasses (fields the statement does not name are ignored): typed arrays,
        # one per column, cost asyncpg a check and an encoding per element, as the
        # outcomes' did (projections.ledger).
        if known:
            await self.conn.execute(_UPDATE_LINKS, _encode_links(known).decode())
        if fresh:
            await self.conn.execute(_INSERT_LINKS, _encode_links(fresh).decode())


