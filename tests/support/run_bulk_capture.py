"""``python -m tests.support.run_bulk_capture DSN ACCOUNTS_URL``: Zoho CRM's change
capture (its poll, the first poll of contacts by the bulk read) against the CRM
emulator at ``ACCOUNTS_URL``, in a process of its own (a test SIGKILLs it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys

import asyncpg
from pydantic import SecretStr

from adapters.remote_capture import RemoteCapture
from adapters.zoho.crm import ZohoCrm, ZohoCrmOptions
from adapters.zoho.crm_bulk import CrmBulkRead
from adapters.zoho.crm_poll import ZohoCrmPoll
from adapters.zoho.oauth import Credentials
from ops.emulators.zoho import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN


async def main(dsn: str, accounts_url: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    crm = ZohoCrm(ZohoCrmOptions(Credentials(
        client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET),
        refresh_token=SecretStr(REFRESH_TOKEN), accounts_url=accounts_url)))
    poll = ZohoCrmPoll(crm, RemoteCapture(pool, "crm"), interval=3600,
                       first_window=dt.timedelta(days=1), modules=("contacts",),
                       bulk=CrmBulkRead(crm))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await poll.run(stop)
    finally:
        await crm.close()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
