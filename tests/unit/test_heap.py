"""The daemon's garbage-collector settings (``daemon.runtime.heap``): a batch's worth of
live objects no longer sets off collections that walk them again and again, and
``syncd run`` and ``syncd replay`` settle the heap before they work."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.runtime import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test process's collector as it was, whatever a test settles."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _collections_while_holding(count: int) -> list[int]:
    """Collections by generation while ``count`` small containers are made and held,
    as a batch holds its events' values until it commits."""
    before = [generation["collections"] for generation in gc.get_stats()]
    held = [{"email": f"person{i}@example.com", "fields": [i]} for i in range(count)]
    after = [generation["collections"] for generation in gc.get_stats()]
    del held
    return [a - b for a, b in zip(after, before, strict=True)]


@pytest.mark.usefixtures("restored_collector")
def test_a_batch_of_live_objects_is_walked_a_few_times_not_hundreds() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    default = _collections_while_holding(100_000)
    heap.settle()
    settled = _collections_while_holding(100_000)
    assert default[0] > 100, default  # a young collection every 700 net allocations
    assert settled[0] <= 2 and settled[1] == 0 and settled[2] == 0, settled
    assert gc.get_freeze_count() > 0  # what existed is never walked again
    assert gc.get_threshold()[0] == heap.YOUNG_COLLECTION_AFTER


def test_syncd_run_settles_the_heap_before_the_daemon_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def daemon_run(*_args: Any, **_kwargs: Any) -> int:
        calls.append("daemon")
        return 0

    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle"))
    monkeypatch.setattr("daemon.app.run", daemon_run)
    monkeypatch.setenv("SYNCD_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 0, result.output
    assert calls == ["settle", "daemon"]


def test_syncd_replay_settles_the_heap_before_it_rebuilds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def replay_main(*_args: Any, **_kwargs: Any) -> tuple[int, list[Any]]:
        calls.append("replay")
        return 0, []

    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle"))
    # The module (``daemon.cli.replay`` as an attribute is the command).
    monkeypatch.setattr(importlib.import_module("daemon.cli.replay"), "_main", replay_main)
    result = CliRunner().invoke(cli, ["replay", "--projection", "all"])
    assert result.exit_code == 0, result.output
    assert calls == ["settle", "replay"]
