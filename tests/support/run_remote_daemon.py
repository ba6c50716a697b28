"""``python -m tests.support.run_remote_daemon URL``: the whole daemon, configured from
its ``SYNCD_*`` environment, with the CRM a remote store (the fake record service at
``URL``), in a process of its own (a test SIGKILLs it). Sync is enabled first, as an
administrator would (once)."""

from __future__ import annotations

import asyncio
import signal
import sys

from adapters.integration_store import IntegrationService
from daemon.app import run
from daemon.runtime.settings import Settings
from tests.support.record_service import remote_store


async def main(url: str) -> int:
    settings = Settings()
    assert settings.database_url is not None, "SYNCD_DATABASE_URL: the test's database"
    integration = await IntegrationService.open(settings.database_url.get_secret_value())
    try:
        if await integration.current() is None:
            await integration.set_up("desk", "remote-crm", by="test")
            await integration.choose_sync_type("two_way", by="test")
    finally:
        await integration.close()
    store, reads, target = remote_store(url, base=0.05, cap=0.2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await run(settings, stop, remote={"crm": store})
    finally:
        await reads.close()
        await target.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
