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

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from projections.batch import APPLY_LOCK, NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.catalog import OTHER, SYNCED_MODULES, Side
from projections.config import SyncConfig
from projections.db import SYNC_MATCH_KEYS, Conn, loads_json, lock_keys
from projections.events import ChangeEvent, decode_event
from projections.keys import account_key, email_key
from projections.ledger import Outcome, record_outcomes
from projections.mapping import ModuleMapping, value_problem
from projections.merge import (
    State,
    fingerprint,
    merge_change,
    micros,
    newest,
    offer,
    project,
    side_values,
)
from projections.refs import (
    REFS_LOCK,
    Ref,
    merge_ref,
    ref_of,
    ref_problem,
    store_waiting,
    waiting_for,
)
from projections.stores.embedded import EmbeddedStore
from projections.stores.port import Store

REASON_ALREADY_MAPPED = "the CRM id is already mapped to another desk entity"
REASON_AMBIGUOUS = "more than one matching record"
REASON_UNSEEN_EDIT = ("the record changed after the sync last saw it, and the change"
                      " was not captured")
REASON_UNKNOWN_ACCOUNT = "the contact's account does not exist"

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

APPLIED_OUTCOMES = frozenset({"added", "updated", "superseded", "unchanged"})
"""Outcomes of events the sync merged into a pair (what a window re-apply takes)."""


@dataclass
class Link:
    module: str
    desk_id: str | None
    crm_id: str | None
    state: State
    desk_fp: str | None = None
    crm_fp: str | None = None
    desk_gone: str | None = None
    crm_gone: str | None = None
    desk_seen: dt.datetime | None = None
    crm_seen: dt.datetime | None = None
    linked_at: dt.datetime = EPOCH
    updated_at: dt.datetime = EPOCH
    link_id: int | None = None
    dirty: bool = False
    # Fingerprints of writes decided in this batch but not yet made. Kept apart from
    # desk_fp / crm_fp, which only ever hold what a side is *known* to hold: an
    # incoming change is an echo only against that.
    pending: dict[str, str] = field(default_factory=dict)
    # Replay: the fingerprints as stored (kept where no row is written again), and
    # whether a row of the pair was written again (else the link stays as it is).
    known_fp: dict[str, str | None] | None = None
    rewritten: bool = False

    def id_on(self, side: Side) -> str | None:
        return self.desk_id if side == "desk" else self.crm_id

    def set_id(self, side: Side, value: str) -> None:
        if side == "desk":
            self.desk_id = value
        else:
            self.crm_id = value

    def fp(self, side: Side) -> str | None:
        return self.desk_fp if side == "desk" else self.crm_fp

    def set_fp(self, side: Side, value: str | None) -> None:
        if side == "desk":
            self.desk_fp = value
        else:
            self.crm_fp = value

    def seen(self, side: Side) -> dt.datetime | None:
        return self.desk_seen if side == "desk" else self.crm_seen

    def saw(self, side: Side, moment: dt.datetime) -> None:
        """The record on ``side`` is known to carry ``moment`` (or newer)."""
        held = self.seen(side)
        if held is None or moment > held:
            if side == "desk":
                self.desk_seen = moment
            else:
                self.crm_seen = moment

    def gone(self, side: Side) -> str | None:
        return self.desk_gone if side == "desk" else self.crm_gone

    def set_gone(self, side: Side, value: str | None) -> None:
        if side == "desk":
            self.desk_gone = value
        else:
            self.crm_gone = value


@dataclass
class Candidate:
    record_id: str
    values: dict[str, Any]
    via_secondary: bool


@dataclass
class Write:
    """What one record on one side must hold after the batch.

    ``modified_at`` is the newest source time in the merged state: an update only
    lands on a row that is not newer than that, because a newer row holds an edit
    whose own event has not been applied yet (and will bring it).
    """

    link: Link
    side: Side
    values: dict[str, Any]
    modified_at: dt.datetime
    created_at: dt.datetime
    create: bool
    outcomes: list[tuple[Outcome, str]] = field(default_factory=list)
    cause: Outcome | None = None  # the event that decided it last (what fails if it cannot land)
    keep_id: bool = False  # replay: re-create a row that is missing under its linked id


