from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.runtime.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its path."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield sock, path


def drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued on ``sock``, in arrival order."""
    sock.setblocking(False)
    received: list[str] = []
    while True:
        try:
            received.append(sock.recv(4096).decode())
        except BlockingIOError:
            return received


async def test_ready_watchdog_stopping_arrive_in_order(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """READY=1, then WATCHDOG=1 pings from watchdog_loop, then STOPPING=1 reach the socket."""
    sock, path = notify_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def receive() -> str:
        # Read while the loop pings: the socket's small receive queue would overflow.
        return (await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)).decode()

    notifier = Notifier(path)
    stop = asyncio.Event()
    notifier.ready()
    assert await receive() == "READY=1"
    pinger = asyncio.create_task(notifier.watchdog_loop(stop, interval=0.01))
    assert [await receive(), await receive()] == ["WATCHDOG=1", "WATCHDOG=1"]
    stop.set()
    await asyncio.wait_for(pinger, 1)
    notifier.stopping()
    *late_pings, last = drain(sock)
    assert set(late_pings) <= {"WATCHDOG=1"}
    assert last == "STOPPING=1"


async def test_watchdog_loop_exits_promptly_on_stop(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """watchdog_loop returns as soon as stop is set, not at the end of its interval."""
    _sock, path = notify_socket
    stop = asyncio.Event()
    loop_task = asyncio.create_task(Notifier(path).watchdog_loop(stop, interval=3600))
    await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(loop_task, 1)


async def test_lifecycle_sends_ready_once_ready_then_stopping_on_stop(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """lifecycle sends READY=1 only after the ready event, and STOPPING=1 once stop is set."""
    sock, path = notify_socket
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(Notifier(path).lifecycle(stop, ready=ready))
    await asyncio.sleep(0.02)
    assert "READY=1" not in drain(sock)
    ready.set()
    await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 1)
    states = [m for m in drain(sock) if not m.startswith("STATUS=")]
    assert states == ["READY=1", "STOPPING=1"]


async def test_lifecycle_stopped_before_ready_never_sends_ready(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """A daemon stopped before it became ready says STOPPING=1 and never READY=1."""
    sock, path = notify_socket
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(Notifier(path).lifecycle(stop, ready=asyncio.Event()), 1)
    assert [m for m in drain(sock) if not m.startswith("STATUS=")] == ["STOPPING=1"]


def test_status_is_one_line(notify_socket: tuple[socket.socket, str]) -> None:
    """A multi-line status is sent as one STATUS= assignment."""
    sock, path = notify_socket
    Notifier(path).status("catching up\n3 partitions")
    assert drain(sock) == ["STATUS=catching up 3 partitions"]


def test_abstract_socket_address() -> None:
    """A NOTIFY_SOCKET starting with @ names a socket in the abstract namespace."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        Notifier(f"@{name}").ready()
        assert drain(sock) == ["READY=1"]


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:9"}])
async def test_disabled_notifier_is_a_no_op(environ: dict[str, str]) -> None:
    """Without a usable NOTIFY_SOCKET every call does nothing and the loop still ends on stop."""
    notifier = Notifier.from_environ(environ)
    assert not notifier.enabled
    notifier.ready()
    notifier.status("anything")
    notifier.stopping()
    assert notifier.send("WATCHDOG=1") is False
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(notifier.watchdog_loop(stop, interval=0.01), 1)


def test_send_failure_is_logged_not_raised(tmp_path: Path) -> None:
    """A socket that is gone makes send log sd_notify_failed and return False."""
    notifier = Notifier(str(tmp_path / "missing.sock"))
    assert notifier.enabled
    with capture_logs() as logs:
        assert notifier.send("READY=1") is False
        notifier.watchdog()
    failed = [e for e in logs if e["event"] == "sd_notify_failed"]
    assert [e["message"] for e in failed] == ["READY=1", "WATCHDOG=1"]


def test_from_environ_reads_notify_socket(notify_socket: tuple[socket.socket, str]) -> None:
    """from_environ uses NOTIFY_SOCKET from the given mapping."""
    sock, path = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.watchdog()
    assert drain(sock) == ["WATCHDOG=1"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], expected: float | None,
) -> None:
    """The ping interval is half WATCHDOG_USEC in seconds; None when unset, bad or not ours."""
    assert Notifier.watchdog_interval(environ) == expected
