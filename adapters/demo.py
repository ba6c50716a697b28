"""Demo data for the zero-configuration start: a realistic desk and CRM.

Seeded as pre-existing data (not captured), so the first sync has something
real to do: e-mails that differ only in case or spaces, secondary-e-mail
matches, accounts that differ only in spacing, records older than a year
(which stay out of the first sync), contacts without e-mail, and deals in
every stage; desk tickets of the contacts on both sides, with agents' replies, due
dates, closes and the customers' ratings, so the customer statistics of their CRM
twins show something (``syncd tickets stats``). Deterministic: the same seed gives the
same stores.
"""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import structlog

from adapters.integration_store import IntegrationService

log = structlog.get_logger(__name__)

FIRST = ["Ana", "Bruno", "Carla", "Diego", "Elena", "Fabio", "Gabriela", "Hugo", "Inês",
         "João", "Karin", "Luis", "Marta", "Nuno", "Olga", "Pablo", "Quim", "Rosa", "Sofia",
         "Tomás", "Úrsula", "Vera", "Xavier", "Yara", "Zoé", "Chloé", "Éric", "Anaïs"]
LAST = ["Silva", "Santos", "García", "Martínez", "Dupont", "Lefèvre", "Moreau", "Costa",
        "Pereira", "Fernández", "López", "Bernard", "Rodrigues", "Almeida", "Rousseau"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent",
             "Stark", "Wayne", "Tyrell", "Cyberdyne", "Aperture", "Wonka", "Gringotts"]
SUFFIX = ["Corp", "S.A.", "SARL", "Lda", "GmbH", "Ltd", "Inc"]
DEPARTMENTS = ["Support", "Billing", "Sales"]
SUBJECTS = ["Cannot log in", "Invoice is wrong", "Export fails", "Upgrade my plan",
            "Password reset", "Slow dashboard", "Refund request", "API returns 500"]


async def is_seeded(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM crm.contacts) OR EXISTS (SELECT 1 FROM desk.contacts)"))


