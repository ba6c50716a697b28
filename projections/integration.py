"""The integration itself, as an event-sourced aggregate (OPS-05).

Its configuration and lifecycle are decisions people make (set it up,
choose the sync type, switch a legacy import to sync, edit the mapping,
pause, delete), so each is recorded as an event that says who made it; the
event's timestamp says when. The current state is whatever those events
add up to, and the projection's ``SyncConfig`` is derived from it.

The invariants live here, not in the callers: every command checks them
first and only then records its event, so a refused command records
nothing. The ``@event``-decorated methods only apply an event; they also
run when the aggregate is rebuilt from storage, so they hold no checks.

One integration per deployment (SYNC-13): the aggregate id is fixed, so
every replica addresses the same one and a second, different set-up is
refused.

Stored events are named by this module's path and the event class names
(``projections.integration:Integration.Paused``): renaming either needs an
upcaster or a topic alias, or stored integrations stop loading.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from eventsourcing.domain import Aggregate, event

from projections.catalog import SYNCED_MODULES
from projections.config import Direction, SyncConfig
from projections.mapping import MappingError, ModuleMapping, build_mapping
from projections.people import (
    InvalidPeople,
    People,
    checked_departments,
    checked_profile,
    checked_role,
    checked_signals,
    checked_visibility,
    profile_of,
    user_of,
)
from projections.related_lists import DEFAULT_MODULES, in_order, refusal

# Fixed and deterministic: every replica, and every restart, finds the same aggregate.
INTEGRATION_ID = uuid.uuid5(uuid.NAMESPACE_URL, "urn:deskcrm-sync:integration")

Mode = Literal["pending", "import", "sync"]
"""``pending``: set up, sync not enabled yet; ``import``: a legacy one-way
import (SYNC-03); ``sync``: sync enabled, for good (SYNC-02)."""

SYNC_TYPES: dict[str, Direction] = {name: name for name in get_args(Direction)}
_MAX_TEXT = 200


class InvalidCommand(Exception):
    """A command the integration refuses; nothing was recorded.

    ``code`` is stable (for the API and CLI to branch on), ``message`` is
    for people.
    """

    code = "invalid_command"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        """JSON-ready, for the API's error body and the CLI."""
        return {"code": self.code, "message": self.message}


class IntegrationDeleted(InvalidCommand):
    """The integration was deleted; it accepts no further command (OPS-02)."""

    code = "integration_deleted"


class IrreversibleSwitch(InvalidCommand):
    """The command would undo the switch to sync (SYNC-02, SYNC-03)."""

    code = "irreversible_switch"


class AlreadySetUp(InvalidCommand):
    """The deployment is already associated with another portal or organisation (SYNC-13)."""

    code = "already_set_up"


class NotSetUp(InvalidCommand):
    """No integration has been set up yet; only ``set_up`` is possible."""

    code = "not_set_up"


class InvalidMapping(InvalidCommand):
    """A field mapping was refused; the message names the module and the field."""

    code = "invalid_mapping"

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"{module} mapping: {reason}")
        self.module = module


