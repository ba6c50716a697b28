"""The benchmark's peer scenario (ops/bench/peer.py) without services: the events' copy for
the peer, the JDBC URL, the skip without Java/Maven and the table row. The run itself:
tests/integration/test_bench_peer.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ops.bench import peer as pr
from ops.bench import scenarios
from ops.bench.cli import render


def test_envelope_keeps_the_event() -> None:
    """The peer's copy: the event's fields in Connect's JSON envelope, values as JSON text."""
    event = {"v": 1, "event_id": "e1", "source": "crm", "module": "contacts",
             "record_id": "7", "op": "update", "values": {"phone": "+33 1", "n": 2},
             "changed": None, "modified_at": "2026-01-01T00:00:00Z",
             "created_at": "2026-01-01T00:00:00Z", "origin": "user",
             "captured_at": "2026-01-01T00:00:01Z"}
    wrapped = json.loads(pr.envelope(json.dumps(event).encode()))
    assert wrapped["schema"] == pr.SCHEMA
    payload = wrapped["payload"]
    assert json.loads(payload.pop("values")) == event.pop("values")
    assert payload == event
    assert {f["field"] for f in pr.SCHEMA["fields"]} == set(wrapped["payload"]) | {"values"}


def test_jdbc_target_from_libpq_urls() -> None:
    url, user, password = pr.jdbc_target("postgresql://postgres:@/bench?host=/tmp/pg")
    assert url == ("jdbc:postgresql://localhost:5432/bench?socketFactory="
                   "org.newsclub.net.unix.AFUNIXSocketFactory$FactoryArg"
                   "&socketFactoryArg=/tmp/pg/.s.PGSQL.5432")
    assert (user, password) == ("postgres", "")
    assert pr.jdbc_target("postgresql://u:p%40ss@127.0.0.1:5433/db") == (
        "jdbc:postgresql://127.0.0.1:5433/db", "u", "p@ss")


def test_peer_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Java/Maven the peer is reported as skipped, saying why, not failed."""
    monkeypatch.setattr(pr, "unavailable", lambda: "java not found on PATH")
    env: Any = object()  # not touched when the tools are missing
    outcome = asyncio.run(scenarios.peer(env, 100))
    assert outcome == {"measured": False, "reason": "skipped: java not found on PATH"}


def test_render_peer_row() -> None:
    outcome = {"measured": True, "events_per_s": 2400, "peer_events_per_s": 1200,
               "syncd_to_peer": 2.0, "ratio": 0.1, "raw": {"sink_per_s": 24000},
               "targets": [{"figure": "syncd steady ÷ peer sink events/s", "value": 2.0,
                            "target": ">= 3 x", "unit": "x", "met": False}]}
    report = {"scenarios": {"peer": outcome}, "records": 100,
              "machine": {"cores": 2, "cpu": "x"}, "load_before": [0], "load_after": [0]}
    table = render(report)
    assert "syncd steady 2400 events/s, peer sink 1200 events/s, raw sink 24000" in table
    assert "NO" in table
