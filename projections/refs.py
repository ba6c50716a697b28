"""A contact's account reference (``account_id``), synced through the mapping table.

Each store's ``account_id`` names an account of that store, so the value cannot be
copied across: the merged state keeps the reference as ``[side, account id]`` (the
side whose account it names, or null), merged newest-wins like a mapped field, and
each side is written the twin of that account as ``sync.links`` pairs them. A
reference to an account that is not linked yet waits in ``sync.pending_refs``
(``migrations/0015_account_refs.sql``) until the account links; the sync projection
(``projections.sync``) decides all of it, in the batch transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from projections.catalog import Field, Side
from projections.db import Conn
from projections.events import REASON_BAD_EVENT
from projections.mapping import value_problem
from projections.merge import State, micros, offer

REF_KEY = "ref:account"
"""The reference's key in a contact pair's merged state (no field pair is named so:
those keys are ``desk>crm`` names)."""

REFS_LOCK = 0x5359_4E43_5245_4653  # "SYNCREFS"
"""Advisory lock (single-key space). A batch that leaves a reference waiting, or that
gives an account a link id it did not have, holds it from the moment it reads the
links (or the waiting references) to its commit. So the two never miss each other:
one of them commits first, and the other then reads what it wrote."""

_ACCOUNT_ID = Field("account_id", "integer")
_BIGINT = range(-(2**63), 2**63)

Ref = tuple[Side, int]


def ref_problem(value: Any) -> str | None:
    """Why a record's ``account_id`` cannot be a reference (None when it can, or is
    null). Only events from outside (webhooks) can carry anything but a bigint."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and value in _BIGINT):
        return None
    return value_problem(value, _ACCOUNT_ID) or REASON_BAD_EVENT


def merge_ref(state: State, *, side: Side, values: dict[str, Any], changed: list[str] | None,
              modified_at: dt.datetime, created_at: dt.datetime) -> None:
    """Offer one side's reference to ``state`` (in place), as ``merge_change`` offers a
    field: stamped with the change when it touched ``account_id``, else only filled in,
    with the creation time, when the state has none yet."""
    account = values.get("account_id")
    ref = None if account is None else [side, account]
    if changed is None or "account_id" in changed:
        offer(state, REF_KEY, ref, micros(modified_at), side)
    elif REF_KEY not in state:
        offer(state, REF_KEY, ref, micros(created_at), side)


def ref_of(state: State) -> Ref | None:
    held = state.get(REF_KEY)
    if held is None or held[0] is None:
        return None
    side, account = held[0]
    return side, int(account)



async def waiting_for(conn: Conn, accounts: list[tuple[Side, str]]) -> list[Any]:
    """The references waiting for these accounts (``(side, id)`` of each account): the
    contacts on the other side, with the event that set each reference."""
    return await conn.fetch(
        "SELECT p.side, p.contact_id, p.seq, e.event_id, e.source, e.record_id,"
        " e.captured_at FROM sync.pending_refs p"
        " JOIN unnest($1::text[], $2::text[]) AS a(side, id)"
        "  ON p.side <> a.side AND p.account_id = a.id"
        " JOIN syncd.event_log e ON e.seq = p.seq ORDER BY p.side, p.contact_id",
        [side for side, _ in accounts], [account for _, account in accounts])


async def store_waiting(conn: Conn, settled: list[tuple[Side, str]],
                        waiting: list[tuple[Side, str, int, int]]) -> None:
    """Remove the references of ``settled`` contacts (``(side, contact id)``), then keep
    ``waiting`` ones (``(side, contact id, account id on the other side, seq)``)."""
    if settled:
        await conn.execute(
            "DELETE FROM sync.pending_refs p USING unnest($1::text[], $2::text[])"
            " AS s(side, contact_id) WHERE p.side = s.side AND p.contact_id = s.contact_id",
            [side for side, _ in settled], [contact for _, contact in settled])
    if waiting:
        await conn.execute(
            "INSERT INTO sync.pending_refs (side, contact_id, account_id, seq)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
            " ON CONFLICT (side, contact_id) DO UPDATE"
            " SET account_id = EXCLUDED.account_id, seq = EXCLUDED.seq",
            [w[0] for w in waiting], [w[1] for w in waiting],
            [str(w[2]) for w in waiting], [w[3] for w in waiting])
