"""The chaos harness restarts a replica that died instead of aborting, counts it in
``crashes_restarted`` (issue 13, part 7), and a rebuild that would change rows, or a run
that could not finish, is not ``ok``. Its model knows one-way mode (issue 13, part 1): a
desk edit made in one-way mode never reaches the CRM, and may be replaced on the desk."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.chaos.harness import (
    FAULTS,
    Driver,
    Figures,
    Replica,
    _choose_sync_type,
    _expected,
    _model,
    _pair_mismatches,
    _wait_ready,
)

SERVER = r'''
import http.server, json, pathlib, sys
data_dir = pathlib.Path(sys.argv[1])
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
(data_dir / "runtime.json").write_text(json.dumps({"http": f"127.0.0.1:{server.server_port}"}))
server.serve_forever()
'''


class FlakyReplica(Replica):
    """Dies at start-up the first ``crashes`` times (as a daemon did when started during
    a PostgreSQL restart), then serves /readyz."""

    def __init__(self, root: Path, crashes: int) -> None:
        super().__init__("replica-a", root, {})
        self.crashes = crashes
        self.starts = 0

    def start(self, **extra: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        if self.starts <= self.crashes:
            (self.data_dir / "daemon.log").write_text('{"event": "startup_failed"}\n')
            self.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        else:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(self.data_dir)])


async def test_a_replica_that_died_is_restarted_and_counted(tmp_path: Path) -> None:
    replica, figures = FlakyReplica(tmp_path, crashes=2), Figures()
    replica.start()
    try:
        await _wait_ready(replica, figures, timeout=30)
    finally:
        replica.kill()
    assert figures.crashes_restarted == 2 and replica.starts == 3
    assert "replica-a exited with 1 (restarted)" in figures.problems[0]


def test_figures_need_a_clean_rebuild_and_a_finished_run() -> None:
    assert not Figures().ok  # the dry-run rebuild did not run
    assert Figures(rebuild_changes=0).ok
    assert not Figures(rebuild_changes=3).ok
    assert not Figures(rebuild_changes=0, aborted="TimeoutError: replica-a not ready").ok


# -- the model with one-way mode (issue 13, part 1) ------------------------------------

class FakeConn:
    """Enough of a connection for the driver's creates and updates."""

    def __init__(self) -> None:
        self.ids = 0
        self.statements: list[str] = []

    async def fetchval(self, query: str, *args: object) -> int:
        self.statements.append(query)
        self.ids += 1
        return self.ids

    async def execute(self, query: str, *args: object) -> str:
        self.statements.append(query)
        return "UPDATE 1"


def one_way_pair() -> Driver:
    """Desk 1 / CRM 2, synced at p1 (desk) and f2, m3 (CRM); then, in one-way mode,
    the desk edits its phone to p9: the newest phone is a one-way desk edit."""
    driver = Driver(FakeConn(), random.Random(0))  # type: ignore[arg-type]
    driver.values[("desk", 1)] = {"first_name": "f0", "phone": "p1", "mobile": "m0"}
    driver.values[("crm", 2)] = {"first_name": "f2", "phone": "p0", "mobile": "m3"}
    driver.one_way_mode = True
    driver.set_desk(1, "phone", "p9")
    driver.one_way_mode = False
    return driver


SYNCED = {"first_name": "f2", "phone": "p1", "mobile": "m3"}


def test_a_one_way_desk_edit_is_newest_but_not_what_the_crm_must_hold() -> None:
    driver = one_way_pair()
    assert _expected(driver, 1, 2) == SYNCED | {"phone": "p9"}
    assert _model(driver, 1, 2) == {"first_name": ("f2", "f2"), "phone": ("p9", "p1"),
                                    "mobile": ("m3", "m3")}


def test_the_crm_holding_the_older_synced_value_passes_and_the_desk_may_hold_either() -> None:
    driver = one_way_pair()
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p9"}, SYNCED) == []
    # The CRM's next change of the record wrote its values to the desk.
    assert _pair_mismatches(driver, 1, 2, SYNCED, SYNCED) == []


def test_the_crm_holding_the_one_way_value_fails() -> None:
    driver = one_way_pair()
    one_way = SYNCED | {"phone": "p9"}
    assert _pair_mismatches(driver, 1, 2, one_way, one_way) == ["phone"]


