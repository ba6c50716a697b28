"""The embedded broker outlives a terminal's Ctrl-C until the daemon stops it."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.runtime.embedded import EmbeddedBroker


def test_the_broker_is_out_of_the_terminals_process_group(tmp_path: Path) -> None:
    # Ctrl-C goes to the foreground process group: were the broker in the daemon's,
    # it would die at once, under the consumer still draining its batch.
    broker = EmbeddedBroker(tmp_path / "broker")
    broker.start()
    try:
        pid = int(broker.pid_file.read_text())
        assert os.getpgid(pid) != os.getpgrp()
    finally:
        broker.stop()
