"""The Kafka-facing tests' broker matrix (issue 18): the embedded broker and a real
three-broker Apache Kafka cluster (tests/support/kafka_cluster.py).

A module opts in by overriding ``kafka_bootstrap`` with ``on_both_brokers``; its
cluster cases share the worker that runs the cluster (``xdist_group``)."""

from __future__ import annotations

import pytest

BROKERS = [pytest.param("embedded", id="embedded"),
           pytest.param("cluster", id="kafka-cluster",
                        marks=pytest.mark.xdist_group("kafka-cluster"))]


def on_both_brokers(kind: str, embedded: str, request: pytest.FixtureRequest) -> str:
    """The bootstrap servers of the broker kind a case runs on."""
    if kind == "embedded":
        return embedded
    return str(request.getfixturevalue("kafka_cluster").bootstrap)
