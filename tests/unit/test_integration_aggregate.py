"""The integration aggregate (OPS-05): its commands, invariants, audit trail and config.

Pure: the application runs on eventsourcing's in-memory persistence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from projections.config import NOT_SET_UP, SyncConfig
from projections.integration import (
    INTEGRATION_ID,
    AlreadySetUp,
    Integration,
    IntegrationDeleted,
    InvalidCommand,
    InvalidMapping,
    IrreversibleSwitch,
    NotSetUp,
)
from projections.integration_app import IntegrationApplication, in_memory
from projections.mapping import build_mapping


@pytest.fixture
def app() -> IntegrationApplication:
    return in_memory()


@pytest.fixture
def live(app: IntegrationApplication) -> IntegrationApplication:
    """An application whose integration is set up and syncing two-way."""
    app.set_up("portal-1", "org-1", by="admin")
    app.choose_sync_type("two_way", by="admin")
    return app


def whats(app: IntegrationApplication) -> list[str]:
    return [entry.what for entry in app.audit()]


# -- set-up (SYNC-13) --------------------------------------------------------

def test_set_up_creates_the_one_integration(app: IntegrationApplication) -> None:
    """Set-up creates the integration under the fixed id, pending until sync is enabled."""
    integration = app.set_up(" portal-1 ", "org-1", by="alice")
    assert integration.id == INTEGRATION_ID
    assert (integration.desk_portal, integration.crm_org) == ("portal-1", "org-1")
    assert integration.mode == "pending"
    assert not integration.sync_enabled
    assert app.current() == integration


def test_every_replica_addresses_the_same_integration() -> None:
    """Two applications (two replicas) set up the integration under the same id."""
    first = in_memory().set_up("p", "o", by="a")
    second = in_memory().set_up("p", "o", by="b")
    assert first.id == second.id == INTEGRATION_ID


def test_repeated_identical_set_up_records_nothing(app: IntegrationApplication) -> None:
    """The same portal and organisation again is a no-op, not a second set-up."""
    app.set_up("portal-1", "org-1", by="alice")
    app.set_up("portal-1", "org-1", by="bob")
    assert whats(app) == ["set_up"]


@pytest.mark.parametrize(("portal", "org"), [("portal-2", "org-1"), ("portal-1", "org-2")])
def test_second_portal_or_organisation_is_refused(app: IntegrationApplication, portal: str,
                                                  org: str) -> None:
    """One desk portal per CRM organisation: a different second set-up is refused (SYNC-13)."""
    app.set_up("portal-1", "org-1", by="alice")
    with pytest.raises(AlreadySetUp) as refused:
        app.set_up(portal, org, by="bob")
    assert refused.value.code == "already_set_up"
    assert "portal-1" in refused.value.message
    assert whats(app) == ["set_up"]


@pytest.mark.parametrize(("portal", "org", "by", "code"), [
    ("", "org", "alice", "invalid_value"),
    ("portal", "   ", "alice", "invalid_value"),
    ("portal", "org", "", "missing_actor"),
    ("x" * 201, "org", "alice", "invalid_value"),
])
def test_set_up_validates_its_input(app: IntegrationApplication, portal: str, org: str,
                                    by: str, code: str) -> None:
    """Set-up needs a portal, an organisation and who did it; nothing is recorded otherwise."""
    with pytest.raises(InvalidCommand) as refused:
        app.set_up(portal, org, by=by)
    assert refused.value.code == code
    assert app.current() is None


def test_commands_before_set_up_are_refused(app: IntegrationApplication) -> None:
    """Before set-up only set_up is possible."""
    with pytest.raises(NotSetUp) as refused:
        app.pause(by="alice")
    assert refused.value.code == "not_set_up"
    assert app.current() is None


def test_every_change_names_who_made_it(live: IntegrationApplication) -> None:
    """A command without 'by' is refused with its own code."""
    with pytest.raises(InvalidCommand) as refused:
        live.pause(by=" ")
    assert refused.value.code == "missing_actor"
    assert "pause" not in whats(live)


# -- sync type and the switch from a legacy import (SYNC-02, SYNC-03) --------

def test_choosing_the_sync_type_enables_sync(app: IntegrationApplication) -> None:
    """The first sync type chosen turns sync on in that direction."""
    app.set_up("p", "o", by="alice")
    integration = app.choose_sync_type("crm_to_desk", by="bob")
    assert integration.mode == "sync"
    assert integration.direction == "crm_to_desk"
    assert integration.to_sync_config().direction == "crm_to_desk"


def test_sync_type_can_change_between_the_two_sync_types(live: IntegrationApplication) -> None:
    """Once syncing, the sync type may change; choosing the current one records nothing."""
    live.choose_sync_type("two_way", by="alice")
    live.choose_sync_type("crm_to_desk", by="alice")
    assert whats(live) == ["set_up", "sync_type_chosen", "sync_type_chosen"]
    assert live.current_config().direction == "crm_to_desk"


def test_unknown_sync_type_is_refused(live: IntegrationApplication) -> None:
    """Only two_way and crm_to_desk exist."""
    with pytest.raises(InvalidCommand) as refused:
        live.choose_sync_type("desk_to_crm", by="alice")
    assert refused.value.code == "invalid_value"


def test_sync_cannot_be_turned_back_into_an_import(live: IntegrationApplication) -> None:
    """Once sync is enabled it can only be paused, never made an import again (SYNC-02)."""
    with pytest.raises(IrreversibleSwitch) as refused:
        live.start_legacy_import(by="alice")
    assert refused.value.code == "sync_enabled"
    integration = live.current()
    assert integration is not None and integration.mode == "sync"


def test_legacy_import_switches_to_sync_for_good(app: IntegrationApplication) -> None:
    """A legacy import imports custom views until it switches to sync; then never again."""
    app.set_up("p", "o", by="alice")
    imported = app.start_legacy_import(by="alice")
    assert (imported.mode, imported.direction) == ("import", "crm_to_desk")
    app.import_custom_view("Hot leads", by="alice")

    switched = app.switch_to_sync(by="bob")
    assert switched.mode == "sync"
    assert switched.direction == "crm_to_desk"
    assert switched.custom_views == ["Hot leads"]
    with pytest.raises(IrreversibleSwitch) as refused_view:
        app.import_custom_view("Cold leads", by="carol")
    assert refused_view.value.code == "custom_view_import_closed"
    with pytest.raises(IrreversibleSwitch):
        app.start_legacy_import(by="carol")
    assert whats(app) == ["set_up", "legacy_import_started", "custom_view_imported",
                          "switched_to_sync"]


def test_legacy_import_must_switch_before_choosing_a_sync_type(
        app: IntegrationApplication) -> None:
    """A legacy import has no sync type until it has switched to sync."""
    app.set_up("p", "o", by="alice")
    app.start_legacy_import(by="alice")
    with pytest.raises(InvalidCommand) as refused:
        app.choose_sync_type("two_way", by="alice")
    assert refused.value.code == "legacy_import"
    app.switch_to_sync(by="alice")
    assert app.choose_sync_type("two_way", by="alice").direction == "two_way"


def test_only_a_legacy_import_switches_or_imports_views(app: IntegrationApplication) -> None:
    """A new integration neither switches to sync nor imports custom views."""
    app.set_up("p", "o", by="alice")
    commands: list[Callable[[], object]] = [lambda: app.switch_to_sync(by="alice"),
                                            lambda: app.import_custom_view("v", by="alice")]
    for command in commands:
        with pytest.raises(InvalidCommand) as refused:
            command()
        assert refused.value.code == "not_legacy_import"
    assert whats(app) == ["set_up"]


# -- field mapping and matching (SYNC-04, SYNC-06, SYNC-12) ------------------

CUSTOM = [{"desk": "email", "crm": "email"},
          {"desk": "custom.tier", "desk_type": "integer", "crm": "custom.level",
           "crm_type": "integer"}]


def test_field_mapping_change_is_recorded_normalised(live: IntegrationApplication) -> None:
    """A mapping is stored as validated entries (secondary e-mail added) and configures sync."""
    live.change_field_mapping("contacts", CUSTOM, by="carol")
    entry = live.audit()[-1]
    assert (entry.who, entry.what) == ("carol", "field_mapping_changed")
    assert entry.details == {"module": "contacts", "entries": [
        {"desk": "email", "crm": "email"},
        {"desk": "custom.tier", "crm": "custom.level", "desk_type": "integer",
         "crm_type": "integer"},
        {"desk": "secondary_email", "crm": "secondary_email"},
    ]}
    config = live.current_config()
    assert config.mappings["contacts"] == build_mapping("contacts", CUSTOM)
    assert config.mappings["accounts"] == build_mapping("accounts")


def test_restoring_the_standard_mapping(live: IntegrationApplication) -> None:
    """None restores the standard mapping; the mapping in force again records nothing."""
    live.change_field_mapping("contacts", None, by="carol")
    assert "field_mapping_changed" not in whats(live)
    live.change_field_mapping("contacts", CUSTOM, by="carol")
    live.change_field_mapping("contacts", CUSTOM, by="carol")
    live.change_field_mapping("contacts", None, by="dave")
    assert whats(live).count("field_mapping_changed") == 2
    assert live.current_config().mappings["contacts"] == build_mapping("contacts")


@pytest.mark.parametrize(("module", "entries", "named"), [
    ("contacts", [{"desk": "nickname", "crm": "email"}], "nickname"),
    ("contacts", [{"desk": "custom.tier", "crm": "custom.level"}], "custom.tier"),
    ("accounts", [{"desk": "website", "crm": "custom.size", "crm_type": "integer"}], "website"),
    ("contacts", [{"desk": "email", "crm": "email"}, {"desk": "email", "crm": "phone"}],
     "email"),
    ("deals", [], "deals"),
    ("contacts", "email=email", "list"),
])
def test_invalid_mapping_is_refused_naming_the_field(live: IntegrationApplication, module: str,
                                                     entries: Any, named: str) -> None:
    """A mapping build_mapping rejects is refused with the module and field named; nothing is
    recorded."""
    before = live.audit()
    with pytest.raises(InvalidMapping) as refused:
        live.change_field_mapping(module, entries, by="carol")
    assert refused.value.code == "invalid_mapping"
    assert refused.value.message.startswith(f"{module} mapping: ")
    assert named in refused.value.message
    assert live.audit() == before


def test_matching_on_secondary_email(live: IntegrationApplication) -> None:
    """The secondary-e-mail option reaches the config; the same value again records nothing."""
    live.change_matching_options(True, by="dave")
    live.change_matching_options(True, by="dave")
    assert live.current_config().match_secondary_email is True
    assert whats(live).count("matching_options_changed") == 1
    with pytest.raises(InvalidCommand) as refused:
        live.change_matching_options("yes", by="dave")  # type: ignore[arg-type]
    assert refused.value.code == "invalid_value"


@pytest.mark.parametrize("department", [0, -3, True, "7", 2.5])
def test_products_department_must_be_a_positive_integer(live: IntegrationApplication,
                                                        department: Any) -> None:
    """A department id is a positive integer (and not a boolean)."""
    with pytest.raises(InvalidCommand) as refused:
        live.choose_products_department(department, by="erin")
    assert refused.value.code == "invalid_value"


def test_products_department_is_chosen(live: IntegrationApplication) -> None:
    """Products sync with the chosen desk department (SYNC-12)."""
    live.choose_products_department(7, by="erin")
    assert live.current_config().products_department_id == 7
    assert live.audit()[-1].details == {"department_id": 7}


def test_related_lists_show_on_accounts_contacts_and_deals_by_default(
        live: IntegrationApplication) -> None:
    """TICKET-01: the sources pre-map Accounts, Contacts and Deals."""
    integration = live.current()
    assert integration is not None
    assert integration.related_list_modules == ["contacts", "accounts", "deals"]


def test_related_list_modules_are_chosen_in_one_order(live: IntegrationApplication) -> None:
    """Names are trimmed and lower-cased; the same choice records nothing again."""
    live.choose_related_list_modules(["Deals", " leads ", "contacts"], by="erin")
    integration = live.current()
    assert integration is not None
    assert integration.related_list_modules == ["contacts", "leads", "deals"]
    assert live.audit()[-1].what == "related_list_modules_chosen"
    assert live.audit()[-1].details == {"modules": ["contacts", "leads", "deals"]}
    position = live.position()
    live.choose_related_list_modules(["deals", "leads", "contacts"], by="erin")
    assert live.position() == position


@pytest.mark.parametrize(("modules", "code", "reason"), [
    (["contacts", "products"], "no_email_field",
     "products has no e-mail field: only a module with one can list tickets (TICKET-01)"),
    (["calls"], "no_email_field", "calls has no e-mail field"),
    (["vendors"], "no_email_field", "'vendors' is not a CRM module"),
    ("contacts", "invalid_value", "modules must be a list of CRM module names"),
])
def test_a_module_without_an_email_field_is_refused_with_the_reason(
        live: IntegrationApplication, modules: Any, code: str, reason: str) -> None:
    position = live.position()
    with pytest.raises(InvalidCommand) as refused:
        live.choose_related_list_modules(modules, by="erin")
    assert refused.value.code == code and reason in refused.value.message
    assert live.position() == position


# -- pause, resume, delete (OPS-01, OPS-02) ----------------------------------

def test_pause_and_resume(live: IntegrationApplication) -> None:
    """Pause and resume toggle the config; repeating either records nothing."""
    live.pause(by="frank")
    live.pause(by="frank")
    assert live.current_config().paused is True
    live.resume(by="grace")
    live.resume(by="grace")
    assert live.current_config().paused is False
    assert whats(live)[-2:] == ["paused", "resumed"]
    assert whats(live).count("paused") == 1


def test_deleted_integration_stops_sync(live: IntegrationApplication) -> None:
    """Deleting makes the config inactive (OPS-02)."""
    deleted = live.delete(by="heidi")
    assert deleted.deleted and not deleted.sync_enabled
    assert live.current_config().active is False


COMMANDS: dict[str, Callable[[IntegrationApplication], object]] = {
    "set_up": lambda a: a.set_up("portal-1", "org-1", by="x"),
    "choose_sync_type": lambda a: a.choose_sync_type("crm_to_desk", by="x"),
    "start_legacy_import": lambda a: a.start_legacy_import(by="x"),
    "switch_to_sync": lambda a: a.switch_to_sync(by="x"),
    "import_custom_view": lambda a: a.import_custom_view("v", by="x"),
    "change_field_mapping": lambda a: a.change_field_mapping("contacts", CUSTOM, by="x"),
    "change_matching_options": lambda a: a.change_matching_options(True, by="x"),
    "choose_products_department": lambda a: a.choose_products_department(3, by="x"),
    "choose_related_list_modules": lambda a: a.choose_related_list_modules(["leads"], by="x"),
    "pause": lambda a: a.pause(by="x"),
    "resume": lambda a: a.resume(by="x"),
    "delete": lambda a: a.delete(by="x"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_deleted_integration_accepts_no_command(live: IntegrationApplication,
                                                command: str) -> None:
    """After delete, every command is refused with IntegrationDeleted and records nothing."""
    live.delete(by="heidi")
    before = live.audit()
    with pytest.raises(IntegrationDeleted) as refused:
        COMMANDS[command](live)
    assert refused.value.code == "integration_deleted"
    assert live.audit() == before


# -- config --------------------------------------------------------------------

def test_config_before_set_up_applies_nothing(app: IntegrationApplication) -> None:
    """With no integration yet nothing is applied: changes wait until an administrator
    sets it up and enables sync (issue 15: the first sync follows the integration)."""
    config = app.current_config()
    assert config == NOT_SET_UP
    assert config.paused and not config.enabled and config.state == "not_set_up"
    assert "not set up" in str(config.waiting_for)


def test_config_waits_until_sync_is_enabled(app: IntegrationApplication) -> None:
    """Set up but not yet syncing (or a legacy import), changes wait: the config is paused."""
    app.set_up("p", "o", by="alice")
    assert app.current_config().paused is True
    assert app.current_config().state == "sync_not_enabled"
    app.start_legacy_import(by="alice")
    assert app.current_config().paused is True
    assert app.current_config().enabled is False
    app.switch_to_sync(by="alice")
    assert app.current_config().paused is False
    assert app.current_config().state == "running"


def test_config_carries_every_setting(live: IntegrationApplication) -> None:
    """to_sync_config carries direction, mappings, matching, department, paused and active."""
    live.choose_sync_type("crm_to_desk", by="a")
    live.change_field_mapping("contacts", CUSTOM, by="a")
    live.change_matching_options(True, by="a")
    live.choose_products_department(9, by="a")
    live.pause(by="a")
    assert live.current_config() == SyncConfig(
        direction="crm_to_desk",
        mappings={"contacts": build_mapping("contacts", CUSTOM),
                  "accounts": build_mapping("accounts"),
                  "products": build_mapping("products")},
        match_secondary_email=True, products_department_id=9, paused=True, active=True)


# -- the audit trail and followers -------------------------------------------

def test_audit_trail_says_who_did_what_and_when(app: IntegrationApplication) -> None:
    """Each change is one audit entry, in order, with who, what, when and its values."""
    app.set_up("portal-1", "org-1", by="alice")
    app.choose_sync_type("two_way", by="bob")
    app.pause(by="carol")
    trail = app.audit()
    assert [(e.who, e.what, e.details) for e in trail] == [
        ("alice", "set_up", {"desk_portal": "portal-1", "crm_org": "org-1"}),
        ("bob", "sync_type_chosen", {"sync_type": "two_way"}),
        ("carol", "paused", {}),
    ]
    assert all(e.when.utcoffset() == timedelta(0) for e in trail)
    assert [e.when for e in trail] == sorted(e.when for e in trail)
    integration = app.current()
    assert integration is not None and integration.changed_by == "carol"


def test_audit_entries_and_refusals_are_json_ready(live: IntegrationApplication) -> None:
    """Audit entries and refusals serialise to plain JSON for the API and CLI."""
    live.choose_products_department(4, by="erin")
    entry = live.audit()[-1]
    body = json.loads(json.dumps(entry.as_dict()))
    assert body == {"when": entry.when.isoformat(), "who": "erin",
                    "what": "products_department_chosen", "details": {"department_id": 4}}
    with pytest.raises(InvalidCommand) as refused:
        live.start_legacy_import(by="erin")
    assert refused.value.as_dict() == {"code": "sync_enabled",
                                       "message": refused.value.message}


def test_followers_read_changes_after_a_position(live: IntegrationApplication) -> None:
    """changes_after returns the events after a notification id, oldest first."""
    start = live.position()
    live.pause(by="a")
    live.resume(by="b")
    changes = live.changes_after(start)
    assert [(c.notification_id, c.entry.what, c.entry.who) for c in changes] == [
        (start + 1, "paused", "a"), (start + 2, "resumed", "b")]
    assert live.changes_after(live.position()) == []
    assert in_memory().position() == 0


def test_rebuilt_integration_equals_the_live_one(live: IntegrationApplication) -> None:
    """Replaying the stored events gives exactly the state the commands produced."""
    live.change_field_mapping("accounts", None, by="a")
    live.change_matching_options(True, by="a")
    live.choose_related_list_modules(["contacts"], by="a")
    live.pause(by="a")
    integration = live.pause(by="a")
    assert live.current() == integration


# -- races between replicas --------------------------------------------------

class RacingApplication(IntegrationApplication):
    """Lets another replica's command land between this one's load and its save."""

    def __init__(self) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.rival: Callable[[IntegrationApplication], object] | None = None

    def current(self) -> Integration | None:
        loaded = super().current()
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival(self)
        return loaded


def test_command_racing_a_delete_is_judged_on_the_winners_state() -> None:
    """A pause whose load went stale because another replica deleted is re-checked, refused."""
    app = RacingApplication()
    app.set_up("p", "o", by="alice")
    app.rival = lambda other: other.delete(by="rival")
    with pytest.raises(IntegrationDeleted):
        app.pause(by="alice")
    assert whats(app) == ["set_up", "deleted"]


def test_simultaneous_set_up_by_two_replicas() -> None:
    """Two replicas setting up at once: one creates, the other's different set-up is refused."""
    app = RacingApplication()
    app.rival = lambda other: other.set_up("portal-1", "org-1", by="rival")
    with pytest.raises(AlreadySetUp):
        app.set_up("portal-2", "org-2", by="alice")
    assert [(e.who, e.what) for e in app.audit()] == [("rival", "set_up")]