@dataclass
class BatchResult:
    written: int = 0
    failed: int = 0
    echoes: int = 0
    problems: list[Outcome] = field(default_factory=list)

    def report(self) -> ProjectionReport:
        return ProjectionReport(tuple(self.problems)) if self.problems else NOTHING_TO_REPORT


@dataclass(frozen=True, slots=True)
class Drained:
    """One round of the resume drain: how many queued events it applied, and its report."""

    events: int
    report: ProjectionReport


def match_keys(module: str, values: dict[str, Any], *, secondary: bool) -> list[str]:
    """The normalised keys a record can be matched on, primary first."""
    if module == "contacts":
        keys = [email_key(values.get("email"))]
        if secondary:
            keys.append(email_key(values.get("secondary_email")))
        return [k for k in keys if k]
    if module == "accounts":
        key = account_key(values.get("account_name"))
        return [key] if key else []
    return []


class SyncProjection:
    """Keeps both stores and the mapping table consistent (SYNC-01 … SYNC-15)."""

    name = "sync"

    def __init__(self, config: Callable[[], SyncConfig], *,
                 stores: StoreFactory = EmbeddedStore) -> None:
        self.config = config
        self.stores = stores  # the port's adapter for each store (projections.stores)

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        cfg = self.config()
        relevant = [
            item for item in events
            if item.event.module in SYNCED_MODULES and item.event.origin != "sync"
        ]
        if not relevant or not cfg.active:
            return NOTHING_TO_REPORT
        # Paused, or still catching up after a pause: keep log order by queueing.
        if cfg.paused or await conn.fetchval("SELECT EXISTS (SELECT 1 FROM sync.deferred)"):
            await conn.execute(
                "INSERT INTO sync.deferred (seq) SELECT unnest($1::bigint[])"
                " ON CONFLICT DO NOTHING", [item.seq for item in relevant])
            return NOTHING_TO_REPORT
        return (await _Batch(conn, cfg, self.stores).run(relevant)).report()

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
        relevant = [
            item for item in events
            if item.event.module in SYNCED_MODULES and item.event.origin != "sync"
        ]
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


StoreFactory = Callable[[Conn, Side], Store]
"""Makes the store adapter of a side for a batch, on the batch's connection."""


