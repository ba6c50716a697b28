"""Demo data for the zero-configuration start: a realistic desk and CRM.

Seeded as pre-existing data (not captured), so the first sync has something
real to do: e-mails that differ only in case or spaces, secondary-e-mail
matches, accounts that differ only in spacing, records older than a year
(which stay out of the first sync), contacts without e-mail, and deals in
every stage. Deterministic: the same seed gives the same stores.
"""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import structlog

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
    counts = {"crm_contacts": len(crm_rows), "desk_contacts": len(desk_rows),
              "crm_accounts": len(crm_accounts), "desk_accounts": len(desk_accounts),
              "deals": len(deals), "leads": len(leads)}
    log.info("demo_data_seeded", **counts)
    return counts


async def products_department(pool: asyncpg.Pool) -> int | None:
    """The demo desk's department that products sync with (SYNC-12): Support."""
    found = await pool.fetchval("SELECT min(id) FROM desk.departments WHERE name = 'Support'")
    return None if found is None else int(found)
