"""One test per SYNC rule, on the real embedded stores, broker and projector."""

from __future__ import annotations

from projections.mapping import build_mapping
from projections.sync_plan import REASON_ALREADY_MAPPED, REASON_AMBIGUOUS
from tests.support.pipeline import Pipeline


async def linked(pipe: Pipeline, module: str, *, desk_id: int | None = None,
                 crm_id: int | None = None) -> tuple[int, int] | None:
    if desk_id is not None:
        row = await pipe.fetchrow("SELECT desk_id, crm_id FROM sync.links"
                                  " WHERE module = $1 AND desk_id = $2", module, str(desk_id))
    else:
        row = await pipe.fetchrow("SELECT desk_id, crm_id FROM sync.links"
                                  " WHERE module = $1 AND crm_id = $2", module, str(crm_id))
    return (int(row["desk_id"]), int(row["crm_id"])) if row else None


async def open_failures(pipe: Pipeline) -> list[tuple[str, str, str]]:
    rows = await pipe.fetch("SELECT source, record_id, reason FROM sync.failures"
                            " WHERE status = 'open' ORDER BY id")
    return [(r["source"], r["record_id"], r["reason"]) for r in rows]


async def test_contacts_match_on_email_case_and_space_insensitive(pipeline: Pipeline) -> None:
    """SYNC-06: an existing CRM contact is linked, not duplicated, despite case and spaces."""
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email) VALUES ('Dupont', '  Marie@Example.COM ')"
        " RETURNING id")
    await pipeline.settle()
    desk_id = await pipeline.fetchval(
        "SELECT desk_id::bigint FROM sync.links WHERE crm_id = $1", str(crm_id))
    # The CRM contact was exported to the desk; a second desk contact with the
    # same e-mail is a second claim on the same CRM record (SYNC-10).
    other = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Dupont', 'marie@example.com')"
        " RETURNING id")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 1
    assert desk_id is not None
    assert await open_failures(pipeline) == [("desk", str(other), REASON_ALREADY_MAPPED)]


async def test_existing_records_on_both_sides_link(pipeline: Pipeline) -> None:
    """SYNC-06: a desk contact and a CRM contact that already exist link on first change."""
    pipeline.configure(active=False)
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email) VALUES ('Lee', 'LEE@x.org') RETURNING id")
    await pipeline.settle()
    pipeline.configure(active=True)
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (first_name, last_name, email)"
        " VALUES ('Kim', 'Lee', 'lee@x.org') RETURNING id")
    await pipeline.settle()
    assert await linked(pipeline, "contacts", desk_id=desk_id) == (desk_id, crm_id)
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 1
    assert await pipeline.fetchval(
        "SELECT first_name FROM crm.contacts WHERE id = $1", crm_id) == "Kim"


async def test_secondary_email_match_replaces_desk_primary(pipeline: Pipeline) -> None:
    """SYNC-06: matched through the secondary e-mail, the desk takes the CRM's primary."""
    pipeline.configure(active=False)
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name, email, secondary_email)"
        " VALUES ('Roy', 'roy@work.com', 'roy@home.com') RETURNING id")
    await pipeline.settle()
    pipeline.configure(active=True, match_secondary_email=True)
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('Roy', 'Roy@Home.com') RETURNING id")
    await pipeline.settle()
    assert await linked(pipeline, "contacts", desk_id=desk_id) == (desk_id, crm_id)
    assert await pipeline.fetchval(
        "SELECT email FROM desk.contacts WHERE id = $1", desk_id) == "roy@work.com"


async def test_accounts_match_on_name_folded(pipeline: Pipeline) -> None:
    """SYNC-06: accounts match on name with case and whitespace folded."""
    pipeline.configure(active=False)
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.accounts (account_name) VALUES ('Acme   Corp') RETURNING id")
    await pipeline.settle()
    pipeline.configure(active=True)
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.accounts (account_name, website) VALUES (' acme corp', 'acme.io')"
        " RETURNING id")
    await pipeline.settle()
    assert await linked(pipeline, "accounts", desk_id=desk_id) == (desk_id, crm_id)
    assert await pipeline.fetchval(
        "SELECT website FROM crm.accounts WHERE id = $1", crm_id) == "acme.io"


