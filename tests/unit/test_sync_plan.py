"""The SYNC rules on the pure planner (``projections.sync_plan``): events and the
state a batch would have loaded in, the plan out; no database. The same rules run
end to end on the embedded stores in tests/integration/test_sync_rules.py."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

from projections.batch import LoggedEvent
from projections.config import SyncConfig
from projections.events import ChangeEvent
from projections.keys import email_key
from projections.mapping import REASON_MANDATORY
from projections.merge import fingerprint
from projections.sync_plan import (
    REASON_ALREADY_MAPPED,
    REASON_AMBIGUOUS,
    Candidate,
    Link,
    Planner,
)

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
_seq = itertools.count(1)


def event(source: str, record_id: str, values: dict[str, Any], *, op: str = "create",
          module: str = "contacts", at: dt.datetime = T0, origin: str = "user") -> LoggedEvent:
    return LoggedEvent(next(_seq), ChangeEvent(
        event_id=uuid.uuid4(), source=source, module=module,  # type: ignore[arg-type]
        record_id=record_id, op=op, values=values, modified_at=at,  # type: ignore[arg-type]
        created_at=T0, origin=origin, captured_at=at))  # type: ignore[arg-type]


def contact(email: str | None, last: str = "Doe", **more: Any) -> dict[str, Any]:
    return {"first_name": "Ana", "last_name": last, "email": email, **more}


def planner(cfg: SyncConfig | None = None) -> Planner:
    return Planner(cfg or SyncConfig())


def crm_candidate(plan: Planner, record_id: str, values: dict[str, Any]) -> None:
    """What the batch would have found through the CRM store's ``find``."""
    plan.candidates.setdefault(("contacts", "crm", email_key(values["email"]) or ""), []).append(
        Candidate(record_id, {**values, "modified_time": T0.isoformat(),
                              "created_time": T0.isoformat()}, via_secondary=False))


def test_a_new_desk_contact_without_a_match_is_created_on_the_crm() -> None:
    """No candidate: the plan creates the CRM twin; the event counts as added once the
    write lands (claimed, superseded until then)."""
    plan = planner()
    plan.decide([event("desk", "1", contact("ana@example.com"))])
    ((module, side, _), write), = plan.writes.items()
    assert (module, side, write.create) == ("contacts", "crm", True)
    assert write.values["email"] == "ana@example.com"
    assert write.values["last_name"] == "Doe"
    (outcome,) = plan.outcomes
    assert outcome.outcome == "superseded"
    assert write.outcomes == [(outcome, "added")]
    assert write.link.desk_id == "1" and write.link.crm_id == ""  # drawn at flush time


def test_a_match_by_email_links_without_creating() -> None:
    """SYNC-03: one CRM contact holds the e-mail (case and spaces aside): linked, and
    only the fields that differ make a write (an update, not a create)."""
    plan = planner()
    crm_candidate(plan, "900", contact("ANA@example.com ", last="Doe"))
    plan.decide([event("desk", "1", contact("ana@example.com", last="Doe-Smith"),
                       at=T0 + dt.timedelta(seconds=1))])  # newer than the CRM's
    (write,) = plan.writes.values()
    assert write.side == "crm" and not write.create
    assert write.link.crm_id == "900" and write.link.desk_id == "1"
    assert write.values["last_name"] == "Doe-Smith"


def test_two_candidates_are_ambiguous_and_nothing_is_written() -> None:
    """SYNC-06: more than one CRM contact holds the key: a failure, never a guess."""
    plan = planner()
    crm_candidate(plan, "900", contact("ana@example.com"))
    crm_candidate(plan, "901", contact("ana@example.com"))
    plan.decide([event("desk", "1", contact("ana@example.com"))])
    assert plan.writes == {}
    (outcome,) = plan.outcomes
    assert (outcome.outcome, outcome.reason) == ("failed", REASON_AMBIGUOUS)


def test_a_key_claimed_earlier_in_the_batch_is_already_mapped() -> None:
    """Two desk contacts with one e-mail in one batch: the second may not take the CRM
    twin the first one is creating."""
    plan = planner()
    plan.decide([event("desk", "1", contact("ana@example.com")),
                 event("desk", "2", contact("ana@example.com"))])
    first, second = plan.outcomes
    assert first.outcome == "superseded"
    assert (second.outcome, second.reason) == ("failed", REASON_ALREADY_MAPPED)
    assert len(plan.writes) == 1