class _Batch:
    def __init__(self, conn: Conn, cfg: SyncConfig, stores: StoreFactory, *,
                 replay: bool = False) -> None:
        self.conn = conn
        self.cfg = cfg
        # The stores, through the port: the sync's own tables (links, outcomes, the
        # pause queue, waiting references) it reads and writes itself.
        self.stores: dict[Side, Store] = {side: stores(conn, side) for side in ("desk", "crm")}
        self.replay = replay
        self.links: dict[tuple[str, Side, str], Link] = {}
        self.candidates: dict[tuple[str, Side, str], list[Candidate]] = {}
        self.claimed_keys: set[tuple[str, Side, str]] = set()
        self.writes: dict[tuple[str, Side, int], Write] = {}
        self.outcomes: list[Outcome] = []
        self.result = BatchResult()
        self._fps: dict[int, str] = {}  # id(event) -> fingerprint of its mapped values
        # Account references (projections.refs). Account links read only to translate a
        # reference, keyed like ``links`` (which wins: it holds the batch's own changes).
        self.ref_links: dict[tuple[str, Side, str], Link] = {}
        # Contact pairs whose reference on a side must be decided at flush time (it
        # names, or named, the other side's account), with the event that set it.
        self.ref_checks: dict[tuple[int, Side], tuple[Link, Side, Outcome]] = {}
        self.created_accounts: set[int] = set()  # id(link) of accounts created this batch
        self.ref_outcomes: list[Outcome] = []  # recorded when they failed (see _settle_refs)
        self.earlier_causes: set[int] = set()  # id() of those of events of earlier batches
        self.refs_settled: list[tuple[Link, Side]] = []
        self.refs_waiting: list[tuple[Link, Side, int, int]] = []
        self.stale_refs: list[tuple[Side, str]] = []

    # -- reading ---------------------------------------------------------------

    def _applies(self, event: ChangeEvent) -> bool:
        if event.module == "products":
            if self.cfg.products_department_id is None:
                return False
            if event.source == "desk":
                return event.values.get("department_id") == self.cfg.products_department_id
        return True

    async def run(self, logged: list[LoggedEvent]) -> BatchResult:
        logged = [item for item in logged if self._applies(item.event)]
        if not logged:
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
        for item in logged:
            e = item.event
            self.outcome = Outcome(item.seq, e.event_id, e.source, e.module, e.record_id,
                                   e.captured_at)
            self.outcomes.append(self.outcome)
            self._process(e)
        await self._flush()
        self.result.problems = [o for o in self.outcomes if o.outcome == "failed"]
        return self.result

    async def _load_links(self, events: list[ChangeEvent]) -> None:
        wanted: dict[tuple[str, Side], set[str]] = {}
        for e in events:
            wanted.setdefault((e.module, e.source), set()).add(e.record_id)
        for (module, side), ids in sorted(wanted.items()):
            await self._read_links(module, side, sorted(ids))

    async def _read_links(self, module: str, side: Side, ids: list[str]) -> None:
        # Row locks: two replicas never write the same pair at once (OWN-05).
        rows = await self.conn.fetch(
            f"SELECT * FROM sync.links WHERE module = $1 AND {side}_id = ANY($2::text[])"
            " ORDER BY link_id FOR UPDATE",
            module, ids,
        )
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

    def _remember(self, link: Link) -> None:
        for side in ("desk", "crm"):
            record_id = link.id_on(side)
            if record_id is not None:
                self.links[(link.module, side, record_id)] = link

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
        for item in found:
            self.candidates.setdefault((module, side, item.key), []).append(
                Candidate(item.id, item.values, via_secondary=item.via_secondary))
        if found:
            await self._read_links(module, side, sorted({item.id for item in found}))

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

    def _account_on(self, ref: Ref | None, side: Side) -> int | None:
        """The account of ``side`` a reference names: its own, or the twin its link
        pairs it with; None when there is none (yet)."""
        if ref is None:
            return None
        if ref[0] == side:
            return ref[1]
        key = ("accounts", ref[0], str(ref[1]))
        link = self.links.get(key) or self.ref_links.get(key)
        if link is None or link.gone(side) == "hard":
            return None
        twin = link.id_on(side)
        return int(twin) if twin else None  # "": created at flush time, not yet

    def _merge(self, state: State, mapping: ModuleMapping, *, side: Side,
               values: dict[str, Any], changed: list[str] | None, modified_at: dt.datetime,
               created_at: dt.datetime) -> State:
        """``merge_change``, and a contact's account reference merged like a field."""
        merged = merge_change(state, mapping, side=side, values=values, changed=changed,
                              modified_at=modified_at, created_at=created_at)
        if mapping.module == "contacts":
            merge_ref(merged, side=side, values=values, changed=changed,
                      modified_at=modified_at, created_at=created_at)
        return merged

    @staticmethod
    def _held(values: dict[str, Any], mapping: ModuleMapping, side: Side) -> dict[str, Any]:
        """What a side's record holds of what the sync keeps (fingerprinted, for echoes
        and the guard): the mapped fields, and a contact's ``account_id``."""
        held = side_values(values, mapping, side)
        if mapping.module == "contacts":
            held["account_id"] = values.get("account_id")
        return held

    def _wanted(self, state: State, mapping: ModuleMapping, side: Side) -> dict[str, Any]:
        """What a side's record must hold: the merged mapped fields, and for a contact
        the side's account its reference names (null while there is none)."""
        wanted = project(state, mapping, side)
        if mapping.module == "contacts":
            wanted["account_id"] = self._account_on(ref_of(state), side)
        return wanted

    # -- deciding ----------------------------------------------------------------

    def _fail(self, event: ChangeEvent, reason: str, detail: str = "") -> None:
        self._fail_outcome(self.outcome, reason, detail)

    def _fail_outcome(self, outcome: Outcome, reason: str, detail: str) -> None:
        if outcome.outcome != "failed":
            self.result.failed += 1
        outcome.outcome = "failed"
        outcome.reason = reason
        outcome.detail = detail

    def _process(self, event: ChangeEvent) -> None:
        source: Side = event.source
        mapping = self.cfg.mappings[event.module]
        link = self.links.get((event.module, source, event.record_id))
        if self.cfg.direction == "crm_to_desk" and source == "desk" and not self.replay:
            self._seen_one_way(event, link, mapping)
            return
        if self.replay and (event.op == "delete" or link is None):
            # Replay restores effects already decided: the delete is on the link
            # already, and matching anew would be an unrecorded sync (retry does that).
            self.outcome.outcome = "deleted" if event.op == "delete" else "skipped"
            return
        if event.op == "delete":
            # Deletes are recorded, never propagated (SYNC-11).
            if link is not None:
                link.set_gone(source, "hard" if event.values.get("hard_deleted") else "soft")
                link.saw(source, event.modified_at)
                link.dirty = True
            self.outcome.outcome = "deleted"
            return
        if event.origin == "import" and link is not None:
            # The first sync's capture of a record the sync links already brings nothing
            # it has not seen: the record's captured changes before it were applied (one
            # partition per record, in order), and its values are those and the sync's
            # own writes. Merged as a change touching every field at the record's
            # modification time (that of its newest change only), it would restamp the
            # older fields and beat a newer edit of the other side still on its way.
            self.outcome.outcome = "skipped"
            return
        in_bin = bool(event.values.get("deleted"))
        if link is None:
            if in_bin:
                self.outcome.outcome = "skipped"
                return  # a record that changed in the recycle bin and was never synced
            link = self._match_or_create(event, mapping)
            if link is None:
                return
        elif (self._source_fp(event, mapping) == link.fp(source)
              and not in_bin and link.gone(source) is None
              and not self._ref_unsettled(link, mapping, OTHER[source])):
            self.result.echoes += 1  # what that side already holds: nothing to sync
            self.outcome.outcome = "echo"
            link.saw(source, event.modified_at)
            link.dirty = True
            return
        self._apply(event, link, mapping, in_bin=in_bin)

    def _seen_one_way(self, event: ChangeEvent, link: Link | None,
                      mapping: ModuleMapping) -> None:
        """One-way CRM -> desk (SYNC-02): a desk change is never applied to the CRM, but
        the sync has seen it (it is in the log), so the desk record is known to carry
        it: a later CRM write to it is not held back as an unseen edit. The CRM is the
        source: if a CRM write was held back waiting for this very change, it is made
        now, and the desk gets the CRM's values again."""
        self.outcome.outcome = "skipped"
        if self.replay or link is None:
            return
        link.saw("desk", event.modified_at)
        link.dirty = True
        if event.op == "delete":  # recorded, never propagated (SYNC-11)
            link.set_gone("desk", "hard" if event.values.get("hard_deleted") else "soft")
            return
        if not event.values.get("deleted"):
            link.set_gone("desk", None)  # it changed, so it exists (restored)
        held = link.fp("desk") is None and "desk" not in link.pending
        link.set_fp("desk", self._source_fp(event, mapping))
        wanted = self._wanted(link.state, mapping, "desk")
        if held and link.state and fingerprint(wanted) != link.fp("desk"):
            stamp = EPOCH + dt.timedelta(microseconds=newest(link.state))
            self._write(link, "desk", wanted, event, create=False, stamp=stamp, claim=None)
            link.pending["desk"] = fingerprint(wanted)

    def _source_fp(self, event: ChangeEvent, mapping: ModuleMapping) -> str:
        """The fingerprint of what the event's record holds: for the echo check, then
        for the link (computed once; the events live as long as the batch)."""
        fp = self._fps.get(id(event))
        if fp is None:
            fp = self._fps[id(event)] = fingerprint(self._held(event.values, mapping,
                                                               event.source))
        return fp

    def _match_or_create(self, event: ChangeEvent, mapping: ModuleMapping) -> Link | None:
        source: Side = event.source
        target = OTHER[source]
        keys = match_keys(event.module, event.values, secondary=self.cfg.match_secondary_email)
        found: dict[str, Candidate] = {}
        rivals: set[str] = set()
        for key in keys:
            if (event.module, target, key) in self.claimed_keys:
                self._fail(event, REASON_ALREADY_MAPPED, f"match key {key!r} is taken")
                return None
            for cand in self.candidates.get((event.module, target, key), []):
                found.setdefault(cand.record_id, cand)
            if found:
                # Others on this side holding the key claim the same candidate: which
                # of them it belongs to would be a guess (SYNC-06), and one decided by
                # the order of arrival or the batching.
                rivals = {c.record_id for c in self.candidates.get((event.module, source, key), [])
                          if c.record_id != event.record_id}
                break  # the primary key decides when it matches anything
        link = Link(module=event.module, desk_id=None, crm_id=None, state={},
                    linked_at=event.modified_at, updated_at=event.modified_at)
        link.set_id(source, event.record_id)
        if len(found) > 1:
            self._fail(event, REASON_AMBIGUOUS,
                       f"{len(found)} {target} records match: {sorted(found)[:5]}")
            return None
        if found and rivals and (event.module, target, next(iter(found))) not in self.links:
            self._fail(event, REASON_AMBIGUOUS,
                       f"{target} record {next(iter(found))} also matches {source} records"
                       f" {sorted(rivals)[:5]}")
            return None
        if found:
            (cand,) = found.values()
            if (event.module, target, cand.record_id) in self.links:
                self._fail(event, REASON_ALREADY_MAPPED,
                           f"{target} record {cand.record_id} is linked to another record")
                return None
            link.set_id(target, cand.record_id)
            link.state = self._merge(
                {}, mapping, side=target, values=cand.values, changed=None,
                modified_at=_parse_time(cand.values.get("modified_time")),
                created_at=_parse_time(cand.values.get("created_time")))
            link.set_fp(target, fingerprint(self._held(cand.values, mapping, target)))
            link.saw(target, _parse_time(cand.values.get("modified_time")))
            secondary_match = cand.via_secondary or (
                email_key(event.values.get("email")) != email_key(cand.values.get("email")))
            if event.module == "contacts" and secondary_match:
                # Matched through a secondary e-mail: the CRM's primary e-mail wins (SYNC-06).
                crm_values = cand.values if target == "crm" else event.values
                pair = next(p for p in mapping.pairs if p.crm_field.name == "email")
                stamp = max(newest(link.state), micros(event.modified_at)) + 1
                offer(link.state, pair.key, crm_values.get("email"), stamp, "crm")
        for key in keys:
            self.claimed_keys.add((event.module, target, key))
        self._remember(link)
        return link

    def _apply(self, event: ChangeEvent, link: Link, mapping: ModuleMapping, *,
               in_bin: bool) -> None:
        source: Side = event.source
        if event.module == "contacts":
            problem = ref_problem(event.values.get("account_id"))
            if problem is not None:
                self._fail(event, problem, f"{source} field account_id")
                return
        state = self._merge(link.state, mapping, side=source, values=event.values,
                            changed=event.changed, modified_at=event.modified_at,
                            created_at=event.created_at)
        sides: list[Side] = [OTHER[source], source]
        if self.cfg.direction == "crm_to_desk" and source == "crm":
            sides = ["desk"]  # in a replay, a desk event was applied two-way (its outcome)
        desired = {side: self._wanted(state, mapping, side) for side in sides}
        for side in sides:
            for fld in mapping.fields(side):
                problem = value_problem(desired[side].get(fld.name), fld)
                if problem is not None:
                    self._fail(event, problem, f"{side} field {fld.name}")
                    return
        if not self.replay:  # in a replay, the source may have lost this change
            link.set_fp(source, self._source_fp(event, mapping))
        link.saw(source, event.modified_at)
        if link.gone(source) is not None and not in_bin and not self.replay:
            link.set_gone(source, None)  # it changed, so it exists (restored)
        stamp = EPOCH + dt.timedelta(microseconds=newest(state))
        for side in sides:
            if self.replay and link.gone(side) is not None:
                continue  # deleted since: a replay never brings a record back (SYNC-11)
            must_restore = side == source and in_bin
            known = link.pending.get(side, link.fp(side))
            wanted = fingerprint(desired[side])
            if wanted == known and not must_restore \
                    and link.gone(side) is None and link.id_on(side) is not None:
                continue
            create = link.id_on(side) is None or link.gone(side) == "hard"
            claim = None
            if side != source:
                self.outcome.outcome = "superseded"  # until the write lands
                claim = (self.outcome, "added" if create else "updated")
            self._write(link, side, desired[side], event, create=create, stamp=stamp,
                        claim=claim)
            link.pending[side] = wanted
            link.set_gone(side, None)
        if event.module == "contacts" and not self.replay:
            # A reference naming the other side's account (now, or before this change:
            # then a reference may be waiting) is decided at flush time, once the
            # batch's accounts have their ids (_settle_refs).
            before, after = ref_of(link.state), ref_of(state)
            for side in sides:
                if any(ref is not None and ref[0] != side for ref in (before, after)):
                    self.ref_checks[(id(link), side)] = (link, side, self.outcome)
        link.state = state
        link.updated_at = max(link.updated_at, event.modified_at)
        link.dirty = True

    def _write(self, link: Link, side: Side, values: dict[str, Any], event: ChangeEvent, *,
               create: bool, stamp: dt.datetime, claim: tuple[Outcome, str] | None) -> None:
        if create:
            old = link.id_on(side)
            if old:
                self.links.pop((link.module, side, old), None)
            link.set_id(side, "")  # a new record: its id is drawn at flush time
        previous = self.writes.get((link.module, side, id(link)))
        claims = previous.outcomes if previous is not None else []
        if claim is not None:
            claims.append(claim)
        self.writes[(link.module, side, id(link))] = Write(
            link=link, side=side, values=values, modified_at=stamp,
            created_at=event.created_at,
            create=create or (previous is not None and previous.create), outcomes=claims,
            cause=self.outcome,
        )
        self.result.written += 1

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
        exists = {side: await self.stores[side].existing("accounts", sorted(ids))
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

    def _ref_unsettled(self, link: Link, mapping: ModuleMapping, side: Side) -> bool:
        """The pair's reference names an account of the other side that ``side`` does
        not point at the twin of: there is none (waiting, or no such account), or
        ``side`` was written without it and the twin exists now (an account created
        after its failure). Then a change equal to what the other side holds (a retry,
        say) is applied, not dropped as an echo."""
        if self._crosses_unresolved(link, side):
            return True
        ref = ref_of(link.state) if link.module == "contacts" else None
        if ref is None or ref[0] == side:
            return False
        without = {**self._wanted(link.state, mapping, side), "account_id": None}
        return link.fp(side) == fingerprint(without)

    def _crosses_unresolved(self, link: Link, side: Side) -> bool:
        """A contact pair's reference names an account of the other side than ``side``
        that has no twin on ``side`` (yet)."""
        ref = ref_of(link.state) if link.module == "contacts" else None
        return ref is not None and ref[0] != side and self._account_on(ref, side) is None

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
        for side in ("desk", "crm"):
            ids = sorted({r["contact_id"] for r in rows if r["side"] == side}
                         - {i for (m, s, i) in self.links if m == "contacts" and s == side})
            if ids:
                await self._read_links("contacts", side, ids)
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
        await store.create(module, [*columns, *extra], create_rows)
        landed: dict[str, dt.datetime] = {str(r["id"]): w.modified_at for r, w in
                                          zip(create_rows, creates, strict=True)}
        if update_rows:
            updates = [w for w in writes if not w.create]
            landed.update(await store.update(module, columns, update_rows,
                                             [w.link.seen(side) for w in updates]))
            refused = [w for w in updates if (w.link.id_on(side) or "") not in landed]
            if refused and not self.replay:
                landed.update(await self._held_back(side, module, columns, refused))
        for write in writes:
            moment = landed.get(write.link.id_on(side) or "")
            if moment is not None:
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
                         refused: list[Write]) -> dict[str, dt.datetime]:
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
        pending = await store.changes_in_flight(module, ids) | {
            row["record_id"] for row in await self.conn.fetch(
                "SELECT e.record_id FROM sync.deferred d JOIN syncd.event_log e"
                " ON e.seq = d.seq WHERE e.source = $3 AND e.module = $1"
                " AND e.record_id = ANY($2)", module, ids, side)}
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
                                  [w.link.seen(side) for w in now])

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
        row: dict[str, Any] = {"id": int(write.link.id_on(side) or 0)}
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
        # Typed arrays, one per column: asyncpg encodes them in binary, so nothing is
        # formatted as text here or parsed back from JSON there (but the state).
        if known:
            await self.conn.execute(
                """
                UPDATE sync.links l SET desk_id = r.desk_id, crm_id = r.crm_id,
                    state = r.state::jsonb, desk_fp = r.desk_fp, crm_fp = r.crm_fp,
                    desk_gone = r.desk_gone, crm_gone = r.crm_gone, desk_seen = r.desk_seen,
                    crm_seen = r.crm_seen, updated_at = r.updated_at
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                            $10::timestamptz[], $11::timestamptz[])
                    AS r(link_id, desk_id, crm_id, state, desk_fp, crm_fp, desk_gone, crm_gone,
                         desk_seen, crm_seen, updated_at)
                WHERE l.link_id = r.link_id
                """,
                [link.link_id for link in known], *_link_columns(known),
            )
        if fresh:
            await self.conn.execute(
                """
                INSERT INTO sync.links (module, desk_id, crm_id, state, desk_fp, crm_fp,
                    desk_gone, crm_gone, desk_seen, crm_seen, updated_at, linked_at)
                SELECT module, desk_id, crm_id, state::jsonb, desk_fp, crm_fp, desk_gone,
                    crm_gone, desk_seen, crm_seen, updated_at, linked_at
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                            $10::timestamptz[], $11::timestamptz[], $12::timestamptz[])
                    AS r(module, desk_id, crm_id, state, desk_fp, crm_fp, desk_gone, crm_gone,
                         desk_seen, crm_seen, updated_at, linked_at)
                """,
                [link.module for link in fresh], *_link_columns(fresh),
                [link.linked_at for link in fresh],
            )


def _link_columns(links: list[Link]) -> list[list[Any]]:
    """desk_id, crm_id, state (JSON text), desk_fp, crm_fp, desk_gone, crm_gone,
    desk_seen, crm_seen, updated_at: one list per column."""
    encode = msgspec.json.encode
    return [
        [link.desk_id for link in links], [link.crm_id for link in links],
        [encode(link.state).decode() for link in links],
        [link.desk_fp for link in links], [link.crm_fp for link in links],
        [link.desk_gone for link in links], [link.crm_gone for link in links],
        [link.desk_seen for link in links], [link.crm_seen for link in links],
        [link.updated_at for link in links],
    ]




def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return EPOCH
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return EPOCH