async def test_more_than_one_candidate_is_a_failure(pipeline: Pipeline) -> None:
    """SYNC-06: two CRM contacts with the e-mail: a failure, never a guess."""
    pipeline.configure(active=False)
    await pipeline.execute("INSERT INTO crm.contacts (last_name, email)"
                           " VALUES ('A', 'twin@x.com'), ('B', 'TWIN@x.com')")
    await pipeline.settle()
    pipeline.configure(active=True)
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('C', 'twin@x.com') RETURNING id")
    await pipeline.settle()
    assert await open_failures(pipeline) == [("desk", str(desk_id), REASON_AMBIGUOUS)]
    assert await pipeline.fetchval("SELECT count(*) FROM sync.links") == 0


async def test_contacts_without_email_are_created_and_linked(pipeline: Pipeline) -> None:
    """SYNC-07: every contact syncs; no e-mail means no match, so each gets its own."""
    await pipeline.execute("INSERT INTO desk.contacts (last_name) VALUES ('NoMail1'), ('NoMail2')")
    await pipeline.settle()
    rows = await pipeline.fetch("SELECT last_name FROM crm.contacts ORDER BY last_name")
    assert [r["last_name"] for r in rows] == ["NoMail1", "NoMail2"]
    assert await pipeline.fetchval("SELECT count(*) FROM sync.links") == 2


async def test_mandatory_field_missing_and_type_clash(pipeline: Pipeline) -> None:
    """SYNC-05: an empty mandatory field and a text value for an integer field fail
    with their own messages, and count as failed in the history."""
    mapping = build_mapping("contacts", [
        {"desk": "last_name", "crm": "last_name"},
        {"desk": "email", "crm": "email"},
        {"desk": "custom.employees", "desk_type": "integer",
         "crm": "custom.headcount", "crm_type": "integer"},
    ])
    pipeline.configure(mappings={**pipeline.config.mappings, "contacts": mapping})
    no_name = await pipeline.fetchval(
        "INSERT INTO desk.contacts (first_name, email) VALUES ('Only', 'o@x.com') RETURNING id")
    clash = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, custom) VALUES ('T', '{\"employees\": \"many\"}')"
        " RETURNING id")
    good = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, custom) VALUES ('G', '{\"employees\": 42}')"
        " RETURNING id")
    await pipeline.settle()
    assert await open_failures(pipeline) == [
        ("desk", str(no_name), "mandatory field missing"),
        ("desk", str(clash), "text value given for an integer field"),
    ]
    assert await pipeline.fetchval(
        "SELECT c.custom->>'headcount' FROM crm.contacts c JOIN sync.links l"
        " ON l.crm_id = c.id::text WHERE l.desk_id = $1", str(good)) == "42"
    assert await pipeline.fetchval("SELECT failed FROM sync.history") == 2
    # Fixing the record resolves its failure (SYNC-05, OPS-04).
    await pipeline.execute("UPDATE desk.contacts SET last_name = 'Fixed' WHERE id = $1", no_name)
    await pipeline.settle()
    assert [f[1] for f in await open_failures(pipeline)] == [str(clash)]


async def test_one_way_applies_only_crm_changes(pipeline: Pipeline) -> None:
    """SYNC-02: one-way CRM → desk: desk changes are logged but never reach the CRM."""
    pipeline.configure(direction="crm_to_desk")
    await pipeline.execute("INSERT INTO desk.contacts (last_name) VALUES ('DeskOnly')")
    crm_id = await pipeline.fetchval(
        "INSERT INTO crm.contacts (last_name) VALUES ('CrmSide') RETURNING id")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 1
    desk_id = await pipeline.fetchval(
        "SELECT desk_id::bigint FROM sync.links WHERE crm_id = $1", str(crm_id))
    await pipeline.execute("UPDATE desk.contacts SET last_name = 'Edited' WHERE id = $1", desk_id)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT last_name FROM crm.contacts WHERE id = $1", crm_id) == "CrmSide"
    assert await pipeline.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE source = 'desk'") == 2


