"""Session fixtures of the real services: ``kafka_cluster`` (Apache Kafka, three KRaft
nodes) and ``system_postgres`` (Debian's PostgreSQL server).

Each starts once per session, and only when a test asks for it. Without Java and
Maven (or PostgreSQL's server binaries) the tests that need them skip, saying
why; under CI (``CI`` set to anything non-empty) a missing tool fails them instead,
so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.support.kafka_cluster import KafkaCluster, fetch_jars, missing_tools
from tests.support.system_postgres import SystemPostgres, missing_server


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Kafka nodes (broker and controller each) on loopback, for the session."""
    _require(missing_tools())
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), jars=fetch_jars())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def system_postgres() -> Iterator[SystemPostgres]:
    """A PostgreSQL server of the system's packages, with its owner role, database and
    the daemon's least-privilege role; databases from ``create_database``."""
    _require(missing_server())
    server = SystemPostgres()
    server.start()
    try:
        asyncio.run(server.create_roles())
        yield server
    finally:
        server.stop()
