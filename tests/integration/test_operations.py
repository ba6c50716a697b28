"""OPS-01…OPS-05 through the admin API of a running daemon on the embedded services."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.kafka import make_producer
from daemon.http.auth import sign
from tests.support.daemon import WEBHOOK_SECRET, RunningDaemon, running_daemon


@pytest.fixture
async def daemon(database_url: str, kafka_bootstrap: str, topic_prefix: str,
                 tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(database_url, kafka_bootstrap, topic_prefix,
                              tmp_path / "data") as running:
        await running.enable_sync()
        yield running


async def wait_state(daemon: RunningDaemon, state: str) -> None:
    for _ in range(50):
        _, body = await daemon.call("GET", "/api/v1/status", role="viewer")
        if body["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"state never became {state}")


async def wait_followed(daemon: RunningDaemon, answer: dict[str, object]) -> None:
    """Until the daemon runs with a config that includes the change ``answer`` (a
    command's response, the integration at its ``position``) came from."""
    wanted = answer["position"]
    assert isinstance(wanted, int) and wanted > 0
    for _ in range(200):
        _, status = await daemon.call("GET", "/api/v1/status", role="viewer")
        if status["config_position"] >= wanted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the daemon never followed the integration to {wanted}")


async def test_roles_are_enforced_and_refusals_change_nothing(daemon: RunningDaemon) -> None:
    """No token is 401, the wrong role 403; each role may do what it should, nothing more."""
    assert (await daemon.call("GET", "/api/v1/status", role=None))[0] == 401
    assert (await daemon.call("GET", "/api/v1/status", role="viewer"))[0] == 200
    assert (await daemon.call("POST", "/api/v1/integration/pause", role="viewer"))[0] == 403
    assert (await daemon.call("PUT", "/api/v1/integration/sync-type", role="operator",
                              body={"sync_type": "crm_to_desk"}))[0] == 403
    assert (await daemon.call("POST", "/api/v1/failures/retry", role="viewer",
                              body={"all": True}))[0] == 403
    _, audit = await daemon.call("GET", "/api/v1/integration/audit", role="viewer")
    assert [entry["what"] for entry in audit] == ["set_up", "sync_type_chosen"]
    assert (await daemon.call("POST", "/api/v1/integration/pause", role="operator"))[0] == 200
    assert (await daemon.call("POST", "/api/v1/integration/resume", role="operator"))[0] == 200


async def test_malformed_bodies_are_400_naming_the_field(daemon: RunningDaemon) -> None:
    """A bad body gets 400 with the field that is wrong, never a 500."""
    status, body = await daemon.call("PUT", "/api/v1/integration/sync-type",
                                     body={"sync_type": "sideways"})
    assert status == 400 and "sync_type" in body["error"]["message"]
    status, body = await daemon.call("PUT", "/api/v1/integration/products-department",
                                     raw=b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_body"
    status, body = await daemon.call("PUT", "/api/v1/integration/mapping/contacts",
                                     body={"entries": [{"desk": "nope", "crm": "email"}]})
    assert status == 409 and body["error"]["code"] == "invalid_mapping"
    assert "nope" in body["error"]["message"]
    status, body = await daemon.call("GET", "/api/v1/failures?limit=many", role="viewer")
    assert status == 400


async def test_pause_then_resume_applies_every_change_once(daemon: RunningDaemon) -> None:
    """OPS-01: while paused 1,000 changes are captured and logged but not written; on
    resume every one is applied once; the audit trail names who paused and when."""
    assert (await daemon.call("POST", "/api/v1/integration/pause", role="operator"))[0] == 200
    await wait_state(daemon, "paused")
    await daemon.pool.execute("INSERT INTO desk.contacts (last_name, email) SELECT 'd' || g,"
                              " 'd' || g || '@desk.example' FROM generate_series(1, 500) g")
    await daemon.pool.execute("INSERT INTO crm.contacts (last_name, email) SELECT 'c' || g,"
                              " 'c' || g || '@crm.example' FROM generate_series(1, 500) g")
    await daemon.wait_until("SELECT count(*) FROM syncd.event_log", 1000)
    assert await daemon.pool.fetchval("SELECT count(*) FROM crm.contacts") == 500
    assert await daemon.pool.fetchval("SELECT count(*) FROM sync.links") == 0
    assert await daemon.pool.fetchval("SELECT count(*) FROM sync.deferred") == 1000
    assert (await daemon.call("POST", "/api/v1/integration/resume", role="operator"))[0] == 200
    await daemon.wait_until("SELECT count(*) FROM sync.links", 1000)
    await daemon.wait_until("SELECT count(*) FROM sync.deferred", 0)
    assert await daemon.pool.fetchval("SELECT count(*) FROM crm.contacts") == 1000
    assert await daemon.pool.fetchval("SELECT count(*) FROM desk.contacts") == 1000
    assert await daemon.pool.fetchval("SELECT sum(added) FROM sync.history") == 1000
    _, audit = await daemon.call("GET", "/api/v1/integration/audit", role="viewer")
    paused = [entry for entry in audit if entry["what"] == "paused"]
    assert paused and paused[0]["who"] == "ops" and paused[0]["when"]


async def test_webhook_signature_and_window(daemon: RunningDaemon) -> None:
    """OPS: unsigned, wrongly signed, stale or malformed webhooks produce nothing; a good
    one becomes a change event through the durable outbox."""
    body = json.dumps({"module": "contacts", "record_id": "w1", "op": "create",
                       "values": {"last_name": "Hook"},
                       "modified_at": "2026-11-25T10:00:00Z"}).encode()
    now = int(time.time())
    good = {"X-Syncd-Timestamp": str(now), "X-Syncd-Signature": sign(WEBHOOK_SECRET.encode(),
                                                                      body, now)}
    refused = [
        ({}, 401),
        ({"X-Syncd-Timestamp": str(now), "X-Syncd-Signature": "sha256=" + "0" * 64}, 401),
        ({"X-Syncd-Timestamp": str(now - 3600),
          "X-Syncd-Signature": sign(WEBHOOK_SECRET.encode(), body, now - 3600)}, 401),
    ]
    for headers, expected in refused:
        status, _ = await daemon.call("POST", "/webhooks/desk", role=None, raw=body,
                                      headers=headers)
        assert status == expected
    bad = b'{"module": "contacts"}'
    status, _ = await daemon.call(
        "POST", "/webhooks/crm", role=None, raw=bad,
        headers={"X-Syncd-Timestamp": str(now),
                 "X-Syncd-Signature": sign(WEBHOOK_SECRET.encode(), bad, now)})
    assert status == 400
    assert await daemon.pool.fetchval(
        "SELECT count(*) FROM syncd.event_log WHERE record_id = 'w1'") == 0
    status, answer = await daemon.call("POST", "/webhooks/desk", role=None, raw=body,
                                       headers=good)
    assert status == 202
    await daemon.wait_until(
        f"SELECT count(*) FROM syncd.event_log WHERE event_id = '{answer['event_id']}'", 1)
    status, _ = await daemon.call("POST", "/webhooks/desk", role=None, raw=body,
                                  headers=good)
    assert status == 202  # a sender's retry without an event id is a new notification


async def test_failures_of_each_reason_then_retry_after_the_fix(
        daemon: RunningDaemon, kafka_bootstrap: str, topic_prefix: str) -> None:
    """OPS-04: each reason lands in the failure log and the history's failed count; a
    retry after the cause was fixed resolves the entry and counts in history."""
    mapping = [{"desk": "last_name", "crm": "last_name"}, {"desk": "email", "crm": "email"},
               {"desk": "custom.size", "desk_type": "integer",
                "crm": "custom.size", "crm_type": "integer"}]
    status, changed = await daemon.call("PUT", "/api/v1/integration/mapping/contacts",
                                        body={"entries": mapping})
    assert status == 200
    await wait_followed(daemon, changed)
    await daemon.pool.execute(
        "INSERT INTO crm.contacts (last_name, email) VALUES ('A', 'twin@x.com'),"
        " ('B', 'twin@x.com'), ('C', 'taken@x.com')")
    await daemon.wait_until("SELECT count(*) FROM crm.outbox", 0)
    await daemon.pool.execute(
        "INSERT INTO desk.contacts (first_name) VALUES ('no last name')")
    await daemon.pool.execute(
        "INSERT INTO desk.contacts (last_name, custom) VALUES ('T', '{\"size\": \"big\"}')")
    await daemon.pool.execute(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('D', 'taken@x.com')")
    await daemon.pool.execute(
        "INSERT INTO desk.contacts (last_name, email) VALUES ('E', 'TWIN@x.com')")
    producer = make_producer(kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{topic_prefix}.events", b'{"v": 1, "source": "desk"}',
                                     key=b"bad")
    finally:
        await producer.stop()
    await daemon.wait_until("SELECT count(*) FROM desk.outbox", 0)
    _, listed = await daemon.call("GET", "/api/v1/failures", role="viewer")
    reasons = sorted(f["reason"] for f in listed["failures"])
    assert reasons == sorted([
        "more than one matching record", "mandatory field missing",
        "text value given for an integer field",
        # the second CRM twin meets the desk copy of the first; and desk D meets C
        "the CRM id is already mapped to another desk entity",
        "the CRM id is already mapped to another desk entity",
        "incorrect parameter or value"])
    _, history = await daemon.call("GET", "/api/v1/history", role="viewer")
    assert sum(day["failed"] for day in history["days"]) == 5  # the bad message has no time
    # The cause: the size field is text on the desk. Fix the mapping, then retry.
    mapping[2] = {"desk": "custom.size", "desk_type": "text",
                  "crm": "custom.size_label", "crm_type": "text"}
    status, changed = await daemon.call("PUT", "/api/v1/integration/mapping/contacts",
                                        body={"entries": mapping})
    assert status == 200
    await wait_followed(daemon, changed)
    status, result = await daemon.call("POST", "/api/v1/failures/retry", role="operator",
                                       body={"reason": "text value given for an integer field"})
    assert status == 200 and result["retried"] == 1
    await daemon.wait_until(
        "SELECT status FROM sync.failures WHERE reason = 'text value given for an integer field'",
        "resolved")
    assert await daemon.pool.fetchval(
        "SELECT custom->>'size_label' FROM crm.contacts WHERE last_name = 'T'") == "big"
    _, history = await daemon.call("GET", "/api/v1/history", role="viewer")
    assert sum(day["added"] for day in history["days"] if day["direction"] == "desk_to_crm") == 1