async def test_deletes_do_not_propagate_and_updates_bring_back(pipeline: Pipeline) -> None:
    """SYNC-11: a delete stays on its side; an update of the survivor restores a soft-deleted
    record or re-creates a hard-deleted one and re-links it."""
    soft = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name) VALUES ('Soft') RETURNING id")
    hard = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name) VALUES ('Hard') RETURNING id")
    await pipeline.settle()
    soft_pair = await linked(pipeline, "contacts", desk_id=soft)
    hard_pair = await linked(pipeline, "contacts", desk_id=hard)
    assert soft_pair and hard_pair
    await pipeline.execute("UPDATE desk.contacts SET deleted = true WHERE id = $1", soft)
    await pipeline.execute("DELETE FROM desk.contacts WHERE id = $1", hard)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT count(*) FROM crm.contacts WHERE NOT deleted") == 2  # nothing propagated
    await pipeline.execute("UPDATE crm.contacts SET phone = '1' WHERE id = ANY($1::bigint[])",
                           [soft_pair[1], hard_pair[1]])
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT deleted FROM desk.contacts WHERE id = $1", soft) is False
    recreated = await linked(pipeline, "contacts", crm_id=hard_pair[1])
    assert recreated is not None and recreated[0] != hard
    assert await pipeline.fetchval(
        "SELECT last_name FROM desk.contacts WHERE id = $1", recreated[0]) == "Hard"


async def test_record_changed_in_recycle_bin_is_restored(pipeline: Pipeline) -> None:
    """SYNC-11: a soft-deleted record that changes again is restored by sync."""
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name) VALUES ('Bin') RETURNING id")
    await pipeline.settle()
    await pipeline.execute("UPDATE desk.contacts SET deleted = true WHERE id = $1", desk_id)
    await pipeline.settle()
    await pipeline.execute("UPDATE desk.contacts SET mobile = '9' WHERE id = $1", desk_id)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT deleted FROM desk.contacts WHERE id = $1", desk_id) is False
    pair = await linked(pipeline, "contacts", desk_id=desk_id)
    assert pair is not None
    assert await pipeline.fetchval(
        "SELECT mobile FROM crm.contacts WHERE id = $1", pair[1]) == "9"


async def test_products_sync_with_one_department(pipeline: Pipeline) -> None:
    """SYNC-12: CRM products land in the chosen desk department; other departments' desk
    products stay out of the CRM."""
    support, sales = [r["id"] for r in await pipeline.fetch(
        "INSERT INTO desk.departments (name) VALUES ('Support'), ('Sales') RETURNING id")]
    pipeline.configure(products_department_id=support)
    await pipeline.execute(
        "INSERT INTO crm.products (product_name, unit_price) VALUES ('Widget', 9.5)")
    await pipeline.execute(
        "INSERT INTO desk.products (product_name, department_id) VALUES ('Ours', $1),"
        " ('Theirs', $2)", support, sales)
    await pipeline.settle()
    assert await pipeline.fetchval(
        "SELECT department_id FROM desk.products WHERE product_name = 'Widget'") == support
    names = {r["product_name"] for r in await pipeline.fetch("SELECT * FROM crm.products")}
    assert names == {"Widget", "Ours"}


