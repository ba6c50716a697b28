"""dev.py's notes and the CLI's log level for one-shot commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import dev
from daemon.cli import cli
from daemon.runtime.logs import command_log_level


def test_dev_run_says_when_the_demo_seeding_will_be_skipped(tmp_path: Path) -> None:
    """`python3 dev.py run` on a data directory that already has a database says the demo
    data is not seeded again; on a fresh one it says nothing."""
    assert dev.demo_note(tmp_path) is None
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("16\n")
    note = dev.demo_note(tmp_path)
    assert note is not None and "nothing new is seeded" in note and str(tmp_path) in note


def test_one_shot_commands_log_warnings_unless_verbose() -> None:
    """`run` keeps the configured level; other commands log warnings unless --verbose."""
    assert command_log_level("info", "run") == "info"
    assert command_log_level("debug", "run") == "debug"
    assert command_log_level("info", "migrate") == "warning"
    assert command_log_level("info", "sync") == "warning"
    assert command_log_level("error", "replay") == "error"
    assert command_log_level("info", "migrate", verbose=True) == "info"
    assert command_log_level("debug", "migrate", verbose=True) == "debug"
    assert command_log_level("error", "migrate", verbose=True) == "info"


def test_chaos_without_psutil_names_the_tools_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m ops.chaos` and `python -m ops.chaos soak` without psutil refuse, naming
    the [tools] extra."""
    from ops.chaos.cli import chaos

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    for args in ([], ["soak"]):
        result = CliRunner().invoke(chaos, args, env={"SYNCD_DATA_DIR": "/nonexistent"})
        assert result.exit_code == 1, result.output
        assert "[tools]" in result.output and "psutil" in result.output


def test_the_daemon_ships_no_tooling_commands() -> None:
    """`syncd --help` lists no bench, chaos or soak: the tools run from a checkout
    (`python -m ops.bench`, `python -m ops.chaos`), and the product never imports them."""
    result = CliRunner().invoke(cli, ["--help"], env={"SYNCD_DATA_DIR": "/nonexistent"})
    assert result.exit_code == 0, result.output
    listed = set()
    commands = result.output.split("Commands:", 1)[1]
    for line in commands.splitlines():
        if line.startswith("  ") and line.strip():
            listed.add(line.split()[0])
    assert "run" in listed and "replay" in listed
    assert not listed & {"bench", "chaos", "soak"}, listed
    for name in ("bench", "chaos", "soak"):
        assert cli.get_command(click.Context(cli), name) is None


def test_the_tools_run_as_modules_from_the_repository_root() -> None:
    """`python -m ops.bench --help` and `python -m ops.chaos --help` answer from the root
    of a checkout, with every option the old `syncd bench|chaos|soak` had."""
    root = Path(__file__).resolve().parents[2]
    for module, options in (("ops.bench", ["--scenario", "--records", "--duration", "--json",
                                           "--config"]),
                            ("ops.chaos", ["--changes", "--kills", "--seed", "--two-replicas",
                                           "--json", "soak"])):
        shown = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root,
                               capture_output=True, text=True, timeout=60, check=True).stdout
        assert all(option in shown for option in options), (module, shown)
    shown = subprocess.run([sys.executable, "-m", "ops.chaos", "soak", "--help"], cwd=root,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--rate" in shown and "--minutes" in shown


def test_embedded_stop_logs_when_forgetting_the_server_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`EmbeddedPostgres.stop` no longer swallows a failure around pgserver's private
    cache without a word: it logs a warning with the error."""
    import structlog.testing
    from pgserver import _commands
    from pgserver.postgres_server import PostgresServer

    from daemon.runtime.embedded import EmbeddedPostgres

    class Broken(dict[Path, object]):
        def pop(self, *_args: object) -> object:
            raise KeyError("changed shape")

    postgres = EmbeddedPostgres(tmp_path)
    postgres.pgdata.mkdir()
    (postgres.pgdata / "postmaster.pid").write_text("1\n")
    monkeypatch.setattr(_commands, "pg_ctl", lambda *_a, **_k: "", raising=False)
    monkeypatch.setattr(PostgresServer, "_instances", Broken())
    with structlog.testing.capture_logs() as logs:
        postgres.stop()
    failed = [entry for entry in logs if entry["event"] == "embedded_postgres_forget_failed"]
    assert failed and failed[0]["log_level"] == "warning"
    assert "changed shape" in failed[0]["error"]