async def seed(pool: asyncpg.Pool, *, contacts: int = 3000, seed_value: int = 7,
               now: dt.datetime | None = None) -> dict[str, int]:
    """Fill both stores unless they already hold contacts; return the counts."""
    rng = random.Random(seed_value)
    now = now or dt.datetime.now(dt.UTC)

    def born() -> dt.datetime:
        # One in eight records is older than a year: not part of the first sync.
        days = rng.randint(370, 900) if rng.random() < 0.125 else rng.randint(0, 360)
        return now - dt.timedelta(days=days, seconds=rng.randint(0, 86_399))

    async with pool.acquire() as conn, conn.transaction():
        if await is_seeded(conn):
            return {}
        # Pre-existing data: nothing captured (syncd.capture = 'off'; origin 'sync' alone
        # no longer keeps crm.contacts out of the outbox, 0013_capture_sync_writes.sql).
        await conn.execute("SET LOCAL syncd.origin = 'sync'")
        await conn.execute("SET LOCAL syncd.capture = 'off'")
        await conn.executemany("INSERT INTO desk.departments (name) VALUES ($1)",
                               [(d,) for d in DEPARTMENTS])
        names = [f"{c} {s}" for c in COMPANIES for s in SUFFIX]
        crm_accounts, desk_accounts = [], []
        for name in names:
            when = born()
            crm_accounts.append((name, f"https://{name.split()[0].lower()}.example", when))
            if rng.random() < 0.5:  # same account on the desk, spacing and case differ
                spaced = name.upper() if rng.random() < 0.3 else name.replace(" ", "   ")
                desk_accounts.append((f" {spaced} ", None, born()))
        await conn.executemany(
            "INSERT INTO crm.accounts (account_name, website, created_time, modified_time)"
            " VALUES ($1, $2, $3, $3)", crm_accounts)
        await conn.executemany(
            "INSERT INTO desk.accounts (account_name, website, created_time, modified_time)"
            " VALUES ($1, $2, $3, $3)", desk_accounts)

        crm_rows: list[tuple[object, ...]] = []
        desk_rows: list[tuple[object, ...]] = []
        for i in range(contacts):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.lower()}.{last.lower()}.{i}@example.com"
            secondary = f"{first.lower()}{i}@home.example" if rng.random() < 0.2 else None
            when = born()
            phone = f"+351 21{rng.randint(1000000, 9999999)}"
            kind = rng.random()
            if kind < 0.55:  # in the CRM only
                crm_rows.append((first, last, email, secondary, phone, when))
            elif kind < 0.75:  # on both sides, e-mail differing in case and spaces
                crm_rows.append((first, last, email, secondary, phone, when))
                desk_rows.append((first, last, f"  {email.upper()} ", None, phone, born()))
            elif kind < 0.8 and secondary:  # the desk knows the secondary e-mail only
                crm_rows.append((first, last, email, secondary, phone, when))
                desk_rows.append((first, last, secondary, None, None, born()))
            elif kind < 0.9:  # on the desk only
                desk_rows.append((first, last, email, None, phone, when))
            else:  # no e-mail at all
                target = crm_rows if rng.random() < 0.5 else desk_rows
                target.append((first, last, None, None, phone, when))
        await conn.executemany(
            "INSERT INTO crm.contacts (first_name, last_name, email, secondary_email, phone,"
            " created_time, modified_time) VALUES ($1, $2, $3, $4, $5, $6, $6)", crm_rows)
        await conn.executemany(
            "INSERT INTO desk.contacts (first_name, last_name, email, secondary_email, phone,"
            " created_time, modified_time) VALUES ($1, $2, $3, $4, $5, $6, $6)", desk_rows)

        crm_ids = [r["id"] for r in await conn.fetch("SELECT id FROM crm.contacts")]
        stages = ["open", "won", "lost"]
        deals = [(f"Deal {i}", rng.choice(stages), rng.randint(500, 50_000),
                  rng.choice(crm_ids), born()) for i in range(len(crm_ids) // 3)]
        await conn.executemany(
            "INSERT INTO crm.deals (deal_name, stage, amount, contact_id, created_time,"
            " modified_time) VALUES ($1, $2, $3, $4, $5, $5)", deals)
        leads = [(rng.choice(FIRST), rng.choice(LAST), f"lead{i}@prospect.example",
                  rng.random() < 0.2, born()) for i in range(contacts // 10)]
        await conn.executemany(
            "INSERT INTO crm.leads (first_name, last_name, email, converted, created_time,"
            " modified_time) VALUES ($1, $2, $3, $4, $5, $5)", leads)
        await conn.executemany(
            "INSERT INTO crm.products (product_name, product_code, unit_price) VALUES ($1, $2, $3)",
            [(f"Plan {n}", f"P-{n}", price) for n, price in
             [("Basic", 9.0), ("Team", 29.0), ("Business", 99.0), ("Enterprise", 299.0)]])
        tickets = await _seed_tickets(conn, rng, now)
    counts = {"crm_contacts": len(crm_rows), "desk_contacts": len(desk_rows),
              "crm_accounts": len(crm_accounts), "desk_accounts": len(desk_accounts),
              "deals": len(deals), "leads": len(leads), "tickets": tickets}
    log.info("demo_data_seeded", **counts)
    return counts


async def _seed_tickets(conn: asyncpg.pool.PoolConnectionProxy, rng: random.Random,
                        now: dt.datetime) -> int:
    """One to three tickets for one desk contact with an e-mail in four, created in the
    last 90 days: the customer's message, mostly an agent's reply within ten hours (and
    an agent's internal comment on the escalated ones), a due
    date a few days on, and about half closed within three days (most of those rated).
    Times are set explicitly, all before ``now``, so a ticket closed is closed at its
    modification time and the open ones past their due date are overdue."""
    contacts = await conn.fetch("SELECT id, email FROM desk.contacts WHERE email IS NOT NULL"
                                " ORDER BY id")
    departments = [r["id"] for r in await conn.fetch(
        "SELECT id FROM desk.departments WHERE name <> 'Sales' ORDER BY id")]
    minutes = dt.timedelta(minutes=1)
    count = 0
    for contact in contacts:
        if rng.random() >= 0.25:
            continue
        for _ in range(rng.randint(1, 3)):
            created = now - dt.timedelta(days=rng.randint(1, 90), seconds=rng.randint(0, 86_399))
            replied = created + rng.randint(10, 600) * minutes if rng.random() < 0.8 else None
            closed = (replied or created) + rng.randint(60, 4320) * minutes
            status = "Closed" if rng.random() < 0.55 and closed < now else rng.choice(
                ["Open", "Open", "On Hold", "Escalated"])
            rating = rng.choice(["good", "good", "good", "okay", "bad", None]) \
                if status == "Closed" else None
            due = created + dt.timedelta(days=rng.choice([1, 2, 3, 7]))
            modified = closed if status == "Closed" else (replied or created)
            ticket = await conn.fetchval(
                "INSERT INTO desk.tickets (department_id, subject, status, priority, channel,"
                " requester_email, contact_id, due_date, rating, created_time, modified_time)"
                " VALUES ($1, $2, $3, $4, 'Email', $5, $6, $7, $8, $9, $10) RETURNING id",
                rng.choice(departments), rng.choice(SUBJECTS), status,
                rng.choice(["Low", "Medium", "High"]), contact["email"].strip(), contact["id"],
                due, rating, created, modified)
            threads = [(ticket, "in", "reply", "Hello, I need help.", created)]
            if replied is not None:
                threads.append((ticket, "out", "reply", "Thanks, we are on it.", replied))
            if status == "Escalated":  # an internal comment, seen by agents only
                threads.append((ticket, "out", "comment", "Escalated to the second line.",
                                (replied or created) + 5 * minutes))
            await conn.executemany(
                "INSERT INTO desk.ticket_threads (ticket_id, direction, kind, content,"
                " created_time, modified_time) VALUES ($1, $2, $3, $4, $5, $5)", threads)
            count += 1
    return count


async def products_department(pool: asyncpg.Pool) -> int | None:
    """The demo desk's department that products sync with (SYNC-12): Support."""
    found = await pool.fetchval("SELECT min(id) FROM desk.departments WHERE name = 'Support'")
    return None if found is None else int(found)


DEMO_USERS = [
    # CRM user id, name, e-mail, role, desk account active, mutual, departments by name
    ("1001", "Marta Costa", "marta.costa@demo-crm.example", "admin", True, False,
     ["Support", "Billing"]),
    ("1002", "Hugo Dupont", "hugo.dupont@demo-crm.example", "agent", True, False,
     ["Support"]),
    ("1003", "Inês Pereira", "ines.pereira@demo-crm.example", "light_agent", True, False,
     ["Billing"]),
    ("1004", "Pablo López", "pablo.lopez@demo-crm.example", "agent", False, False,
     ["Support"]),
    ("1005", "Zoé Bernard", "zoe.bernard@demo-crm.example", "agent", True, True,
     ["Billing"]),
]
"""CRM users of each role: an admin, an agent and a light agent with accepted
invitations, an agent whose invitation is not accepted yet (so may only comment), and
a mutual user (in both before any invitation)."""

DEMO_PROFILES: list[tuple[str, dict[str, object]]] = [
    ("Agent", {"visible": True, "shows": "contacts", "access": {}, "configures": False}),
    ("Light Agent", {"visible": True, "shows": "contacts", "configures": False,
                     "access": {"deals": "none", "notes": "restricted",
                                "calls": "restricted", "events": "restricted",
                                "tasks": "restricted"}}),
    ("Supervisor", {"visible": True, "shows": "accounts", "access": {},
                    "configures": True}),
    ("Contractor", {"visible": False, "shows": "contacts", "access": {},
                    "configures": False}),
]
"""Desk profiles: full access, a restricted one (no potentials; notes and activities
restricted), one showing accounts that may configure the integration, and one that
does not see the integration."""


async def seed_people(integration: IntegrationService, departments: dict[str, str], *,
                      by: str) -> None:
    """The demo's CRM users, their invitations and departments, the desk profiles, and
    ticket visibility by department, as an administrator would record them.
    ``departments``: the desk's department ids by name (names missing: left out)."""
    for user_id, name, email, role, active, mutual, names in DEMO_USERS:
        await integration.change_people("record_crm_user", user_id=user_id, name=name,
                                        email=email, mutual=mutual, by=by)
        await integration.change_people("invite_user", user_id=user_id, role=role, by=by)
        if active and not mutual:
            await integration.change_people("set_desk_account", user_id=user_id,
                                            active=True, by=by)
        await integration.change_people(
            "set_user_departments", user_id=user_id,
            departments=[departments[n] for n in names if n in departments], by=by)
    for profile, settings in DEMO_PROFILES:
        await integration.change_people("set_profile", name=profile, by=by, **settings)
    await integration.change_people("choose_ticket_visibility", visibility="departments",
                                    by=by)


async def department_ids(pool: asyncpg.Pool) -> dict[str, str]:
    """The embedded desk's departments, id by name."""
    return {r["name"]: str(r["id"]) for r in await pool.fetch(
        "SELECT id, name FROM desk.departments WHERE NOT deleted")}
