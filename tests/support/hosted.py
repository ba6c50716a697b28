"""A pipeline whose desk is the Zoho Desk emulator (``ops/emulators/zoho_desk.py``),
as the hosted-desk tests start it: quick backoff, a poll every ``poll_interval``."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.command_writer import Backoff
from adapters.zoho.desk_store import zoho_desk_store
from ops.emulators.zoho_desk import ZohoDeskEmulator
from tests.support.pipeline import Pipeline


@asynccontextmanager
async def desk_pipeline(emulator: ZohoDeskEmulator, dsn: str, bootstrap: str, prefix: str,
                        *, poll_interval: float = 0.2) -> AsyncIterator[Pipeline]:
    store, client = zoho_desk_store(emulator.options(), backoff=Backoff(base=0.05, cap=0.2),
                                    poll_interval=poll_interval,
                                    first_window=dt.timedelta(hours=1))
    pipe = Pipeline(dsn, bootstrap, prefix, remote={"desk": store})
    await pipe.start()
    try:
        yield pipe
    finally:
        await pipe.close()
        await client.close()