def test_a_record_whose_change_failed_frees_its_key_for_the_rest_of_the_batch() -> None:
    """Two desk contacts with one e-mail, the first failing its value check: nothing is
    made for it, so the second is created and linked, in the same batch as in the next
    one (found by the first sync's comparison with its bulk path, issue 19). Before,
    the first one's claim on the key stayed and the second failed as "already
    mapped" when, and only when, both happened to be in one batch."""
    first = event("desk", "1", contact("ana@example.com", last=""))
    second = event("desk", "2", contact("ana@example.com"))
    together = planner()
    together.decide([first, second])
    apart = planner()
    apart.decide([second])
    assert [o.reason for o in together.outcomes] == [REASON_MANDATORY, None]
    assert together.outcomes[1].outcome == apart.outcomes[0].outcome == "superseded"
    ((_, write),) = together.writes.items()
    assert (write.link.desk_id, write.create) == ("2", True)
    assert ("contacts", "desk", "1") not in together.links


def test_a_match_whose_change_failed_leaves_the_candidate_free() -> None:
    """The same for a match: the CRM contact the failing desk contact matched stays
    free for the next desk contact of the batch."""
    plan = planner()
    crm_candidate(plan, "900", contact("ana@example.com"))
    later = T0 + dt.timedelta(seconds=1)  # newer than the CRM's: its empty name wins
    plan.decide([event("desk", "1", contact("ana@example.com", last=""), at=later),
                 event("desk", "2", contact("ana@example.com"))])
    failed, matched = plan.outcomes
    assert (failed.outcome, failed.reason) == ("failed", REASON_MANDATORY)
    assert matched.reason is None
    assert plan.links[("contacts", "crm", "900")].desk_id == "2"


def test_a_mandatory_field_missing_is_a_failure() -> None:
    """SYNC-05: the CRM contact's last name is mandatory; empty, nothing is written."""
    plan = planner()
    plan.decide([event("desk", "1", contact("ana@example.com", last=""))])
    assert plan.writes == {}
    (outcome,) = plan.outcomes
    assert (outcome.outcome, outcome.reason) == ("failed", REASON_MANDATORY)


def linked(plan: Planner, values: dict[str, Any]) -> Link:
    """A pair the sync linked in an earlier batch, both sides holding ``values``."""
    from projections.merge import merge_change

    mapping = plan.cfg.mappings["contacts"]
    state = merge_change({}, mapping, side="desk", values=values, changed=None,
                         modified_at=T0, created_at=T0)
    link = Link(module="contacts", desk_id="1", crm_id="900", state=state, linked_at=T0,
                updated_at=T0)
    held = plan._held(values, mapping, "desk")
    link.set_fp("desk", fingerprint(held))
    link.set_fp("crm", fingerprint(plan._held(values, mapping, "crm")))
    link.saw("desk", T0)
    link.saw("crm", T0)
    plan.links[("contacts", "desk", "1")] = link
    plan.links[("contacts", "crm", "900")] = link
    return link


def test_an_echo_of_what_the_side_holds_is_dropped() -> None:
    """SYNC-14: a change equal to what the link knows the side holds is an echo."""
    plan = planner()
    values = contact("ana@example.com", account_id=None)
    linked(plan, values)
    plan.decide([event("crm", "900", values, op="update", at=T0 + dt.timedelta(seconds=1))])
    assert plan.writes == {}
    assert [o.outcome for o in plan.outcomes] == ["echo"]


def test_an_update_of_a_linked_record_writes_the_other_side() -> None:
    """A person's change on the CRM reaches the desk twin (two-way, newest wins)."""
    plan = planner()
    values = contact("ana@example.com", account_id=None)
    linked(plan, values)
    plan.decide([event("crm", "900", {**values, "last_name": "Lima"}, op="update",
                       at=T0 + dt.timedelta(seconds=1))])
    (write,) = plan.writes.values()
    assert (write.side, write.create, write.values["last_name"]) == ("desk", False, "Lima")
    assert write.outcomes[0][1] == "updated"


def test_one_way_skips_desk_changes() -> None:
    """SYNC-02: from the CRM to the desk only, a desk change is seen, never applied."""
    plan = planner(SyncConfig(direction="crm_to_desk"))
    values = contact("ana@example.com", account_id=None)
    linked(plan, values)
    plan.decide([event("desk", "1", {**values, "last_name": "Lima"}, op="update",
                       at=T0 + dt.timedelta(seconds=1))])
    assert plan.writes == {}
    assert [o.outcome for o in plan.outcomes] == ["skipped"]


def test_a_delete_is_recorded_and_never_propagated() -> None:
    """SYNC-11: a deleted CRM contact leaves the desk twin alone; the link knows it."""
    plan = planner()
    link = linked(plan, contact("ana@example.com", account_id=None))
    plan.decide([event("crm", "900", {"hard_deleted": False}, op="delete",
                       at=T0 + dt.timedelta(seconds=1))])
    assert plan.writes == {}
    assert [o.outcome for o in plan.outcomes] == ["deleted"]
    assert link.gone("crm") == "soft" and link.dirty


