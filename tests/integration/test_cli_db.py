"""`syncd db start|url|psql|stop`: the embedded PostgreSQL on its own, beside the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.runtime.embedded import EmbeddedPostgres, free_port
from tests.integration.test_daemon import start as start_daemon
from tests.integration.test_daemon import terminate, wait_ready

# One worker runs the harness-sized runs one after the other (dev.py runs two
# pytest workers): side by side on two cores their timings would be each other's.
pytestmark = pytest.mark.xdist_group("heavy")


def db(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SYNCD_DATA_DIR": str(data_dir), "SYNCD_LOG_FORMAT": "json"}
    env.pop("SYNCD_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "daemon", "db", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_start_url_psql_stop(tmp_path: Path) -> None:
    """start returns once it accepts connections; url and psql -c reach it; a second
    start says it runs; stop stops it; then psql says how to start it."""
    data_dir = tmp_path / "data"
    postgres = EmbeddedPostgres(data_dir.resolve())
    try:
        missing = db(data_dir, "psql", "-c", "SELECT 1")
        assert missing.returncode == 1
        assert "run `syncd db start` or `syncd run`" in missing.stderr

        started = db(data_dir, "start")
        assert started.returncode == 0, started.stderr
        assert "started PostgreSQL" in started.stdout
        assert postgres.running() and postgres.claimed()
        url = db(data_dir, "url")
        assert url.returncode == 0 and url.stdout.strip() == postgres.uri()
        assert url.stdout.startswith("postgresql://")

        psql = db(data_dir, "psql", "-tA", "-c", "SELECT 40 + 2")
        assert psql.returncode == 0, psql.stderr
        assert psql.stdout.strip() == "42"

        pid = postgres.postmaster_pid()
        again = db(data_dir, "start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert "started by `syncd db start`" in again.stdout
        assert postgres.postmaster_pid() == pid

        stopped = db(data_dir, "stop")
        assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
        assert not postgres.running()
        assert db(data_dir, "url").returncode == 1
        assert db(data_dir, "stop").stdout.strip() == "not running"
    finally:
        postgres.stop()


def test_daemon_uses_db_start_server_and_leaves_it_running(tmp_path: Path) -> None:
    """A daemon started beside `db start` uses that server; `db stop` refuses while the
    daemon runs; the daemon leaves the server running when it exits. A `db start` while
    the daemon runs on its own server starts no second one, and that one stops with it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    postgres = EmbeddedPostgres(data_dir.resolve())
    port = free_port()
    proc = None
    try:
        assert db(data_dir, "start").returncode == 0
        pid = postgres.postmaster_pid()
        proc = start_daemon(data_dir, port)
        wait_ready(port, proc)
        assert postgres.postmaster_pid() == pid
        refused = db(data_dir, "stop")
        assert refused.returncode == 1 and f"the daemon (pid {proc.pid})" in refused.stderr
        assert postgres.postmaster_pid() == pid
        code, _ = terminate(proc)
        assert code == 0
        assert postgres.postmaster_pid() == pid  # still up: `db start` owns it
        assert db(data_dir, "psql", "-tA", "-c", "SELECT 1").stdout.strip() == "1"
        assert db(data_dir, "stop").returncode == 0
        assert not postgres.running()

        proc = start_daemon(data_dir, port)
        wait_ready(port, proc)
        pid = postgres.postmaster_pid()
        beside = db(data_dir, "start")
        assert beside.returncode == 0
        assert f"the daemon's (pid {proc.pid})" in beside.stdout
        assert postgres.postmaster_pid() == pid and not postgres.claimed()
        assert db(data_dir, "stop").returncode == 1
        code, _ = terminate(proc)
        assert code == 0
        assert not postgres.running()  # the daemon's own server stops with it
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        postgres.stop()
