"""Hypothesis fuzzes the webhook intake: whatever a signed sender posts, the answer is
202 with exactly one outbox row, or a 4xx with none — never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.http.auth import sign
from daemon.http.server import build_app
from tests.support.api import api_context

SECRET = b"fuzz-secret"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"module": st.sampled_from(["contacts", "accounts", "nope", ""]),
         "record_id": st.text(max_size=40),
         "op": st.sampled_from(["create", "update", "delete", "restore", "x"]),
         "values": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
         "modified_at": st.sampled_from(["2026-11-25T10:00:00Z", "2026-11-25T10:00:00",
                                         "yesterday", "0001-01-01T00:00:00+00:00"])},
        optional={"changed": st.lists(st.text(max_size=10), max_size=3),
                  "event_id": st.uuids().map(str)},
    ).map(lambda d: json.dumps(d).encode()),
)


class FakePool:
    """Counts the outbox inserts its connections are asked for."""

    def __init__(self) -> None:
        self.inserts = 0

    async def execute(self, query: str, *_args: Any) -> str:
        if query.lstrip().startswith("INSERT"):
            self.inserts += 1
        return "OK"

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakePool]:
        yield self


async def post(raw: bytes) -> tuple[int, int]:
    pool = FakePool()
    ctx = api_context(pool, integration=None, tokens={}, webhook_secrets={"desk": SECRET})
    app = build_app({}, api=ctx)
    now = int(time.time())
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/webhooks/desk", data=raw, headers={
            "X-Syncd-Timestamp": str(now), "X-Syncd-Signature": sign(SECRET, raw, now)})
        return response.status, pool.inserts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=bodies)
def test_signed_webhooks_never_error(raw: bytes) -> None:
    """Any signed body: 202 and one outbox row, or 400/413 and none; never a 500."""
    status, inserts = asyncio.run(post(raw))
    assert (status, inserts) in {(202, 1), (400, 0), (413, 0)}
