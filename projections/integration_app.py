"""The integration's application service: commands in, events stored, audit out.

Synchronous, like the ``eventsourcing`` library under it: the daemon calls
it through ``asyncio.to_thread`` (``adapters.integration_store``), never on
the per-record path. Persistence comes from the environment it is built
with: in-memory (POPO) by default, PostgreSQL in the daemon.

Replicas share the one aggregate. Two commands racing from two replicas
both load version N and both try to store N+1; the store takes one and
refuses the other (a record conflict), which is reloaded and re-checked
against the winner's state, so an invariant is never judged on stale state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import Environment, EnvType

from projections.config import NOT_SET_UP, SyncConfig
from projections.integration import (
    INTEGRATION_ID,
    AuditEntry,
    Integration,
    InvalidCommand,
    NotSetUp,
    audit_entry,
)
from projections.people import People

_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Change:
    """An event of the integration at its position in the notification log."""

    notification_id: int
    entry: AuditEntry


PeopleCommand = Literal["record_crm_user", "invite_user", "set_desk_account",
                        "set_user_departments", "choose_user_signals",
                        "choose_ticket_visibility", "set_profile", "remove_profile",
                        "record_refusal"]
PEOPLE_COMMANDS: tuple[PeopleCommand, ...] = get_args(PeopleCommand)
"""The ``Integration`` commands on its people (``projections.people``)."""


class IntegrationApplication(Application[UUID]):
    """Commands on the one integration of this deployment, and its audit trail."""

    name = "Integration"  # tables are <schema>.integration_events

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # Only what the caller passes: the daemon's settings decide where the
        # integration lives, never a stray POSTGRES_* in the process environment.
        return Environment(name, dict(env or {}))

    # -- commands ------------------------------------------------------------

    def set_up(self, desk_portal: str, crm_org: str, *, by: str) -> Integration:
        """Create the integration, or confirm the same set-up (SYNC-13)."""
        for attempt in range(_ATTEMPTS):
            integration = self.current()
            if integration is None:
                integration = Integration.set_up_new(desk_portal, crm_org, by=by)
            else:
                integration.set_up(desk_portal, crm_org, by=by)
            try:
                self.save(integration)
            except RecordConflictError:
                if attempt + 1 == _ATTEMPTS:
                    raise _conflict() from None
                continue
            return integration
        raise AssertionError("unreachable")  # pragma: no cover

    def choose_sync_type(self, sync_type: str, *, by: str) -> Integration:
        return self._execute(lambda it: it.choose_sync_type(sync_type, by=by))

    def start_legacy_import(self, *, by: str) -> Integration:
        return self._execute(lambda it: it.start_legacy_import(by=by))

    def switch_to_sync(self, *, by: str) -> Integration:
        return self._execute(lambda it: it.switch_to_sync(by=by))

    def import_custom_view(self, view: str, *, by: str) -> Integration:
        return self._execute(lambda it: it.import_custom_view(view, by=by))

    def change_field_mapping(self, module: str, entries: list[dict[str, Any]] | None, *,
                             by: str) -> Integration:
        return self._execute(lambda it: it.change_field_mapping(module, entries, by=by))

    def change_matching_options(self, match_secondary_email: bool, *, by: str) -> Integration:
        return self._execute(
            lambda it: it.change_matching_options(match_secondary_email, by=by))

    def choose_products_department(self, department_id: int, *, by: str) -> Integration:
        return self._execute(lambda it: it.choose_products_department(department_id, by=by))

    def choose_related_list_modules(self, modules: list[str], *, by: str) -> Integration:
        return self._execute(lambda it: it.choose_related_list_modules(modules, by=by))

    def pause(self, *, by: str) -> Integration:
        return self._execute(lambda it: it.pause(by=by))

    def change_people(self, command: PeopleCommand, /, **arguments: Any) -> Integration:
        """One of the integration's people commands (``PEOPLE_COMMANDS``), by name, with
        its keyword arguments (``by`` among them)."""
        if command not in PEOPLE_COMMANDS:
            raise ValueError(f"not a people command: {command!r}")
        return self._execute(lambda it: getattr(it, command)(**arguments))

    def resume(self, *, by: str) -> Integration:
        return self._execute(lambda it: it.resume(by=by))

    def delete(self, *, by: str) -> Integration:
        return self._execute(lambda it: it.delete(by=by))

    # -- queries -------------------------------------------------------------

    def current(self) -> Integration | None:
        """The integration as its stored events make it, or None before set-up."""
        try:
            integration: Integration = self.repository.get(INTEGRATION_ID)
        except AggregateNotFoundError:
            return None
        return integration

    def current_config(self) -> SyncConfig:
        """What the sync projection should run with now.

        Before any set-up nothing is applied: changes are captured and wait
        (``NOT_SET_UP``) until an administrator sets the integration up and enables
        sync, as the sources describe; ``syncd run --demo`` does that as the demo's
        administrator, so the zero-configuration start still syncs (OWN-01).
        """
        integration = self.current()
        return NOT_SET_UP if integration is None else integration.to_sync_config()

    _people: tuple[int, People] | None = None
    """The people as last read, at the position they were read at."""

    def people(self) -> People:
        """The CRM users, desk profiles and ticket visibility (none before set-up).

        Read on every CRM-side request and every wake of a signal stream: the aggregate
        is loaded again only when the integration's position moved (one indexed
        ``max()``), not from all its events each time. The position is read first, so a
        change landing meanwhile is loaded at the next call, never missed."""
        position = self.position()
        if self._people is not None and self._people[0] == position:
            return self._people[1]
        integration = self.current()
        people = People() if integration is None else integration.people()
        self._people = (position, people)
        return people

    def audit(self) -> list[AuditEntry]:
        """Every change, oldest first: when, who, what, and its values (OPS-05)."""
        return [audit_entry(recorded) for recorded in self.events.get(INTEGRATION_ID)]

    def position(self) -> int:
        """The newest notification id (0 when nothing is recorded): a cheap change check."""
        return self.recorder.max_notification_id() or 0

    def changes_after(self, notification_id: int, *, limit: int = 10) -> list[Change]:
        """The events recorded after ``notification_id``, oldest first, at most ``limit``."""
        limit = max(1, min(limit, self.log_section_size))
        notifications = self.notification_log.select(
            start=notification_id, limit=limit, inclusive_of_start=False)
        return [Change(notification.id, audit_entry(self.mapper.to_domain_event(notification)))
                for notification in notifications]

    # -- plumbing ------------------------------------------------------------

    def _execute(self, command: Callable[[Integration], None]) -> Integration:
        """Load, check and record; on a conflict with another replica, load again."""
        for attempt in range(_ATTEMPTS):
            integration = self.current()
            if integration is None:
                raise NotSetUp("the integration has not been set up")
            command(integration)
            try:
                self.save(integration)
            except RecordConflictError:
                if attempt + 1 == _ATTEMPTS:
                    raise _conflict() from None
                continue
            return integration
        raise AssertionError("unreachable")  # pragma: no cover


def _conflict() -> InvalidCommand:
    return InvalidCommand("the integration kept changing under this command; try again",
                          code="conflict")


def in_memory(env: Mapping[str, str] | None = None) -> IntegrationApplication:
    """An application on in-memory persistence: for tests and tools."""
    return IntegrationApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo",
                                       **(env or {})})
