"""Issue 13, part 7: a daemon started while its database (or broker) is away waits for
it — capped backoff, one log line per attempt and no traceback, ``/readyz`` 503 naming
what is missing, the API 503 ``starting`` — and comes up when it returns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from tests.integration.test_daemon import get

# One worker runs the harness-sized runs one after the other (dev.py runs two
# pytest workers): side by side on two cores their timings would be each other's.
pytestmark = pytest.mark.xdist_group("heavy")


def start(data_dir: Path, port: int, dsn: str, bootstrap: str, log: Path,
          **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")} | {
        "SYNCD_DATA_DIR": str(data_dir), "SYNCD_HTTP_LISTEN": f"127.0.0.1:{port}",
        "SYNCD_DATABASE_URL": dsn, "SYNCD_KAFKA_BOOTSTRAP": bootstrap,
        "SYNCD_TOPIC_PREFIX": "wait", "SYNCD_GROUP_ID": "wait", "SYNCD_PARTITIONS": "2",
        "SYNCD_SHUTDOWN_DEADLINE": "5", "SYNCD_LOG_FORMAT": "json"} | extra
    out = open(log, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env,
                            stdout=out, stderr=out)


def eventually(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes],
               timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"daemon exited with {proc.returncode} waiting for {what}"
        try:
            result = check()
        except (OSError, ValueError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(what)


def log_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def attempts(log: Path, what: str) -> list[dict[str, Any]]:
    return [e for e in log_lines(log)
            if e.get("event") == "dependency_unavailable" and e.get("what") == what]


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    return status, dict(body)


def test_a_start_while_the_database_and_broker_are_away_waits_for_them(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg")
    postgres.start()
    dsn = postgres.dsn  # the socket lives in the data directory: the same DSN after a restart
    postgres.stop()
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "daemon.log"
    data_dir.mkdir()
    proc = start(data_dir, port, dsn, broker.bootstrap, log)
    try:
        # The listener is up while the database is away; readiness names the database.
        status, body = eventually("/readyz", lambda: readyz(port), proc)
        assert status == 503, body
        assert "waiting for the database" in body["failing"]["database"] \
            or "connecting to the database" in body["failing"]["database"], body
        eventually("three attempts", lambda: len(attempts(log, "database")) >= 3, proc)
        status, body = readyz(port)
        assert status == 503 and "waiting for the database" in body["failing"]["database"]
        status, body = get(f"http://127.0.0.1:{port}/api/v1/status")
        assert status == 503 and body["error"]["code"] == "starting", body  # type: ignore[index]
        delays = [e["retry_in_s"] for e in attempts(log, "database")]
        assert all(0 < d <= 10 for d in delays), delays

        postgres.start()  # the database returns; now the broker is what is missing
        eventually("waiting for the broker", lambda: len(attempts(log, "broker")) >= 2, proc)
        status, body = readyz(port)
        assert status == 503 and "database" not in body["failing"], body
        assert "waiting for the broker" in body["failing"]["broker"], body

        broker.start()
        eventually("ready", lambda: readyz(port)[0] == 200, proc, timeout=90)
        events = log_lines(log)
        assert {e["what"] for e in events if e.get("event") == "dependency_available"} == {
            "database", "broker"}
        assert any(e.get("event") == "daemon_started" for e in events)
        assert all("exception" not in e for e in attempts(log, "database"))
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.stop()
        postgres.stop()


def test_a_stop_while_waiting_exits_cleanly_and_a_limit_gives_up(tmp_path: Path) -> None:
    """SIGTERM during the wait: exit 0 at once. ``SYNCD_STARTUP_WAIT``: exit 1 with one
    clear line, no traceback, once the limit is past."""
    nowhere_db = f"postgresql://syncd@127.0.0.1:{free_port()}/syncd"
    nowhere_broker = f"127.0.0.1:{free_port()}"
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "daemon.log"
    data_dir.mkdir()
    proc = start(data_dir, port, nowhere_db, nowhere_broker, log)
    try:
        eventually("two attempts", lambda: len(attempts(log, "database")) >= 2, proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 5
        assert not (data_dir / "runtime.json").exists()

        proc = start(data_dir, port, nowhere_db, nowhere_broker, log,
                     SYNCD_STARTUP_WAIT="3")
        assert proc.wait(timeout=30) == 1
        gave_up = [e for e in log_lines(log) if e.get("event") == "startup_failed"]
        assert len(gave_up) == 1 and "database" in gave_up[0]["error"], gave_up
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