def test_a_person_setting_a_side_back_in_the_batch_is_not_an_echo() -> None:
    """SYNC-15, found by the planner's convergence property: desk sets a, the CRM sets
    b, the desk sets a again, all in one batch. The third change equals what the desk
    held when the sync last saw it, but the sync had planned to write b there: it is
    the newest edit, not an echo, and both sides end with a (it once ended with b on
    both, the person's last edit lost)."""
    plan = planner()
    values = contact("ana@example.com", account_id=None)
    linked(plan, values)
    at = [T0 + dt.timedelta(milliseconds=k) for k in (1, 2, 3)]
    plan.decide([
        event("desk", "1", {**values, "first_name": "a"}, op="update", at=at[0]),
        event("crm", "900", {**values, "first_name": "b"}, op="update", at=at[1]),
        event("desk", "1", {**values, "first_name": "a"}, op="update", at=at[2])])
    assert [o.outcome for o in plan.outcomes][2] != "echo"
    final = {write.side: plan._wanted(write.link.state, plan.cfg.mappings["contacts"],
                                      write.side)["first_name"]
             for write in plan.writes.values()}
    assert final == {"desk": "a", "crm": "a"}


def _created_under_placeholder(plan: Planner, values: dict[str, Any]) -> Link:
    """A pair whose CRM twin the sync is creating in a deferred store: linked under
    the placeholder, the CRM known to hold what was written."""
    plan.decide([event("desk", "1", values)])
    (write,) = plan.writes.values()
    link = write.link
    plan.links.pop(("contacts", "crm", ""), None)
    link.crm_id = "new:k1"
    link.set_fp("crm", fingerprint(plan._held(write.values, plan.cfg.mappings["contacts"],
                                              "crm")))
    plan._remember(link)
    plan.writes.clear()
    plan.outcomes.clear()
    return link


def test_a_deferred_stores_landing_moves_the_link_onto_its_id_and_is_never_synced_back(
        ) -> None:
    """The writer's landing (origin sync, the record's sync key in its values): the
    link moves from the placeholder to the store's id, the CRM is seen as of the time
    the store gave the record, and nothing is written back to the desk."""
    plan = planner()
    values = contact("ana@example.com")
    link = _created_under_placeholder(plan, values)
    landed_at = T0 + dt.timedelta(seconds=3)
    plan.decide([event("crm", "5001", {**values, "syncd_key": "new:k1",
                                       "last_name": "DOE"},  # the store normalised it
                       op="update", at=landed_at, origin="sync")])
    assert link.crm_id == "5001"
    assert plan.links[("contacts", "crm", "5001")] is link
    assert ("contacts", "crm", "new:k1") not in plan.links
    assert link.crm_seen == landed_at
    assert plan.writes == {}  # the sync's own write: never synced back (SYNC-14)
    assert [o.outcome for o in plan.outcomes] == ["echo"]
    # The store's own capture of the same record afterwards is an echo too.
    plan.decide([event("crm", "5001", {**values, "syncd_key": "new:k1",
                                       "last_name": "DOE"}, op="update", at=landed_at)])
    assert plan.writes == {}
    assert [o.outcome for o in plan.outcomes] == ["echo", "echo"]


def test_the_stores_capture_of_a_create_before_its_landing_finds_the_pair() -> None:
    """The store reports the sync's create (with its sync key) before the writer's
    landing is applied: the link moves onto the store's id then, and the change is
    an echo, not a new record to match or create."""
    plan = planner()
    values = contact("ana@example.com")
    link = _created_under_placeholder(plan, values)
    plan.decide([event("crm", "5001", {**values, "syncd_key": "new:k1"}, op="create",
                       at=T0 + dt.timedelta(seconds=2))])
    assert link.crm_id == "5001"
    assert plan.writes == {}
    assert [o.outcome for o in plan.outcomes] == ["echo"]


def test_an_event_freed_after_one_decide_lends_no_fingerprint_to_the_next() -> None:
    """The planner caches each event's fingerprint by ``id(event)``; an event freed
    after a ``decide`` can hand its id to a new one (CPython reuses addresses). The
    cache must not give the new event the old one's fingerprint (it did: the CI run
    of the landing test above failed that way)."""
    plan = planner()
    mapping = plan.cfg.mappings["contacts"]
    for n in range(200):
        old = event("crm", "7", contact(f"old{n}@example.com")).event
        plan._source_fp(old, mapping)
        del old
        new = event("crm", "7", contact(f"new{n}@example.com")).event
        assert plan._source_fp(new, mapping) == fingerprint(
            plan._held(new.values, mapping, "crm"))