class Integration(Aggregate):
    """One desk portal linked with one CRM organisation, and how they sync."""

    @staticmethod
    def create_id(*_: Any, **__: Any) -> uuid.UUID:
        return INTEGRATION_ID

    @classmethod
    def set_up_new(cls, desk_portal: str, crm_org: str, *, by: str) -> Integration:
        """Set the integration up: the command that creates it."""
        return cls(desk_portal=_text("desk_portal", desk_portal),
                   crm_org=_text("crm_org", crm_org), by=_actor(by))

    @event("SetUp")
    def __init__(self, desk_portal: str, crm_org: str, by: str) -> None:
        self.desk_portal = desk_portal
        self.crm_org = crm_org
        self.mode: Mode = "pending"
        self.direction: Direction = "two_way"
        # Normalised entries per module; a module absent here uses the standard mapping.
        self.mappings: dict[str, list[dict[str, str]]] = {}
        self.match_secondary_email = False
        self.products_department_id: int | None = None
        self.custom_views: list[str] = []
        # Aggregates set up before this setting existed get the default on replay too.
        self.related_list_modules: list[str] = list(DEFAULT_MODULES)
        # The people (projections.people), as stored JSON: CRM users by id, desk
        # profiles by name, and the CRM users' ticket visibility (TICKET-08).
        self.crm_users: dict[str, dict[str, Any]] = {}
        self.desk_profiles: dict[str, dict[str, Any]] = {}
        self.ticket_visibility = "all"
        self.paused = False
        self.deleted = False
        self.changed_by = by

    # -- commands ------------------------------------------------------------

    def set_up(self, desk_portal: str, crm_org: str, *, by: str) -> None:
        """Repeat the set-up: the same portal and organisation change nothing (SYNC-13)."""
        self._check_live()
        portal, org, _ = _text("desk_portal", desk_portal), _text("crm_org", crm_org), _actor(by)
        if (portal, org) != (self.desk_portal, self.crm_org):
            raise AlreadySetUp(
                f"this deployment already links desk portal {self.desk_portal!r} with CRM "
                f"organisation {self.crm_org!r}; one portal per organisation (SYNC-13)")

    def choose_sync_type(self, sync_type: str, *, by: str) -> None:
        """Two-way or one-way CRM → desk (SYNC-02); the first choice enables sync."""
        self._check_live()
        actor = _actor(by)
        direction = SYNC_TYPES.get(sync_type) if isinstance(sync_type, str) else None
        if direction is None:
            raise InvalidCommand(f"sync type must be one of {list(SYNC_TYPES)}, not {sync_type!r}",
                                 code="invalid_value")
        if self.mode == "import":
            raise InvalidCommand(
                "a legacy one-way import must switch to sync before its sync type is chosen",
                code="legacy_import")
        if self.mode == "sync" and direction == self.direction:
            return
        self._sync_type_chosen(sync_type=direction, by=actor)

    def start_legacy_import(self, *, by: str) -> None:
        """Mark the integration as a legacy one-way import (CRM → desk, custom views)."""
        self._check_live()
        actor = _actor(by)
        if self.mode == "sync":
            raise IrreversibleSwitch(
                "sync is enabled; it can only be paused, not turned back into an import",
                code="sync_enabled")
        if self.mode == "import":
            return
        self._legacy_import_started(by=actor)

    def switch_to_sync(self, *, by: str) -> None:
        """Switch a legacy import to sync (SYNC-03); there is no way back."""
        self._check_live()
        actor = _actor(by)
        if self.mode == "sync":
            return
        if self.mode == "pending":
            raise InvalidCommand(
                "only a legacy one-way import switches to sync; choose a sync type instead",
                code="not_legacy_import")
        self._switched_to_sync(by=actor)

    def import_custom_view(self, view: str, *, by: str) -> None:
        """Import a CRM custom view: only a legacy import does that (SYNC-03)."""
        self._check_live()
        name, actor = _text("view", view), _actor(by)
        if self.mode == "sync":
            raise IrreversibleSwitch(
                "custom-view imports ended when the integration switched to sync",
                code="custom_view_import_closed")
        if self.mode == "pending":
            raise InvalidCommand("only a legacy one-way import imports custom views",
                                 code="not_legacy_import")
        self._custom_view_imported(view=name, by=actor)

    def change_field_mapping(self, module: str, entries: list[dict[str, Any]] | None, *,
                             by: str) -> None:
        """Replace a module's mapping (SYNC-04); ``None`` restores the standard one."""
        self._check_live()
        actor = _actor(by)
        if entries is not None and not isinstance(entries, list):
            raise InvalidMapping(str(module), "entries must be a list of objects")
        try:
            mapping = build_mapping(module, entries)
        except MappingError as err:
            raise InvalidMapping(str(module), str(err)) from None
        normalised = _entries(mapping)
        if normalised == self._entries_of(module):
            return
        self._field_mapping_changed(module=module, entries=normalised, by=actor)

    def change_matching_options(self, match_secondary_email: bool, *, by: str) -> None:
        """Whether contacts also match on the secondary e-mail (SYNC-06)."""
        self._check_live()
        actor = _actor(by)
        if not isinstance(match_secondary_email, bool):
            raise InvalidCommand("match_secondary_email must be true or false",
                                 code="invalid_value")
        if match_secondary_email == self.match_secondary_email:
            return
        self._matching_options_changed(match_secondary_email=match_secondary_email, by=actor)

    def choose_products_department(self, department_id: int, *, by: str) -> None:
        """The desk department products sync with (SYNC-12)."""
        self._check_live()
        actor = _actor(by)
        if (not isinstance(department_id, int) or isinstance(department_id, bool)
                or department_id <= 0):
            raise InvalidCommand(
                f"department_id must be a positive integer, not {department_id!r}",
                code="invalid_value")
        if department_id == self.products_department_id:
            return
        self._products_department_chosen(department_id=department_id, by=actor)

    def choose_related_list_modules(self, modules: list[str], *, by: str) -> None:
        """The CRM modules whose records list their desk tickets (TICKET-01); a module
        without an e-mail field is refused with the reason."""
        self._check_live()
        actor = _actor(by)
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise InvalidCommand("modules must be a list of CRM module names",
                                 code="invalid_value")
        names = {m.strip().lower() for m in modules}
        for name in sorted(names):
            problem = refusal(name)
            if problem is not None:
                raise InvalidCommand(problem, code="no_email_field")
        chosen = in_order(names)
        if chosen == self.related_list_modules:
            return
        self._related_list_modules_chosen(modules=chosen, by=actor)

    # -- people (OPS-06, TICKET-04, TICKET-08, TICKET-09, PERM-01 … PERM-04) ---------

    def record_crm_user(self, user_id: str, name: str, email: str, *, mutual: bool,
                        by: str) -> None:
        """A CRM user the integration knows (from the CRM's users); ``mutual``: the user
        is in the desk too already, so has an active desk account without an invitation.
        Recording a known user again changes only what differs."""
        self._check_live()
        actor = _actor(by)
        user, name, email = _text("user_id", user_id), _text("name", name), _text("email", email)
        if "@" not in email:
            raise InvalidCommand(f"email {email!r} is not an e-mail address",
                                 code="invalid_value")
        if not isinstance(mutual, bool):
            raise InvalidCommand("mutual must be true or false", code="invalid_value")
        known = self.crm_users.get(user)
        if known is not None and (known["name"], known["email"], known["mutual"]) == (
                name, email, mutual):
            return
        self._crm_user_recorded(user_id=user, name=name, email=email, mutual=mutual,
                                by=actor)

    def invite_user(self, user_id: str, role: str, *, by: str) -> None:
        """Invite a CRM user to the desk with a role (OPS-06), or change the role. Until
        the invitation is accepted (``set_desk_account``) the user may only comment
        (TICKET-04); a mutual user's account is active already."""
        self._check_live()
        actor = _actor(by)
        known = self._user(user_id)
        chosen = _people(checked_role, role)
        if known.get("role") != chosen:
            self._user_invited(user_id=user_id, role=chosen, by=actor)

    def set_desk_account(self, user_id: str, active: bool, *, by: str) -> None:
        """The user's desk account is active (an invitation accepted) or not
        (deactivated): without one, a user may only comment (TICKET-04)."""
        self._check_live()
        actor = _actor(by)
        known = self._user(user_id)
        if not isinstance(active, bool):
            raise InvalidCommand("active must be true or false", code="invalid_value")
        if active and known.get("role") is None and not known.get("mutual"):
            raise InvalidCommand(f"CRM user {user_id} was not invited to the desk: invite"
                                 " the user with a role first", code="not_invited")
        if bool(known.get("desk_active")) != active:
            self._desk_account_set(user_id=user_id, active=active, by=actor)

    def set_user_departments(self, user_id: str, departments: list[str], *, by: str
                             ) -> None:
        """The desk departments the user belongs to (TICKET-08)."""
        self._check_live()
        actor = _actor(by)
        known = self._user(user_id)
        chosen = _people(checked_departments, departments)
        if known.get("departments", []) != chosen:
            self._user_departments_set(user_id=user_id, departments=chosen, by=actor)

    def choose_user_signals(self, user_id: str, signals: list[str], *, by: str) -> None:
        """The sales signals the user enabled (TICKET-09)."""
        self._check_live()
        actor = _actor(by)
        known = self._user(user_id)
        chosen = _people(checked_signals, signals)
        if known.get("signals") != chosen:
            self._user_signals_chosen(user_id=user_id, signals=chosen, by=actor)

    def choose_ticket_visibility(self, visibility: str, *, by: str) -> None:
        """CRM users see every department's tickets, or only their departments'
        (TICKET-08)."""
        self._check_live()
        actor = _actor(by)
        chosen = _people(checked_visibility, visibility)
        if chosen != self.ticket_visibility:
            self._ticket_visibility_chosen(visibility=chosen, by=actor)

    def set_profile(self, name: str, *, visible: bool, shows: str,
                    access: dict[str, str], configures: bool, by: str) -> None:
        """Define or change a desk profile's view of the CRM (PERM-01 … PERM-04)."""
        self._check_live()
        actor = _actor(by)
        profile = _text("name", name)
        stored = _people(checked_profile, visible, shows, access, configures)
        if self.desk_profiles.get(profile) != stored:
            self._profile_set(name=profile, profile=stored, by=actor)

    def remove_profile(self, name: str, *, by: str) -> None:
        self._check_live()
        actor = _actor(by)
        if name not in self.desk_profiles:
            raise InvalidCommand(f"no desk profile {name!r}", code="unknown_profile")
        self._profile_removed(name=name, by=actor)

    def record_refusal(self, user_id: str, action: str, target: str, missing: str, *,
                       by: str) -> None:
        """An action a CRM user's role does not allow, refused and recorded in the audit
        trail (TICKET-04): nothing else changes."""
        self._check_live()
        self._action_refused(user_id=_text("user_id", user_id), action=_text("action", action),
                             target=_text("target", target), missing=_text("missing", missing),
                             by=_actor(by))

    def people(self) -> People:
        return People(
            users={uid: user_of(uid, stored) for uid, stored in self.crm_users.items()},
            profiles={name: profile_of(name, stored)
                      for name, stored in self.desk_profiles.items()},
            visibility=checked_visibility(self.ticket_visibility))

    def _user(self, user_id: object) -> dict[str, Any]:
        known = self.crm_users.get(user_id) if isinstance(user_id, str) else None
        if known is None:
            raise InvalidCommand(f"no CRM user {user_id!r}: record the user first",
                                 code="unknown_user")
        return known

    def pause(self, *, by: str) -> None:
        """Stop exchanging changes; they wait, and are applied on resume (OPS-01)."""
        self._check_live()
        actor = _actor(by)
        if not self.paused:
            self._paused(by=actor)

    def resume(self, *, by: str) -> None:
        self._check_live()
        actor = _actor(by)
        if self.paused:
            self._resumed(by=actor)

    def delete(self, *, by: str) -> None:
        """Delete the integration: sync stops for good (OPS-02)."""
        self._check_live()
        self._deleted(by=_actor(by))

    # -- what the state means ------------------------------------------------

    @property
    def sync_enabled(self) -> bool:
        return self.mode == "sync" and not self.deleted

    def to_sync_config(self) -> SyncConfig:
        """The configuration the sync projection reads.

        Changes wait (``paused``) not only while an operator paused sync, but
        also while sync is not enabled yet (``pending``, or a legacy import):
        they are applied once it is.
        """
        return SyncConfig(
            direction=self.direction,
            mappings={module: build_mapping(module, self.mappings.get(module))
                      for module in SYNCED_MODULES},
            match_secondary_email=self.match_secondary_email,
            products_department_id=self.products_department_id,
            paused=self.paused or self.mode != "sync",
            active=not self.deleted,
            enabled=self.mode == "sync",
        )

    def _check_live(self) -> None:
        if self.deleted:
            raise IntegrationDeleted("the integration was deleted; it accepts no command")

    def _entries_of(self, module: str) -> list[dict[str, str]]:
        stored = self.mappings.get(module)
        return stored if stored is not None else _entries(build_mapping(module))

    # -- events: applied on record and on replay, so no checks here ----------

    @event("SyncTypeChosen")
    def _sync_type_chosen(self, sync_type: Direction, by: str) -> None:
        self.mode = "sync"
        self.direction = sync_type
        self.changed_by = by

    @event("LegacyImportStarted")
    def _legacy_import_started(self, by: str) -> None:
        self.mode = "import"
        self.direction = "crm_to_desk"  # an import only ever brought CRM records to the desk
        self.changed_by = by

    @event("SwitchedToSync")
    def _switched_to_sync(self, by: str) -> None:
        self.mode = "sync"  # the direction stays one-way until a sync type is chosen
        self.changed_by = by

    @event("CustomViewImported")
    def _custom_view_imported(self, view: str, by: str) -> None:
        self.custom_views.append(view)
        self.changed_by = by

    @event("FieldMappingChanged")
    def _field_mapping_changed(self, module: str, entries: list[dict[str, str]],
                               by: str) -> None:
        self.mappings[module] = entries
        self.changed_by = by

    @event("MatchingOptionsChanged")
    def _matching_options_changed(self, match_secondary_email: bool, by: str) -> None:
        self.match_secondary_email = match_secondary_email
        self.changed_by = by

    @event("ProductsDepartmentChosen")
    def _products_department_chosen(self, department_id: int, by: str) -> None:
        self.products_department_id = department_id
        self.changed_by = by

    @event("RelatedListModulesChosen")
    def _related_list_modules_chosen(self, modules: list[str], by: str) -> None:
        self.related_list_modules = modules
        self.changed_by = by

    @event("CrmUserRecorded")
    def _crm_user_recorded(self, user_id: str, name: str, email: str, mutual: bool,
                           by: str) -> None:
        known = self.crm_users.setdefault(user_id, {"role": None, "desk_active": False,
                                                    "departments": []})
        known.update(name=name, email=email, mutual=mutual)
        if mutual:
            known["desk_active"] = True
        self.changed_by = by

    @event("UserInvited")
    def _user_invited(self, user_id: str, role: str, by: str) -> None:
        self.crm_users[user_id]["role"] = role
        self.changed_by = by

    @event("DeskAccountSet")
    def _desk_account_set(self, user_id: str, active: bool, by: str) -> None:
        self.crm_users[user_id]["desk_active"] = active
        self.changed_by = by

    @event("UserDepartmentsSet")
    def _user_departments_set(self, user_id: str, departments: list[str], by: str) -> None:
        self.crm_users[user_id]["departments"] = departments
        self.changed_by = by

    @event("UserSignalsChosen")
    def _user_signals_chosen(self, user_id: str, signals: list[str], by: str) -> None:
        self.crm_users[user_id]["signals"] = signals
        self.changed_by = by

    @event("TicketVisibilityChosen")
    def _ticket_visibility_chosen(self, visibility: str, by: str) -> None:
        self.ticket_visibility = visibility
        self.changed_by = by

    @event("ProfileSet")
    def _profile_set(self, name: str, profile: dict[str, Any], by: str) -> None:
        self.desk_profiles[name] = profile
        self.changed_by = by

    @event("ProfileRemoved")
    def _profile_removed(self, name: str, by: str) -> None:
        del self.desk_profiles[name]
        self.changed_by = by

    @event("ActionRefused")
    def _action_refused(self, user_id: str, action: str, target: str, missing: str,
                        by: str) -> None:
        """Only for the audit trail: a refusal changes no state."""

    @event("Paused")
    def _paused(self, by: str) -> None:
        self.paused = True
        self.changed_by = by

    @event("Resumed")
    def _resumed(self, by: str) -> None:
        self.paused = False
        self.changed_by = by

    @event("Deleted")
    def _deleted(self, by: str) -> None:
        self.deleted = True
        self.changed_by = by


