"""A pipeline with a hosted store on an emulator (``ops/emulators/``), as the hosted-store
tests start it: quick backoff, the store's client closed after the pipeline."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from adapters.command_writer import Backoff
from adapters.remote_store import RemoteStore
from adapters.zoho.desk_store import zoho_desk_store
from ops.emulators.zoho_desk import ZohoDeskEmulator
from projections.catalog import Side
from tests.support.pipeline import Pipeline

QUICK = Backoff(base=0.05, cap=0.2)


class Closable(Protocol):
    async def close(self) -> None: ...


@asynccontextmanager
async def hosted_pipeline(dsn: str, bootstrap: str, prefix: str, side: Side,
                          made: tuple[RemoteStore, Closable]) -> AsyncIterator[Pipeline]:
    """The pipeline with ``side`` the store ``made`` (a store and its client)."""
    store, client = made
    try:
        async with Pipeline(dsn, bootstrap, prefix, remote={side: store}) as pipe:
            yield pipe
    finally:
        await client.close()


def desk_pipeline(emulator: ZohoDeskEmulator, dsn: str, bootstrap: str, prefix: str,
                  *, poll_interval: float = 0.2) -> AbstractAsyncContextManager[Pipeline]:
    """Zoho Desk's emulator as the desk, polled every ``poll_interval``."""
    return hosted_pipeline(dsn, bootstrap, prefix, "desk", zoho_desk_store(
        emulator.options(), backoff=QUICK, poll_interval=poll_interval,
        first_window=dt.timedelta(hours=1)))
