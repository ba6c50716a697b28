"""The daemon as a person runs it: a subprocess on the embedded services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.runtime.embedded import EmbeddedPostgres, free_port

# One worker runs the harness-sized runs one after the other (dev.py runs two
# pytest workers): side by side on two cores their timings would be each other's.
pytestmark = pytest.mark.xdist_group("heavy")


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "SYNCD_DATA_DIR": str(data_dir),
        "SYNCD_HTTP_LISTEN": f"127.0.0.1:{port}",
        "SYNCD_SHUTDOWN_DEADLINE": "10",
        "SYNCD_LOG_FORMAT": "json",
    }
    env.pop("SYNCD_DATABASE_URL", None)
    env.pop("SYNCD_KAFKA_BOOTSTRAP", None)
    log = open(data_dir.parent / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env,
                            stdout=log, stderr=log)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.poll() is None, f"daemon exited with {proc.returncode}"
        try:
            status, _ = get(f"http://127.0.0.1:{port}/readyz")
            if status == 200:
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError("daemon not ready in time")


def terminate(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    return code, time.monotonic() - started


def test_start_ready_stop_kill_restart(tmp_path: Path) -> None:
    """Ready within 60 s; readiness names the database when it stops; SIGTERM exits 0
    within the deadline; after kill -9 the same command starts cleanly again."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    proc = start(data_dir, port)
    try:
        wait_ready(port, proc)
        runtime = json.loads((data_dir / "runtime.json").read_text())
        assert runtime["pid"] == proc.pid
        assert runtime["http"] == f"127.0.0.1:{port}"
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body == {"status": "ok"}

        EmbeddedPostgres(data_dir.resolve()).stop()  # the database goes away under it
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert "database" in body["failing"]  # type: ignore[operator]

        code, took = terminate(proc)
        assert code == 0 and took < 10
        assert not (data_dir / "runtime.json").exists()

        proc = start(data_dir, port)
        wait_ready(port, proc)
        proc.kill()  # SIGKILL: stale pid files, a running postmaster, a bound port
        proc.wait()
        proc = start(data_dir, port)
        wait_ready(port, proc)
        code, took = terminate(proc)
        assert code == 0 and took < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        EmbeddedPostgres(data_dir.resolve()).stop()


def test_systemd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    """Under systemd (Type=notify) the daemon sends READY=1, then WATCHDOG=1, then
    STOPPING=1 on SIGTERM, over the notify socket."""
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    os.environ["NOTIFY_SOCKET"] = str(sock_path)
    os.environ["WATCHDOG_USEC"] = "2000000"
    try:
        proc = start(data_dir, port)
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ("READY=1" in seen and
                                                    seen.count("WATCHDOG=1") >= 1 and
                                                    seen.index("READY=1") < len(seen) - 1):
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                assert proc.poll() is None
        code, _ = terminate(proc)
        end = time.monotonic() + 5
        while time.monotonic() < end and "STOPPING=1" not in seen:
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        EmbeddedPostgres(data_dir.resolve()).stop()
    assert code == 0
    ready = seen.index("READY=1")
    assert "WATCHDOG=1" in seen
    assert "STOPPING=1" in seen[ready:]