# -- the audit trail ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change: when, who, what (snake_case event name), and its values."""

    when: datetime
    who: str
    what: str
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the API and the CLI."""
        return {"when": self.when.isoformat(), "who": self.who, "what": self.what,
                "details": self.details}


_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic",
                       "timestamp", "by"})
_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def audit_entry(recorded: object) -> AuditEntry:
    """Describe one of the integration's events for people (API, CLI)."""
    values = dict(vars(recorded))
    details = {key: value for key, value in values.items() if key not in _ENVELOPE}
    return AuditEntry(when=values["timestamp"], who=values["by"],
                      what=_WORD_START.sub("_", type(recorded).__name__).lower(),
                      details=details)


# -- input checks ------------------------------------------------------------

def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(f"{name} must be non-empty text", code="invalid_value")
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise InvalidCommand(f"{name} is longer than {_MAX_TEXT} characters",
                             code="invalid_value")
    return text


def _people(check: Any, *values: object) -> Any:
    """A ``projections.people`` check, its refusal as the integration's."""
    try:
        return check(*values)
    except InvalidPeople as err:
        raise InvalidCommand(str(err), code="invalid_value") from None


def _actor(by: object) -> str:
    """Every change names who made it."""
    if not isinstance(by, str) or not by.strip():
        raise InvalidCommand("every change needs who made it ('by')", code="missing_actor")
    return _text("by", by)


def _entries(mapping: ModuleMapping) -> list[dict[str, str]]:
    """A mapping as plain, JSON-ready entries that ``build_mapping`` rebuilds unchanged."""
    entries = []
    for pair in mapping.pairs:
        entry = {"desk": pair.desk_field.name, "crm": pair.crm_field.name}
        if pair.desk_field.name.startswith("custom."):
            entry["desk_type"] = pair.desk_field.type
        if pair.crm_field.name.startswith("custom."):
            entry["crm_type"] = pair.crm_field.type
        entries.append(entry)
    return entries
