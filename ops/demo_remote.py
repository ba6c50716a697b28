"""The daemon between two emulated hosted services, on loopback, with demo data:
``python3 dev.py run --remote`` (or ``python -m ops.demo_remote``).

The Zoho CRM emulator listens on 127.0.0.1:8301 and the Zoho Desk emulator on
127.0.0.1:8302 (``ops/emulators``); each is seeded with a few accounts and
contacts, some of them on both sides (matched and linked by the first sync, not
doubled), and the desk with a department whose two open tickets are on its
handshake board (one from a CRM contact, one from a stranger). The daemon runs on
the embedded PostgreSQL and broker with ``SYNCD_CRM_STORE=zoho`` and
``SYNCD_DESK_STORE=zoho`` pointed at them: the CRM's notifications and the desk's
webhook come to its HTTP listener, and a poll every five seconds behind them. Its
data directory is ``.syncd-remote``, emptied at each start since the emulators'
records live in memory (or ``SYNCD_DATA_DIR``, as it is), apart from the embedded
demo's. A person's change is one ``curl`` (the emulators' ``/ui/…``, their
stand-in for the services' web pages); the lines to paste are printed at start.
Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN
from ops.emulators.zoho_crm import ZohoCrmEmulator
from ops.emulators.zoho_desk import ORG_ID, ZohoDeskEmulator

CRM_PORT, DESK_PORT = 8301, 8302


def seed(crm: ZohoCrmEmulator, desk: ZohoDeskEmulator) -> None:
    """A few records a side: Ann and her account are on both (the first sync links
    them), Ben only in the CRM, Cleo only in the desk; the desk's Support department
    has a ticket of Ann's (Contacts/Leads on the board) and one of Dan's (New)."""
    acme = crm.person_creates("accounts", {"Account_Name": "Acme Corp",
                                           "Website": "https://acme.example"})
    globex = crm.person_creates("accounts", {"Account_Name": "Globex"})
    crm.person_creates("contacts", {"First_Name": "Ann", "Last_Name": "Archer",
                                    "Email": "ann@acme.example",
                                    "Account_Name": {"id": acme, "name": "Acme Corp"}})
    crm.person_creates("contacts", {"First_Name": "Ben", "Last_Name": "Brook",
                                    "Email": "ben@globex.example", "Phone": "+1 555 0101",
                                    "Account_Name": {"id": globex, "name": "Globex"}})
    desk_acme = desk.person_creates("accounts", {"accountName": "ACME corp"})
    desk.person_creates("contacts", {"firstName": "Ann", "lastName": "Archer",
                                     "email": "Ann@Acme.example", "accountId": desk_acme})
    desk.person_creates("contacts", {"firstName": "Cleo", "lastName": "Cruz",
                                     "email": "cleo@initech.example"})
    support = desk.person_creates("departments", {"name": "Support"})
    desk.person_creates("tickets", {"subject": "Invoice missing", "departmentId": support,
                                    "email": "ann@acme.example", "priority": "High"})
    desk.person_creates("tickets", {"subject": "Do you ship to Mars?",
                                    "departmentId": support, "email": "dan@mars.example"})


def hosted_settings(crm: ZohoCrmEmulator, desk: ZohoDeskEmulator, *,
                    listen: str) -> dict[str, Any]:
    """The settings that make both sides hosted by the emulators, their callbacks to
    the daemon's listener at ``listen``."""
    return {
        "http_listen": listen,
        "crm_store": "zoho", "zoho_crm_client_id": CLIENT_ID,
        "zoho_crm_client_secret": SecretStr(CLIENT_SECRET),
        "zoho_crm_refresh_token": SecretStr(REFRESH_TOKEN),
        "zoho_crm_accounts_url": crm.url, "zoho_crm_poll_interval": 5.0,
        "zoho_crm_notify_url": f"http://{listen}/webhooks/zoho-crm",
        "zoho_crm_channel_token": SecretStr(secrets.token_hex(16)),
        "desk_store": "zoho", "zoho_desk_client_id": CLIENT_ID,
        "zoho_desk_client_secret": SecretStr(CLIENT_SECRET),
        "zoho_desk_refresh_token": SecretStr(REFRESH_TOKEN), "zoho_desk_org_id": ORG_ID,
        "zoho_desk_accounts_url": desk.url, "zoho_desk_api_url": desk.url,
        "zoho_desk_poll_interval": 5.0,
        "zoho_desk_webhook_url": f"http://{listen}/webhooks/zoho-desk",
        "zoho_desk_webhook_token": SecretStr(secrets.token_hex(16)),
    }


def fresh_data_dir() -> Path:
    """``SYNCD_DATA_DIR`` as it is, or ``.syncd-remote`` emptied: the emulators keep
    their records in memory, so links and cursors of an earlier run would name
    records that are gone."""
    given = os.environ.get("SYNCD_DATA_DIR")
    if given:
        return Path(given)
    path = Path(".syncd-remote")
    if path.exists():
        print(f"{path}/ is from an earlier run: starting afresh", file=sys.stderr)
        shutil.rmtree(path)
    return path


def instructions(crm: ZohoCrmEmulator, desk: ZohoDeskEmulator) -> str:
    return f"""
deskcrm-sync between two emulated hosted services:
  Zoho CRM  {crm.url}   Zoho Desk  {desk.url}

Create a contact in the CRM, then see it in the desk (in a few seconds):
  curl -s -X POST {crm.url}/ui/contacts -H 'content-type: application/json' \\
       -d '{{"Last_Name": "Curl", "Email": "curl@example.com"}}'
  curl -s {desk.url}/ui/contacts | python3 -m json.tool

Edit it in the desk, then see the edit in the CRM:
  curl -s -X PATCH {desk.url}/ui/contacts/<its desk id> \\
       -H 'content-type: application/json' -d '{{"phone": "+1 555 0199"}}'
  curl -s {crm.url}/ui/contacts | python3 -m json.tool

The handshake board of the desk's Support department (a ticket is a person's too:
POST {desk.url}/ui/tickets with "subject", "departmentId", "email"):
  SYNCD_DATA_DIR=.syncd-remote .venv/bin/syncd handshake Support

Ctrl-C stops the daemon and the emulators (their records are in memory).
"""


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py run --remote", description=__doc__)
    parser.add_argument("--crm-port", type=int, default=CRM_PORT)
    parser.add_argument("--desk-port", type=int, default=DESK_PORT)
    args = parser.parse_args(argv)
    from daemon.app import run
    from daemon.runtime.logs import configure_logging
    from daemon.runtime.settings import load_settings

    crm, desk = ZohoCrmEmulator(), ZohoDeskEmulator()
    await crm.start(args.crm_port)
    await desk.start(args.desk_port)
    try:
        seed(crm, desk)
        settings = load_settings(
            **hosted_settings(crm, desk, listen=os.environ.get("SYNCD_HTTP_LISTEN",
                                                               "127.0.0.1:8080")),
            data_dir=fresh_data_dir())
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        print(instructions(crm, desk), file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(settings, stop, demo=True)
    finally:
        with contextlib.suppress(Exception):
            await desk.stop()
        await crm.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
