"""CRM users' ticket actions carried out on Zoho Desk (TICKET-02, TICKET-03, TICKET-05):
what the desk's command writer calls for a command of module ``ticket_actions``, which
the ``ticket_actions`` projection queued in the batch that logged the action's event.

The calls (Zoho Desk REST v1; ``Ticket.json``, ``Thread.json``, ``TicketComment.json``,
``Contact.json`` of ``zoho/zohodesk-oas``):

- create: ``POST /contacts`` for a contact typed in the form, then ``POST /tickets``
  (``subject``, ``departmentId``, ``contactId``, ``priority``, ``dueDate``, the
  description as ``description``);
- comment: ``POST /tickets/{id}/comments`` with ``isPublic`` false (to users only);
- reply: ``POST /tickets/{id}/sendReply`` by e-mail from the department's From address,
  to the requester and the addresses the action names; forward: the same with
  ``isForward`` and the action's addresses only;
- update, close, and a link to an open deal (priority High, TICKET-05): ``PATCH
  /tickets/{id}``; close leaves a ticket already Closed as it is;
- delete: ``POST /tickets/moveToTrash`` (the recycle bin).

Attachments are kept by reference (the daemon never holds their bytes, and Zoho's
attachment upload takes the file itself): a hosted desk gets them as a list of links at
the end of the description, comment, reply or forward.

Once per action: a command delivered again after a crash (between Zoho's answer and the
writer's settling transaction) first looks for what its first delivery made — a ticket
of that subject, department and contact created since the action was queued; a comment
or thread of that content since then; a contact of that e-mail since then — and takes
it instead of making another. A person who typed the same words on the same ticket in
those minutes would be taken for the action; a typed contact without an e-mail cannot
be looked up, so a crash at that moment can make it twice (docs/tickets.md).

What Zoho answers is captured at once into the desk's outbox, as a person's edit (the
writes carry the source id the webhook ignores): the ticket as it holds it now, a new
thread or comment, a ticket moved to the recycle bin. The board, the statistics and
the signals follow from those events without waiting for the poll, as the embedded
desk's capture would give them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from adapters.command_writer import Landed
from adapters.remote_capture import RemoteCapture
from adapters.write_errors import Refused
from adapters.zoho.desk import API_PATH, ZohoDesk
from adapters.zoho.desk_fields import THREADS, desk_time, thread_values, to_desk
from adapters.zoho.desk_tickets import captured_ticket
from projections.events import REASON_BAD_EVENT, ChangeEvent, decode_event
from projections.stores.commands import Command
from projections.ticket_actions import (
    RAISED_PRIORITY,
    REASON_NO_CONTACT,
    REASON_NO_TICKET,
    REASON_REFUSED,
    reply_recipients,
)
from projections.ticket_requests import (
    DUE_DATE,
    Action,
    ActionInvalid,
    Attachment,
    Create,
    DealLink,
    Message,
    Update,
    decode_action,
    parse_time,
)

CLOSED = "Closed"
SKEW = dt.timedelta(minutes=2)
"""How far the desk's clock may lag ours when looking for what a first delivery made."""
COST = {"create": 5, "comment": 3, "reply": 4, "forward": 4, "update": 2, "close": 2,
        "delete": 2, "link_deal": 2}
"""The calls an action makes, charged at once (``call_budget.held``)."""


