"""Secrets never leak (logs, runtime.json, metrics, error bodies), and every log line
about a failed event carries its coordinates (OWN-04, issue 5 security)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from daemon.http.auth import sign
from daemon.runtime.logs import configure_logging
from tests.support.daemon import TOKENS, WEBHOOK_SECRET, running_daemon

PLANTED = "planted-Secret-7f3a9"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    user = netloc.split("@")[0].split(":")[0] or "postgres"
    host = netloc.split("@")[1] if "@" in netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def test_planted_secret_never_appears(database_url: str, kafka_bootstrap: str,
                                            topic_prefix: str, tmp_path: Path) -> None:
    """A password in the database URL, a presented token and a webhook body are never
    logged, written to runtime.json, exported as metrics or echoed in an error."""
    logs = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=logs)
    try:
        async with running_daemon(with_password(database_url, PLANTED), kafka_bootstrap,
                                  topic_prefix, tmp_path / "data") as daemon:
            await daemon.enable_sync()
            exposed: list[str] = []
            status, body = await daemon.call(
                "GET", "/api/v1/status", role=None,
                headers={"Authorization": f"Bearer {PLANTED}"})
            assert status == 401
            exposed.append(json.dumps(body))
            raw = json.dumps({"module": "contacts", "record_id": PLANTED, "op": "bogus",
                              "values": {}, "modified_at": "x"}).encode()
            now = int(time.time())
            status, body = await daemon.call(
                "POST", "/webhooks/desk", role=None, raw=raw,
                headers={"X-Syncd-Timestamp": str(now),
                         "X-Syncd-Signature": sign(WEBHOOK_SECRET.encode(), raw, now)})
            assert status == 400
            # A failing event: its log line names the event and where it came from.
            await daemon.pool.execute("INSERT INTO desk.contacts (first_name) VALUES ('x')")
            await daemon.wait_until("SELECT count(*) FROM sync.failures", 1)
            async with daemon.session.get(daemon.base + "/metrics") as response:
                metrics_text = await response.text()
            runtime = (tmp_path / "data" / "runtime.json").read_text()
    finally:
        configure_logging(level="info", fmt="console")
    text = logs.getvalue()
    for where, content in [("logs", text), ("runtime.json", runtime),
                           ("metrics", metrics_text), ("errors", "\n".join(exposed))]:
        assert PLANTED not in content, where
        for token in TOKENS.values():
            assert token not in content, where
        assert WEBHOOK_SECRET not in content, where
    assert "***" in runtime  # the password was there, redacted
    failed = [json.loads(line) for line in text.splitlines()
              if line.startswith("{") and '"event_failed"' in line]
    assert failed, "the failing event was logged"
    assert {"event_id", "source", "module", "topic", "partition", "offset",
            "reason"} <= failed[0].keys()
    assert failed[0]["partition"] is not None and failed[0]["reason"] == "mandatory field missing"