async def test_concurrent_edits_converge(pipeline: Pipeline) -> None:
    """SYNC-15: edits of one pair on both sides converge per field, newest wins."""
    desk_id = await pipeline.fetchval(
        "INSERT INTO desk.contacts (last_name, phone, mobile) VALUES ('C', 'p0', 'm0')"
        " RETURNING id")
    await pipeline.settle()
    pair = await linked(pipeline, "contacts", desk_id=desk_id)
    assert pair
    # Three edits committed back to back, before the first has synced.
    await pipeline.execute("UPDATE desk.contacts SET phone = 'desk-phone' WHERE id = $1", desk_id)
    await pipeline.execute("UPDATE crm.contacts SET mobile = 'crm-mobile' WHERE id = $1", pair[1])
    await pipeline.execute("UPDATE crm.contacts SET phone = 'crm-phone' WHERE id = $1", pair[1])
    await pipeline.execute("UPDATE desk.contacts SET first_name = 'desk-first' WHERE id = $1",
                           desk_id)
    await pipeline.settle()
    desk = await pipeline.fetchrow("SELECT * FROM desk.contacts WHERE id = $1", desk_id)
    crm = await pipeline.fetchrow("SELECT * FROM crm.contacts WHERE id = $1", pair[1])
    assert desk and crm
    expected = {"first_name": "desk-first", "last_name": "C", "phone": "crm-phone",
                "mobile": "crm-mobile"}
    assert {f: desk[f] for f in expected} == expected
    assert {f: crm[f] for f in expected} == expected


async def test_records_with_one_key_in_one_batch_are_ambiguous_not_guessed(
        pipeline: Pipeline) -> None:
    """SYNC-06, SYNC-10: two desk contacts and one CRM contact with one e-mail, arriving
    together: which desk contact the CRM one belongs to would be a guess, so all three
    are failures 'more than one matching record' and nothing is linked or created."""
    assert pipeline.pool is not None
    pipeline.configure(active=False)
    async with pipeline.pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO desk.contacts (last_name, email)"
                           " VALUES ('A', 'dup@x.org'), ('B', 'DUP@x.org')")
        await conn.execute("INSERT INTO crm.contacts (last_name, email) VALUES ('C', 'dup@x.org')")
    await pipeline.settle()
    pipeline.configure(active=True)
    await pipeline.execute("UPDATE desk.contacts SET phone = '1'")
    await pipeline.execute("UPDATE crm.contacts SET phone = '1'")
    await pipeline.settle()
    assert await pipeline.fetchval("SELECT count(*) FROM sync.links") == 0
    assert await pipeline.fetchval("SELECT count(*) FROM desk.contacts") == 2
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 1
    failures = await open_failures(pipeline)
    assert sorted((source, reason) for source, _, reason in failures) == [
        ("crm", REASON_AMBIGUOUS), ("desk", REASON_AMBIGUOUS), ("desk", REASON_AMBIGUOUS)]


async def test_keys_match_whatever_side_arrives_first(pipeline: Pipeline) -> None:
    """SYNC-06: a dotted capital I, a tab or a no-break space give the same key in the
    event (Python) and in the store's index (SQL): either order of arrival links."""
    pairs = [("İLKNUR.{}@örnek.com.tr", "ilknur.{}@örnek.com.tr"),
             ("\tbob.{}@x.org\u00a0", "bob.{}@x.org")]
    for crm_email, desk_email in pairs:
        for first in ("crm", "desk"):
            later = "desk" if first == "crm" else "crm"
            email = {"crm": crm_email.format(first), "desk": desk_email.format(first)}
            pipeline.configure(active=False)
            first_id = await pipeline.fetchval(
                f"INSERT INTO {first}.contacts (last_name, email) VALUES ('K', $1) RETURNING id",
                email[first])
            await pipeline.settle()
            pipeline.configure(active=True)
            later_id = await pipeline.fetchval(
                f"INSERT INTO {later}.contacts (last_name, email) VALUES ('K', $1) RETURNING id",
                email[later])
            await pipeline.settle()
            pair = await linked(pipeline, "contacts", **{f"{later}_id": later_id})
            assert pair is not None, (first, email)
            assert pair == ((later_id, first_id) if later == "desk" else (first_id, later_id))
    assert await open_failures(pipeline) == []
    assert await pipeline.fetchval("SELECT count(*) FROM crm.contacts") == 4
    assert await pipeline.fetchval("SELECT count(*) FROM desk.contacts") == 4