def test_the_desk_holding_something_else_fails_and_other_fields_still_must_agree() -> None:
    driver = one_way_pair()
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p0"}, SYNCED) == ["phone"]
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p9", "mobile": "m0"},
                            SYNCED) == ["mobile"]


def test_a_later_edit_that_is_not_one_way_must_be_on_both_sides() -> None:
    driver = one_way_pair()
    driver.values[("crm", 2)]["phone"] = "p10"  # the CRM edits the phone afterwards
    newer = SYNCED | {"phone": "p10"}
    assert _pair_mismatches(driver, 1, 2, newer, newer) == []
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p9"}, newer) == ["phone"]
    driver = one_way_pair()
    driver.set_desk(1, "phone", "p11")  # a two-way desk edit: no longer one-way
    assert driver.one_way == {}
    newer = SYNCED | {"phone": "p11"}
    assert _pair_mismatches(driver, 1, 2, newer, newer) == []
    assert _pair_mismatches(driver, 1, 2, newer, SYNCED) == ["phone"]


def test_repeated_one_way_edits_keep_the_last_two_way_value() -> None:
    driver = one_way_pair()
    driver.one_way_mode = True
    driver.set_desk(1, "phone", "p12")
    assert driver.one_way == {(1, "phone"): "p1"}
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p12"}, SYNCED) == []
    assert _pair_mismatches(driver, 1, 2, SYNCED | {"phone": "p9"}, SYNCED) == ["phone"]


async def test_in_one_way_mode_the_driver_creates_on_the_crm_only() -> None:
    conn = FakeConn()
    driver = Driver(conn, random.Random(0))  # type: ignore[arg-type]
    driver.one_way_mode = True
    await driver.create("desk")
    await driver.update("desk")  # no desk record to update: it creates one, on the CRM
    assert driver.created == {"desk": [], "crm": [1, 2]}
    assert all("crm.contacts" in query for query in conn.statements)
    driver.one_way_mode = False
    await driver.create("desk")
    assert driver.created["desk"] == [3]


def test_the_fault_rotation_keeps_its_kills_and_switches_mode() -> None:
    first_eight = FAULTS[:8]  # what the short chaos run of the suite injects
    assert {"broker", "postgres", "relay", "zombie", "one_way"} <= set(first_eight)
    # A one-way fault makes a SIGKILL too.
    assert first_eight.count("kill") + first_eight.count("one_way") >= 4


class FakeService:
    """The integration store, as far as the switch uses it."""

    def __init__(self, calls: list[str], current: object) -> None:
        self.calls = calls
        self._current = current

    async def current(self) -> object:
        return self._current

    async def set_up(self, desk_portal: str, crm_org: str, *, by: str) -> None:
        self.calls.append(f"set_up {desk_portal} {crm_org} by {by}")

    async def choose_sync_type(self, sync_type: str, *, by: str) -> None:
        self.calls.append(f"choose {sync_type} by {by}")

    async def close(self) -> None:
        self.calls.append("close")


async def test_the_switch_is_retried_while_the_database_is_away(monkeypatch: Any) -> None:
    import psycopg

    from adapters.integration_store import IntegrationService

    calls: list[str] = []
    opened = 0

    async def open_(dsn: str, **_: object) -> FakeService:
        nonlocal opened
        opened += 1
        if opened <= 2:  # a PostgreSQL restart: the server shuts the connection down
            raise psycopg.OperationalError("terminating connection due to administrator command")
        return FakeService(calls, current=None if opened == 3 else object())

    monkeypatch.setattr(IntegrationService, "open", open_)
    await _choose_sync_type("postgresql://chaos", "crm_to_desk")
    assert opened == 3
    assert calls == ["set_up chaos-desk chaos-crm by chaos", "choose crm_to_desk by chaos",
                     "close"]
    calls.clear()
    await _choose_sync_type("postgresql://chaos", "two_way")  # set up already
    assert calls == ["choose two_way by chaos", "close"]


async def test_a_switch_that_never_gets_through_ends_the_run_with_a_reason(
        monkeypatch: Any) -> None:
    import psycopg

    from adapters.integration_store import IntegrationService

    async def open_(dsn: str, **_: object) -> FakeService:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(IntegrationService, "open", open_)
    with pytest.raises(RuntimeError, match="could not choose sync type crm_to_desk"):
        await _choose_sync_type("postgresql://chaos", "crm_to_desk", attempts=3)
