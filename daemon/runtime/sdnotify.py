"""Tell systemd how the daemon is doing, over its notify socket.

Under ``Type=notify`` systemd considers the unit started only once READY=1
arrives, so units ordered after ``syncd`` wait for a daemon that actually
consumes; with ``WatchdogSec=`` it restarts the unit when WATCHDOG=1 stops
arriving, which turns a hung event loop into a restart instead of a silent
stall. The protocol is one datagram per message on the AF_UNIX socket named
by ``NOTIFY_SOCKET``, small enough to speak here directly rather than pull in
libsystemd bindings. Without ``NOTIFY_SOCKET`` (a terminal, a container)
every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _socket_address(value: str | None) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):  # Linux abstract namespace: a leading NUL byte, no file
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd also knows vsock addresses; we never run in a VM guest that needs them.
    log.warning("sd_notify_unsupported_socket", notify_socket=value)
    return None


class Notifier:
    """Sends sd_notify messages; disabled (every call a no-op) without a socket."""

    def __init__(self, notify_socket: str | None) -> None:
        self._address = _socket_address(notify_socket)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @staticmethod
    def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of ``WATCHDOG_USEC``, or None if unset.

        Half, as sd_watchdog_enabled(3) advises, so one late ping is not fatal.
        ``WATCHDOG_PID`` naming another process means the watchdog is not ours.
        """
        env = os.environ if environ is None else environ
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and (not pid.isdigit() or int(pid) != os.getpid()):
            return None
        return int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> None:
        self.send("READY=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        # A newline would start a new KEY=value assignment in the datagram.
        self.send("STATUS=" + " ".join(text.splitlines()))

    def send(self, message: str) -> bool:
        """Send one datagram; return whether it went. Never raises into the daemon."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Non-blocking: a full receive queue must not stall the event loop.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as err:
            log.warning("sd_notify_failed", message=message, error=f"{type(err).__name__}: {err}")
            return False
        return True

    async def watchdog_loop(self, stop: asyncio.Event, *, interval: float) -> None:
        """Send WATCHDOG=1 every ``interval`` seconds until ``stop`` is set.

        The ping comes from the event loop itself, so a loop blocked by a
        synchronous call stops pinging and systemd restarts the unit.
        """
        while not stop.is_set():
            self.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def lifecycle(self, stop: asyncio.Event, *, ready: asyncio.Event) -> None:
        """Send READY=1 once ``ready`` is set, then STOPPING=1 as soon as ``stop`` is.

        A root task: it returns only after ``stop``, as the supervisor expects.
        """
        self.status("starting: waiting for the consumer to join its group")
        waiters = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if not stop.is_set():
            self.ready()
            self.status("running")
        await stop.wait()
        self.stopping()
        self.status("stopping: draining the batch in flight")
