"""The sync's decisions, as a plan: pure, over the batch's events and what the batch
loaded (links, candidates, account links); no database, no store. The batch
(``projections.sync``) loads the planner's state through the store port and the
sync's tables, calls ``decide``, and carries the plan out.

The rules it applies are the SYNC features (docs/sync-rules.md): match or create,
merge per field (newest wins, ``projections.merge``), check every value against
its target field, echoes dropped by fingerprint, deletes recorded and never
propagated, one-way mode; account references are decided at flush time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.catalog import OTHER, Side
from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.keys import account_key, email_key
from projections.ledger import Outcome
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
from projections.refs import Ref, merge_ref, ref_of, ref_problem
from projections.stores.port import SYNC_KEY_FIELD, is_placeholder

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
    # The match keys ``values`` leave the record holding, each with whether it is the
    # secondary e-mail's (``held_keys``; set by ``Planner._write``).
    keys: dict[str, bool] = field(default_factory=dict)


@dataclass
class BatchResult:
    written: int = 0
    failed: int = 0
    echoes: int = 0
    problems: list[Outcome] = field(default_factory=list)

    def report(self) -> ProjectionReport:
        return ProjectionReport(tuple(self.problems)) if self.problems else NOTHING_TO_REPORT


def match_keys(module: str, values: dict[str, Any], *, secondary: bool) -> list[str]:
    """The normalised keys a record can be matched on, primary first, each once."""
    return [key for key, _ in held_keys(module, values, secondary=secondary)]


def held_keys(module: str, values: dict[str, Any], *,
              secondary: bool) -> list[tuple[str, bool]]:
    """The keys a record can be matched on and found by (``match_keys``), each once,
    each with whether it is its secondary e-mail's rather than its primary key
    (``Found``). Each key is computed once: this runs for every write the sync plans."""
    if module == "contacts":
        primary = email_key(values.get("email"))
        keys = [(primary, False)] if primary else []
        if secondary:
            other = email_key(values.get("secondary_email"))
            if other and other != primary:
                keys.append((other, True))
        return keys
    if module == "accounts":
        key = account_key(values.get("account_name"))
        return [(key, False)] if key else []
    return []


class Planner:
    """The sync's decisions for one batch, made in memory over what was loaded: the
    links of the batch's records, the match candidates found through the store
    port, the account links the contacts' references name. ``decide`` walks the
    events in log order and leaves the plan in its state: ``writes`` (what each
    side's record must hold), the changed ``links`` (``dirty``), ``outcomes`` for
    the ledger, and ``ref_checks`` (references to settle once the batch's accounts
    have ids). It touches no database: the batch (``projections.sync._Batch``)
    loads its state and carries the plan out through the port.
    """

    def __init__(self, cfg: SyncConfig, *, replay: bool = False) -> None:
        self.cfg = cfg
        self.replay = replay
        self.links: dict[tuple[str, Side, str], Link] = {}
        self.candidates: dict[tuple[str, Side, str], list[Candidate]] = {}
        # Who holds each match key as this batch's writes leave the records (``_holders``):
        # per (module, side, key), the links whose planned write on that side holds it.
        self.planned_keys: dict[tuple[str, Side, str], dict[int, Link]] = {}
        # The values of the records read as match candidates, by (module, side, id).
        self.loaded: dict[tuple[str, Side, str], dict[str, Any]] = {}
        self.writes: dict[tuple[str, Side, int], Write] = {}
        self.outcomes: list[Outcome] = []
        self.result = BatchResult()
        self._fps: dict[int, tuple[ChangeEvent, str]] = {}  # id(event) -> it, its fingerprint
        # Account references (projections.refs). Account links read only to translate a
        # reference, keyed like ``links`` (which wins: it holds the batch's own changes).
        self.ref_links: dict[tuple[str, Side, str], Link] = {}
        # Contact pairs whose reference on a side must be decided at flush time (it
        # names, or named, the other side's account), with the event that set it.
        self.ref_checks: dict[tuple[int, Side], tuple[Link, Side, Outcome]] = {}

    def decide(self, logged: Sequence[LoggedEvent]) -> None:
        """Decide every event of ``logged`` (in log order): one outcome each."""
        for item in logged:
            e = item.event
            self.outcome = Outcome(item.seq, e.event_id, e.source, e.module, e.record_id,
                                   e.captured_at)
            self.outcomes.append(self.outcome)
            self._process(e)

    def _applies(self, event: ChangeEvent) -> bool:
        if event.module == "products":
            if self.cfg.products_department_id is None:
                return False
            if event.source == "desk":
                return event.values.get("department_id") == self.cfg.products_department_id
        return True

    def _remember(self, link: Link) -> None:
        for side in ("desk", "crm"):
            record_id = link.id_on(side)
            if record_id is not None:
                self.links[(link.module, side, record_id)] = link

    def _account_on(self, ref: Ref | None, side: Side) -> int | str | None:
        """The account of ``side`` a reference names: its own, or the twin its link
        pairs it with; None when there is none (yet). A twin a deferred store is still
        creating is named by its placeholder, which its writer sends as the sync key
        (the store resolves it, as a lookup by its external-id field)."""
        if ref is None:
            return None
        if ref[0] == side:
            return ref[1]
        key = ("accounts", ref[0], str(ref[1]))
        link = self.links.get(key) or self.ref_links.get(key)
        if link is None or link.gone(side) == "hard":
            return None
        twin = link.id_on(side)
        if not twin:
            return None  # "": created at flush time, not yet
        return twin if is_placeholder(twin) else int(twin)

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
        link = self.links.get((event.module, source, event.record_id)) or self._rekeyed(event)
        if event.origin == "sync":
            self._landed(event, link, mapping)
            return
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
            self._apply(event, link, mapping, in_bin=in_bin)
            if self.outcome.outcome == "failed" and not link.dirty:
                self._forget(event, link)
            return
        elif (self._is_echo(event, link, mapping)
              and not in_bin and link.gone(source) is None
              and not self._ref_unsettled(link, mapping, OTHER[source])):
            self.result.echoes += 1  # what that side already holds: nothing to sync
            self.outcome.outcome = "echo"
            link.saw(source, event.modified_at)
            link.dirty = True
            return
        self._apply(event, link, mapping, in_bin=in_bin)

    def _rekeyed(self, event: ChangeEvent) -> Link | None:
        """The link of a record the sync created in a deferred store, still under the
        placeholder it was created with (the record's sync key): it moves onto the id
        the store gave the record, the first time a change of it says so."""
        key = event.values.get(SYNC_KEY_FIELD)
        if not isinstance(key, str) or not is_placeholder(key):
            return None
        link = self.links.pop((event.module, event.source, key), None)
        if link is not None:
            link.set_id(event.source, event.record_id)
            link.dirty = True
            self._remember(link)
        return link

    def _landed(self, event: ChangeEvent, link: Link | None, mapping: ModuleMapping) -> None:
        """A write of the sync's own landed on a deferred store (its writer's event):
        the side is known to hold what the store answered, as of the time it gave it.
        Never synced back (SYNC-14); a later capture of the same values is an echo."""
        self.outcome.outcome = "echo"
        if link is None:
            self.outcome.outcome = "skipped"  # the pair was unlinked since
            return
        link.saw(event.source, event.modified_at)
        link.set_fp(event.source, self._source_fp(event, mapping))
        link.dirty = True

    def _is_echo(self, event: ChangeEvent, link: Link, mapping: ModuleMapping) -> bool:
        """Whether the change brings what its side is known to hold already.

        Not when this batch plans to write that side otherwise and the change is newer
        than what the sync last saw of it: then a person set the side (back) after
        the change the plan follows, and the newest edit is theirs (SYNC-15).
        """
        source: Side = event.source
        fp = self._source_fp(event, mapping)
        if fp != link.fp(source):
            return False
        planned = link.pending.get(source)
        seen = link.seen(source)
        return planned is None or planned == fp or (
            seen is not None and event.modified_at <= seen)

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
        for the link (computed once per event). Cached by ``id(event)`` with the event
        itself, so an event freed after an earlier ``decide`` cannot lend its id, and
        its fingerprint, to a later one."""
        cached = self._fps.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        fp = fingerprint(self._held(event.values, mapping, event.source))
        self._fps[id(event)] = (event, fp)
        return fp

    def _match_or_create(self, event: ChangeEvent, mapping: ModuleMapping) -> Link | None:
        source: Side = event.source
        target = OTHER[source]
        keys = match_keys(event.module, event.values, secondary=self.cfg.match_secondary_email)
        found: dict[str, Candidate] = {}
        rivals: set[str] = set()
        for key in keys:
            found = self._holders(event.module, target, key)
            if found:
                # Others on this side holding the key claim the same candidate: which
                # of them it belongs to would be a guess (SYNC-06), and one decided by
                # the order of arrival or the batching.
                rivals = set(self._holders(event.module, source, key)) - {event.record_id}
                break  # the primary key decides when it matches anything
        link = Link(module=event.module, desk_id=None, crm_id=None, state={},
                    linked_at=event.modified_at, updated_at=event.modified_at)
        link.set_id(source, event.record_id)
        if len(found) > 1:
            self._fail(event, REASON_AMBIGUOUS,
                       f"{len(found)} {target} records match: {sorted(found)[:5]}")
            return None
        if found and rivals and not self._linked(event.module, target, next(iter(found))):
            self._fail(event, REASON_AMBIGUOUS,
                       f"{target} record {next(iter(found))} also matches {source} records"
                       f" {sorted(rivals)[:5]}")
            return None
        if found:
            (cand,) = found.values()
            if self._linked(event.module, target, cand.record_id):
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
        self._remember(link)
        return link

    def _holders(self, module: str, side: Side, key: str) -> dict[str, Candidate]:
        """The records of ``side`` holding match key ``key`` as the batch's decisions so
        far leave them, by record id, as one batch of one event each would find them in
        the store, each after the writes of those before: those the batch loaded, less
        those a planned write that would land takes the key from, with those a planned
        write that would land gives it to (a twin not yet created, named ``new:`` and
        its link, always would). So an outcome does not hang on where the batches are
        cut (a pair matched on its primary e-mail, whose merge leaves a record without
        its old secondary one, frees that key for a later record of the same batch)."""
        out: dict[str, Candidate] = {}
        for cand in self.candidates.get((module, side, key), []):
            link = self.links.get((module, side, cand.record_id))
            write = None if link is None else self.writes.get((module, side, id(link)))
            if write is None or key in write.keys or not self._lands(write):
                out.setdefault(cand.record_id, cand)
        for link in self.planned_keys.get((module, side, key), {}).values():
            write = self.writes[(module, side, id(link))]
            record_id = link.id_on(side) or f"new:{id(link)}"
            if record_id not in out and self._lands(write):
                out[record_id] = Candidate(record_id, write.values,
                                           via_secondary=write.keys[key])
        return out

    def _lands(self, write: Write) -> bool:
        """Whether a planned write would land now: the guard lets it through when the
        record's row is not newer than what the sync has seen of it (a newer row holds
        an edit still on its way, and keeps its values until that edit is applied). A
        twin always would; a record the batch did not read as a candidate is taken to."""
        record_id = write.link.id_on(write.side)
        row = self.loaded.get((write.link.module, write.side, record_id or ""))
        if not record_id or row is None:
            return True
        seen = write.link.seen(write.side)
        return seen is not None and _parse_time(row.get("modified_time")) <= seen

    def _linked(self, module: str, side: Side, record_id: str) -> bool:
        """A record of ``side`` that a link pairs already (a twin not yet created too)."""
        return record_id.startswith("new:") or (module, side, record_id) in self.links

    def _forget(self, event: ChangeEvent, link: Link) -> None:
        """A pair matched or begun for ``event`` whose change then failed (a value
        check, its account reference) is not made: its record is free again for the
        rest of the batch, as it is for a later batch (the link is never written, and
        the failed change planned no write). Else a later record of the same batch
        would fail as "already mapped" where, one batch later, it would be matched or
        created: the outcome would hang on where the batches happen to be cut."""
        for side in ("desk", "crm"):
            record_id = link.id_on(side)
            if record_id and self.links.get((link.module, side, record_id)) is link:
                del self.links[(link.module, side, record_id)]

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
        write = Write(
            link=link, side=side, values=values, modified_at=stamp,
            created_at=event.created_at,
            create=create or (previous is not None and previous.create), outcomes=claims,
            cause=self.outcome,
            keys=dict(held_keys(link.module, values, secondary=self.cfg.match_secondary_email)),
        )
        self.writes[(link.module, side, id(link))] = write
        self.result.written += 1
        for key in previous.keys if previous is not None else ():
            self.planned_keys[(link.module, side, key)].pop(id(link), None)
        for key in write.keys:
            self.planned_keys.setdefault((link.module, side, key), {})[id(link)] = link

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



def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return EPOCH
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return EPOCH
