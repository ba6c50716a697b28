"""The ticket-actions projection: CRM users' actions on desk tickets, applied to the desk
exactly once (TICKET-02, TICKET-03, TICKET-05), and the desk's status automation on new
replies (TICKET-10).

Why it exists: from a CRM record a user creates a ticket, comments, replies, forwards,
updates a field, closes, deletes, links a ticket to a deal. Each action is a CRM change
event (module ``ticket_actions``, values checked by ``projections.ticket_requests``)
that reaches Kafka through the CRM's outbox like any change; this projection applies it
to the desk through the ticket-action port (``projections.stores.desk_actions``), in the
projector's batch transaction. The event log takes an event once (its id fixed at the
outbox row), and the desk write commits with it, so an action is applied exactly once
whatever crashes or redeliveries happen around it (OWN-02).

What each action came to is recorded twice, in the same transaction: as an outcome in
``sync.outcomes`` (``added`` for a create, ``updated`` for the others, or ``failed``
with a reason, the action's id as its record: a ticket deleted between
the request and the apply, a deal gone, a write the desk refused, values that do not
hold together), which puts every failure in the failure log with its reason and a
Retry (invariant 5); and as a row of ``ticket_actions.actions`` (what the API's
``GET /ticket-actions/{id}`` reads), beside ``ticket_actions.deal_links``.

Rebuilding (``syncd replay --projection ticket_actions``): the registry makes this
projection in ``rebuild`` mode, which never touches the desk. It reads each action's
recorded outcome instead of applying the action again, so its tables come out as they
were (OWN-03). Only the composition root (``daemon.bootstrap``) puts the live instance
in ``embedded`` mode (it writes the embedded desk) or ``hosted`` mode (a hosted desk).

On a hosted desk (Zoho Desk) nothing can be written in the batch transaction: the
projection checks what it can from the log (the action holds together, a deal to link
is in the CRM), then queues the action for the desk's writer in the command outbox
(``sync.commands``, module ``ticket_actions``, one ticket's actions in the order they
were asked; a create under its action id), in the batch that logs its event, so it is
queued exactly once. Its row says ``pending`` until the writer has carried it out
(``adapters/zoho/desk_actions.py``) and settled it (``settle``): the outcome recorded
for its event, as the embedded path records it in the batch, and the row ``applied``
or ``failed``. A rebuild reads those outcomes like any others; an action still queued
is rebuilt ``pending``.

The status automation (TICKET-10, "the default automation updates the status from new
agent or customer replies"): a new thread a person made on the desk (a ``create`` event
of ``desk.ticket_threads`` of origin ``user``, never an import) changes its ticket's
status, through the same port, in the same batch:

* the customer's message (``direction = 'in'``) on a ticket On Hold or Closed (by its
  status type: a custom status counts as the standard one it maps to) sets it ``Open``:
  the customer is waiting again. An Escalated ticket stays Escalated (someone chose to
  escalate it; a new message does not undo that), an Open one stays Open;
* an agent's reply to the customer (``direction = 'out'``, ``kind = 'reply'``) on an
  Open ticket sets it ``On Hold``: it now waits for the customer. Comments (users only)
  and forwards (to third parties) answer nobody and change nothing.

It cannot loop: it reacts to thread events only and writes tickets only, whose events
it ignores. A hosted desk runs its own automation, so a hosted desk's threads are left
to it.

Batches (several replicas, OWN-05): an action's events share a partition with every
other action on its ticket (keyed by the ticket), but a thread's event may sit on
another one, so two batches can want one ticket's row: each locks it (``FOR UPDATE``)
for the rest of its transaction, after every other projection's locks (it runs last in
a batch). Two
batches locking two tickets in opposite orders are a deadlock PostgreSQL breaks; the
loser's batch is read again, like any conflicted batch.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from projections.batch import NOTHING_TO_REPORT, LoggedEvent, ProjectionReport
from projections.db import Conn
from projections.events import REASON_BAD_EVENT, ChangeEvent, decode_event, encode_event
from projections.last_states import Rebuilt, own_events
from projections.ledger import Outcome, record_outcomes
from projections.stores.commands import Cause, Command, enqueue
from projections.stores.desk_actions import DeskActions, DeskRefused
from projections.stores.embedded_actions import EmbeddedDeskActions
from projections.ticket_requests import (
    Action,
    ActionInvalid,
    Create,
    DealLink,
    Message,
    Payload,
    Update,
    decode_action,
    parse_time,
)

MODULE = "ticket_actions"
Mode = Literal["rebuild", "embedded", "hosted"]

APPLIED, FAILED, PENDING = "applied", "failed", "pending"
REASON_NO_TICKET = "ticket not found"
REASON_NO_CONTACT = "contact not found"
REASON_NO_DEAL = "deal not found"
REASON_REFUSED = "the desk refused the action"

RAISED_PRIORITY = "High"
"""TICKET-05, "a ticket linked to a deal is prioritised": linking a ticket to an open
deal sets its priority to High (Zoho Desk's highest standard priority) unless it is High
already. Unlinking leaves the priority as it is: by then an agent may have set it on
purpose, and nothing recorded says what it was before."""

_DESK_REFUSES = (DeskRefused, asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
"""A write the desk refused: the action fails, the batch goes on (the savepoint around
each action undoes what it wrote)."""


@dataclass(frozen=True, slots=True)
class Result:
    outcome: str
    reason: str | None = None
    detail: str = ""
    ids: dict[str, Any] = field(default_factory=dict)
    """What the desk gave or did (``ticket_id``, ``thread_id``, ``contact_id``,
    ``attachment_ids``, ``changed``, ``priority_raised``)."""


def _failed(reason: str, detail: str) -> Result:
    return Result(FAILED, reason, detail)


def is_action(event: ChangeEvent) -> bool:
    return event.source == "crm" and event.module == MODULE


def is_new_thread(event: ChangeEvent) -> bool:
    """A thread a person just wrote on the desk: what the status automation follows."""
    return (event.source == "desk" and event.module == "ticket_threads"
            and event.op == "create" and event.origin == "user")


def automated_status(status_type: str | None, direction: object, kind: object) -> str | None:
    """The status a new thread gives its ticket (TICKET-10, the module docstring), or None."""
    if direction == "in" and status_type in ("On Hold", "Closed"):
        return "Open"
    if direction == "out" and kind == "reply" and status_type == "Open":
        return "On Hold"
    return None


def reply_recipients(requester: str | None, extra: Sequence[str]) -> list[str]:
    """A reply goes to the requester and the addresses it names, each once."""
    out: list[str] = []
    for address in ([requester] if requester else []) + list(extra):
        if address.lower() not in {a.lower() for a in out}:
            out.append(address)
    return out


class TicketActionsProjection:
    """Keeps ``ticket_actions.*`` and, live, applies the actions; see the module docstring."""

    name = "ticket_actions"

    def __init__(self, mode: Mode = "rebuild") -> None:
        self.mode: Mode = mode

    async def apply(self, conn: Conn, events: Sequence[LoggedEvent]) -> ProjectionReport:
        actions = [item for item in events if is_action(item.event)]
        threads = [item for item in events if is_new_thread(item.event)]
        if not actions and not (threads and self.mode == "embedded"):
            return NOTHING_TO_REPORT
        recorded = await _recorded(conn, [item.seq for item in actions])
        queued = await _queued(conn, [item.event.event_id for item in actions]) \
            if self.mode == "rebuild" else set()
        desk = EmbeddedDeskActions(conn)
        outcomes: list[Outcome] = []
        commands: list[Command] = []
        for item in sorted(actions + threads, key=lambda i: i.seq):
            event = item.event
            if not is_action(event):
                if self.mode == "embedded":
                    await _automate(desk, event)
                continue
            result = recorded.get(item.seq)
            if result is None and self.mode == "rebuild":
                if event.event_id not in queued:
                    continue  # never applied live: nothing to rebuild from
                result = Result(PENDING)
            elif result is None and self.mode == "hosted":
                result = await _queue(conn, item, commands)
                if result.outcome != PENDING:
                    outcomes.append(_outcome(item, result))
            elif result is None:
                result = await self._apply(conn, desk, event)
                outcomes.append(_outcome(item, result))
            await _keep(conn, event, result)
        await enqueue(conn, commands)
        await record_outcomes(conn, outcomes)
        failed = tuple(o for o in outcomes if o.outcome == FAILED)
        return ProjectionReport(failed) if failed else NOTHING_TO_REPORT

    async def _apply(self, conn: Conn, desk: DeskActions, event: ChangeEvent) -> Result:
        try:
            action, payload = decode_action(event.values)
        except ActionInvalid as err:
            return _failed(REASON_BAD_EVENT, str(err))
        try:
            async with conn.transaction():  # a savepoint: a refused write undoes it all
                return await _carry_out(conn, desk, event, action, payload)
        except ActionInvalid as err:
            return _failed(REASON_BAD_EVENT, str(err))
        except _DESK_REFUSES as err:
            return _failed(REASON_REFUSED, str(err))


async def _carry_out(conn: Conn, desk: DeskActions, event: ChangeEvent, action: Action,
                     payload: Payload) -> Result:
    """One action on the desk; a Result, or ``DeskRefused`` (its writes are undone)."""
    if isinstance(payload, Create):
        return await _create(desk, action, payload)
    ticket_id = event.record_id
    if action.kind == "unlink_deal":
        return Result(APPLIED, ids={"ticket_id": ticket_id})  # the link row is _keep's
    ticket = await desk.ticket(ticket_id)
    if ticket is None:
        return _failed(REASON_NO_TICKET, f"{action.kind}: ticket {ticket_id} is not in the"
                       " desk (deleted since the action was asked for?)")
    ids: dict[str, Any] = {"ticket_id": ticket_id}
    if isinstance(payload, Message):
        kind = action.kind
        recipients = (None if kind == "comment" else payload.to if kind == "forward"
                      else reply_recipients(ticket.requester_email, payload.to))
        thread = await desk.add_thread(ticket_id, direction="out", kind=kind,
                                       author=action.user_name, content=payload.content,
                                       recipients=recipients)
        ids["thread_id"] = thread
        ids["attachment_ids"] = await desk.attach(ticket_id, thread, payload.attachments)
    elif isinstance(payload, Update):
        await desk.update_ticket(ticket_id, dict(payload.fields))
    elif action.kind == "close":
        ids["changed"] = ticket.status_type != "Closed"
        if ids["changed"]:
            await desk.update_ticket(ticket_id, {"status": "Closed"})
    elif action.kind == "delete":
        await desk.delete_ticket(ticket_id)
    elif isinstance(payload, DealLink):
        stage = await _deal_stage(conn, payload.deal_id)
        if stage is None:
            return _failed(REASON_NO_DEAL, f"deal {payload.deal_id} is not in the CRM")
        ids["priority_raised"] = stage == "open" and ticket.priority != RAISED_PRIORITY
        if ids["priority_raised"]:
            await desk.update_ticket(ticket_id, {"priority": RAISED_PRIORITY})
    return Result(APPLIED, ids=ids)


async def _deal_stage(conn: Conn, deal_id: str) -> str | None:
    """A deal's stage as the board keeps it (None: not in the CRM, or deleted). The board
    has applied the whole batch when the ticket actions run (they run last), and a deal's
    events travel on another partition than the actions on a ticket (keyed by deal, by
    ticket): a deal created and linked at once is often in the action's batch, logged
    before or after it, and is found all the same. When the actions ran before the
    board, such a link failed "deal not found" (a Retry then applied it)."""
    stage: str | None = await conn.fetchval(
        "SELECT stage FROM handshake.deals WHERE deal_id = $1", deal_id)
    return stage


async def _create(desk: DeskActions, action: Action, payload: Create) -> Result:
    email: str | None
    if payload.new_contact is not None:
        new = payload.new_contact
        contact = await desk.create_contact(first_name=new.first_name, last_name=new.last_name,
                                            email=new.email, phone=new.phone)
        email = new.email
    else:
        assert payload.contact_id is not None  # ticket_requests.check: one of the two
        contact = payload.contact_id
        live, email = await desk.contact_email(contact)
        if not live:
            return _failed(REASON_NO_CONTACT, f"desk contact {contact} is not in the desk")
    ticket = await desk.create_ticket(
        department_id=payload.department_id, subject=payload.subject, contact_id=contact,
        requester_email=email, priority=payload.priority,
        due_date=parse_time(payload.due_date, "due_date"))
    ids: dict[str, Any] = {"ticket_id": ticket, "contact_id": contact,
                           "contact_created": payload.new_contact is not None}
    if payload.description is not None:
        # The description is the customer's first message, as a desk ticket opens.
        ids["thread_id"] = await desk.add_thread(
            ticket, direction="in", kind="reply", author=email, content=payload.description,
            recipients=None)
    ids["attachment_ids"] = await desk.attach(ticket, None, payload.attachments)
    return Result(APPLIED, ids=ids)


async def _queue(conn: Conn, item: LoggedEvent, commands: list[Command]) -> Result:
    """A hosted desk's action: checked as far as the log can tell, then queued for the
    desk's writer (``Result`` pending), or failed here with its reason."""
    event = item.event
    try:
        action, payload = decode_action(event.values)
    except ActionInvalid as err:
        return _failed(REASON_BAD_EVENT, str(err))
    if action.kind == "unlink_deal":
        return Result(APPLIED, ids={"ticket_id": event.record_id})  # the link row only
    work: dict[str, Any] = {}
    if isinstance(payload, DealLink):
        stage = await _deal_stage(conn, payload.deal_id)
        if stage is None:
            return _failed(REASON_NO_DEAL, f"deal {payload.deal_id} is not in the CRM")
        work["raise_priority"] = stage == "open"
    # One ticket's actions are delivered in the order they were asked (the record key
    # orders them); a create, whose ticket does not exist yet, under its action id.
    key = f"action:{event.event_id}" if isinstance(payload, Create) else \
        f"ticket:{event.record_id}"
    commands.append(Command(
        store="desk", module=MODULE, record_key=key,
        op="create" if isinstance(payload, Create) else "update",
        payload={"seq": item.seq, "event": encode_event(event).decode(), **work},
        record_id=None if isinstance(payload, Create) else event.record_id,
        cause=Cause(event.event_id, event.source, event.module, event.record_id)))
    return Result(PENDING)


async def settle(conn: Conn, command: Command, result: Result) -> None:
    """A queued action carried out by the hosted desk's writer, or failed there: its
    outcome recorded for its event (what a rebuild reads) and its row, in the writer's
    settling transaction."""
    item = LoggedEvent(int(command.payload["seq"]),
                       decode_event(str(command.payload["event"]).encode()))
    await record_outcomes(conn, [_outcome(item, result)])
    await _keep(conn, item.event, result)


async def _queued(conn: Conn, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The action events whose actions wait in the command outbox (a hosted desk)."""
    if not event_ids:
        return set()
    rows = await conn.fetch(
        "SELECT cause_event FROM sync.commands WHERE module = $1"
        " AND cause_event = ANY($2::uuid[])", MODULE, event_ids)
    return {row["cause_event"] for row in rows}


async def rebuild(conn: Conn) -> Rebuilt:
    """``syncd replay``'s rebuild: the action events alone through a rebuilding instance
    (it reads nothing else of the log: the threads it follows live are the embedded
    desk's automation, never rebuilt), not the whole log."""
    return await own_events(conn, "crm", MODULE, TicketActionsProjection("rebuild"))


async def _automate(desk: DeskActions, event: ChangeEvent) -> None:
    ticket_id = event.values.get("ticket_id")
    if event.values.get("deleted") or ticket_id is None:
        return
    ticket = await desk.ticket(str(ticket_id))
    if ticket is None:
        return
    status = automated_status(ticket.status_type, event.values.get("direction"),
                              event.values.get("kind", "reply"))
    if status is not None:
        await desk.update_ticket(ticket.id, {"status": status})


def _outcome(item: LoggedEvent, result: Result) -> Outcome:
    """The action's outcome for the ledger. Its record is the action (its id), so a
    failure-log entry is one action's, and the Retry that applies it resolves that entry
    and no other; an applied action counts in the history as a record added (a create)
    or updated (the others), CRM to desk."""
    event = item.event
    action_id = _uuid(event.values.get("action_id"))
    if result.outcome == APPLIED:
        outcome = "added" if event.values.get("kind") == "create" else "updated"
        detail = json.dumps(result.ids, sort_keys=True)
    else:
        outcome, detail = FAILED, result.detail
    return Outcome(item.seq, event.event_id, event.source, event.module,
                   str(action_id) if action_id is not None else event.record_id,
                   event.captured_at, outcome, result.reason, detail)


async def _recorded(conn: Conn, seqs: list[int]) -> dict[int, Result]:
    """The outcomes recorded for these action events when they were applied (a rebuild
    reads them instead of applying the actions again)."""
    if not seqs:
        return {}
    rows = await conn.fetch(
        "SELECT seq, outcome, reason, detail FROM sync.outcomes"
        " WHERE seq = ANY($1::bigint[]) AND module = $2", seqs, MODULE)
    out: dict[int, Result] = {}
    for row in rows:
        if row["outcome"] != FAILED:  # added or updated: applied (``_outcome``)
            ids: dict[str, Any] = {}
            with contextlib.suppress(ValueError, TypeError):
                ids = dict(json.loads(row["detail"]))
            out[row["seq"]] = Result(APPLIED, ids=ids)
        else:
            out[row["seq"]] = Result(FAILED, row["reason"], row["detail"])
    return out


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def _keep(conn: Conn, event: ChangeEvent, result: Result) -> None:
    """The action's row, and the deal link it made or removed (when applied). A retried
    action (same action id, a new event) replaces the row of its earlier attempt."""
    values = event.values
    action_id = _uuid(values.get("action_id"))
    kind = values.get("kind")
    if action_id is None or not isinstance(kind, str):
        return  # no action id to answer by: the failure log holds it
    ticket_id = result.ids.get("ticket_id") or (None if kind == "create" else event.record_id)
    await conn.execute(
        "INSERT INTO ticket_actions.actions (action_id, kind, ticket_id, user_id, user_name,"
        " requested_at, outcome, reason, detail, result)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)"
        " ON CONFLICT (action_id) DO UPDATE SET kind = EXCLUDED.kind,"
        "  ticket_id = EXCLUDED.ticket_id, user_id = EXCLUDED.user_id,"
        "  user_name = EXCLUDED.user_name, requested_at = EXCLUDED.requested_at,"
        "  outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, detail = EXCLUDED.detail,"
        "  result = EXCLUDED.result",
        action_id, kind[:40], ticket_id, str(values.get("user_id", "")),
        _str(values.get("user_name")),
        event.modified_at, result.outcome, result.reason, result.detail[:2000],
        json.dumps(result.ids, sort_keys=True))
    if result.outcome != APPLIED or kind not in ("link_deal", "unlink_deal"):
        return
    deal_id = str((values.get("payload") or {}).get("deal_id"))
    if kind == "link_deal":
        await conn.execute(
            "INSERT INTO ticket_actions.deal_links (ticket_id, deal_id, linked_by, linked_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            event.record_id, deal_id, str(values.get("user_id")), event.modified_at)
    else:
        await conn.execute(
            "DELETE FROM ticket_actions.deal_links WHERE ticket_id = $1 AND deal_id = $2",
            event.record_id, deal_id)