class ZohoDeskActions:
    def __init__(self, desk: ZohoDesk, pool: asyncpg.Pool) -> None:
        self.desk = desk
        self.capture = RemoteCapture(pool, "desk")

    async def carry_out(self, command: Command) -> Landed:
        """The queued action, once; what the desk gave (``Landed.values``: the ids, as
        the embedded path records them). ``Refused`` with the failure log's reason."""
        event = decode_event(str(command.payload["event"]).encode())
        try:
            action, payload = decode_action(event.values)
        except ActionInvalid as err:  # checked when queued: a defect if it comes here
            raise Refused(REASON_BAD_EVENT, str(err)) from None
        since = (command.enqueued_at or dt.datetime.now(dt.UTC)) - SKEW
        try:
            with self.desk.client.budget.held(COST.get(action.kind, 2)):
                if isinstance(payload, Create):
                    ids = await self._create(payload, since)
                else:
                    ids = await self._on_ticket(event, action, payload, command, since)
        except Refused as err:
            if err.reason in (REASON_NO_TICKET, REASON_NO_CONTACT, REASON_REFUSED):
                raise
            # Zoho's own refusal (INVALID_DATA, say): the action's reason, Zoho's words.
            raise Refused(REASON_REFUSED, f"Zoho Desk refused it: {err.detail}",
                          code=err.code) from None
        now = dt.datetime.now(dt.UTC)
        return Landed(record_id=str(ids.get("ticket_id", event.record_id)), values=ids,
                      modified_time=now, created_time=now)

    async def _on_ticket(self, event: ChangeEvent, action: Action, payload: object,
                         command: Command, since: dt.datetime) -> dict[str, Any]:
        ticket_id = event.record_id
        ticket = await self.desk.record("tickets", ticket_id, for_write=True)
        if ticket is None:
            raise Refused(REASON_NO_TICKET, f"{action.kind}: ticket {ticket_id} is not in"
                          " Zoho Desk (deleted since the action was asked for?)")
        ids: dict[str, Any] = {"ticket_id": ticket_id}
        if isinstance(payload, Message):
            ids["thread_id"] = await self._message(ticket, action.kind, payload, since)
            ids["attachment_ids"] = []
        elif isinstance(payload, Update):
            await self._patch(ticket_id, _ticket_fields(dict(payload.fields)))
        elif action.kind == "close":
            ids["changed"] = ticket.get("statusType") != CLOSED
            if ids["changed"]:
                await self._patch(ticket_id, {"status": CLOSED})
        elif action.kind == "delete":
            await self.desk.client.call("POST", f"{API_PATH}/tickets/moveToTrash",
                                        json={"ticketIds": [ticket_id]})
            await self.capture.deleted("tickets", [(ticket_id, dt.datetime.now(dt.UTC),
                                                    False)])
        elif isinstance(payload, DealLink):
            ids["priority_raised"] = bool(command.payload.get("raise_priority")) and \
                ticket.get("priority") != RAISED_PRIORITY
            if ids["priority_raised"]:
                await self._patch(ticket_id, {"priority": RAISED_PRIORITY})
        return ids

    async def _create(self, payload: Create, since: dt.datetime) -> dict[str, Any]:
        ids: dict[str, Any] = {"contact_created": payload.new_contact is not None}
        if payload.new_contact is not None:
            ids["contact_id"] = await self._new_contact(payload, since)
        else:
            assert payload.contact_id is not None  # ticket_requests.check: one of the two
            if await self.desk.record("contacts", payload.contact_id, for_write=True) is None:
                raise Refused(REASON_NO_CONTACT, f"desk contact {payload.contact_id} is not"
                              " in Zoho Desk")
            ids["contact_id"] = payload.contact_id
        made = await self._made_ticket(payload, ids["contact_id"], since)
        if made is None:
            record: dict[str, Any] = {"subject": payload.subject,
                                      "departmentId": payload.department_id,
                                      "contactId": ids["contact_id"]}
            if payload.priority is not None:
                record["priority"] = payload.priority
            due = parse_time(payload.due_date, DUE_DATE)
            if due is not None:
                record["dueDate"] = _desk_time(due)
            description = _with_links(payload.description or "", payload.attachments)
            if description:
                record["description"] = description
            made = await self.desk.send("POST", "/tickets", record)
        await captured_ticket(self.capture, self.desk, made)
        ids["ticket_id"] = str(made["id"])
        ids["attachment_ids"] = []
        return ids

    async def _new_contact(self, payload: Create, since: dt.datetime) -> str:
        new = payload.new_contact
        assert new is not None
        if new.email:
            found = await self.desk.client.call(
                "GET", f"{API_PATH}/contacts/search", for_write=True,
                params={"email": new.email})
            for contact in (found.get("data") or []) if isinstance(found, dict) else []:
                if _since(contact.get("createdTime"), since):
                    return str(contact["id"])  # made by this action's first delivery
        record = {k: v for k, v in to_desk("contacts", {
            "first_name": new.first_name, "last_name": new.last_name, "email": new.email,
            "phone": new.phone}, sync_key_field=self.desk.options.sync_key_field).items()
            if v is not None}
        made = await self.desk.send("POST", "/contacts", record)
        return str(made["id"])

    async def _made_ticket(self, payload: Create, contact_id: str, since: dt.datetime
                           ) -> dict[str, Any] | None:
        answer = await self.desk.client.call(
            "GET", f"{API_PATH}/tickets/search", for_write=True,
            params={"subject": payload.subject, "departmentId": payload.department_id,
                    "sortBy": "-createdTime", "limit": "100"})
        for ticket in (answer.get("data") or []) if isinstance(answer, dict) else []:
            if (str(ticket.get("contactId")) == contact_id
                    and ticket.get("subject") == payload.subject
                    and _since(ticket.get("createdTime"), since)):
                return dict(ticket)
        return None

    async def _message(self, ticket: dict[str, Any], kind: str, payload: Message,
                       since: dt.datetime) -> str:
        ticket_id = str(ticket["id"])
        content = _with_links(payload.content, payload.attachments)
        if kind == "comment":
            made = await self._made(ticket_id, "comments", "content", content, since,
                                    newest_first="-commentedTime")
            if made is None:
                made = await self.desk.send("POST", f"/tickets/{ticket_id}/comments", {
                    "content": content, "isPublic": False, "contentType": "plainText"})
            await self.capture.observed(THREADS, [(str(made["id"]), thread_values(
                made, kind="comment", ticket_id=ticket_id))])
            return str(made["id"])
        # A list gives a thread's summary, not its content: matched by the summary.
        made = await self._made(ticket_id, "threads", "summary", content[:100], since,
                                newest_first="-sendDateTime")
        if made is None:
            address = await self.desk.from_address(str(ticket.get("departmentId")))
            if address is None:
                raise Refused(REASON_REFUSED, f"department"
                              f" {ticket.get('departmentId')} has no active From address"
                              " in Zoho Desk to reply from: add one to the department")
            to = list(payload.to) if kind == "forward" else reply_recipients(
                ticket.get("email"), payload.to)
            body: dict[str, Any] = {"channel": "EMAIL", "fromEmailAddress": address,
                                    "content": content, "contentType": "plainText",
                                    "to": ",".join(to)}
            if kind == "forward":
                body["isForward"] = True
            made = await self.desk.send("POST", f"/tickets/{ticket_id}/sendReply", body)
        await self.capture.observed(THREADS, [(str(made["id"]), thread_values(
            {**made, "content": made.get("content") or content}, kind="reply",
            ticket_id=ticket_id))])
        return str(made["id"])

    async def _made(self, ticket_id: str, path: str, field: str, text: str,
                    since: dt.datetime, *, newest_first: str) -> dict[str, Any] | None:
        """An item of the ticket's ``path`` list holding ``text`` and made since
        ``since``: what a first delivery of this action sent. The newest hundred are
        read (``newest_first``, the list's ``sortBy``: a comments list is oldest first
        by default, and a long ticket's first page would miss what was just made)."""
        answer = await self.desk.client.call(
            "GET", f"{API_PATH}/tickets/{ticket_id}/{path}", for_write=True,
            params={"from": "0", "limit": "100", "sortBy": newest_first})
        for item in (answer.get("data") or []) if isinstance(answer, dict) else []:
            made = item.get("createdTime") or item.get("commentedTime")
            if str(item.get(field) or "") == text and _since(made, since):
                return dict(item)
        return None

    async def _patch(self, ticket_id: str, record: dict[str, Any]) -> None:
        answer = await self.desk.send("PATCH", f"/tickets/{ticket_id}", record)
        await captured_ticket(self.capture, self.desk, answer)

def _ticket_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """An update's fields (``ticket_requests.TICKET_FIELDS``, ``due_date``,
    ``custom.<key>``) in Zoho Desk's names."""
    values: dict[str, Any] = {"custom": {}}
    for name, value in fields.items():
        if name.startswith("custom."):
            values["custom"][name.removeprefix("custom.")] = value
        elif name == DUE_DATE:
            due = parse_time(value, DUE_DATE)
            values[DUE_DATE] = None if due is None else _desk_time(due)
        else:
            values[name] = value
    if not values["custom"]:
        del values["custom"]
    return to_desk("tickets", values, sync_key_field="")


def _with_links(text: str, attachments: Sequence[Attachment]) -> str:
    if not attachments:
        return text
    lines = [f"- {a.name} ({a.content_type}, {a.size} bytes): {a.url or a.object_key}"
             for a in attachments]
    return "\n\n".join(part for part in (text, "Attachments:\n" + "\n".join(lines)) if part)


def _desk_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _since(value: object, since: dt.datetime) -> bool:
    """Whether a Zoho time (text or milliseconds) is ``since`` or later."""
    if not isinstance(value, (str, int, float)) or value == "":
        return False
    return desk_time(value) >= since
