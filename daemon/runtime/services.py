"""Which PostgreSQL and Kafka this process talks to: configured, or embedded.

Configured services are used as they are and nothing is started; missing
ones are started embedded under the data directory and stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from daemon.runtime.embedded import EmbeddedBroker, EmbeddedPostgres
from daemon.runtime.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class Services:
    dsn: str
    bootstrap: str
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, need_broker: bool = True,
                        stop_adopted: bool = True) -> AsyncIterator[Services]:
    """Yield reachable services, starting embedded ones where none is configured.

    ``stop_adopted=False`` leaves an embedded PostgreSQL running if it was
    already running before (a one-shot command beside a running daemon). A
    server that ``syncd db start`` started (or took over) is never stopped here:
    it runs until ``syncd db stop``.
    """
    data_dir = settings.data_dir.resolve()
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    stop_postgres = True
    try:
        if settings.database_url is None:
            postgres = EmbeddedPostgres(data_dir)
            stop_postgres = stop_adopted or not postgres.running()
            await asyncio.to_thread(postgres.start)
            dsn = postgres.dsn
        else:
            dsn = settings.database_url.get_secret_value()
        if settings.kafka_bootstrap is None and need_broker:
            broker = EmbeddedBroker(data_dir)
            await asyncio.to_thread(broker.start)
            bootstrap = broker.bootstrap
        else:
            bootstrap = settings.kafka_bootstrap or ""
        yield Services(dsn=dsn, bootstrap=bootstrap, postgres=postgres, broker=broker)
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if postgres is not None and stop_postgres:
            if postgres.claimed():
                log.info("embedded_postgres_left_running", pgdata=str(postgres.pgdata),
                         reason="started by `syncd db start`; `syncd db stop` stops it")
            else:
                await asyncio.to_thread(postgres.stop)
