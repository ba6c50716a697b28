#!/usr/bin/env python3
"""The project's commands, for a fresh machine with only Python 3.11+ and git.

    python3 dev.py run     create .venv, install the run lock, run the daemon on embedded services
    python3 dev.py run --remote   the same between emulated Zoho CRM and Desk (ops/demo_remote.py)
    python3 dev.py test    create .venv, install the test lock, lint, type-check, test
    python3 dev.py lock    refresh requirements/run.txt and requirements/test.txt

Anything after ``run`` or ``test`` is passed on (to ``syncd run`` or to pytest).

The locks pin every package, direct or not, to one exact version:
``requirements/run.txt`` holds the ``[project]`` dependencies, ``requirements/test.txt``
those plus the ``[test]`` extra. ``run`` and ``test`` install them with plain pip
(``pip install -r``), then the project itself with ``--no-deps``, so CI tests exactly
the versions in the lock. After changing the dependencies in ``pyproject.toml``:

    python3 dev.py lock              keep the versions .venv has, add what is new
    python3 dev.py lock --upgrade    resolve the newest versions pyproject.toml allows

then ``python3 dev.py test`` (it installs the new lock) and commit ``requirements/``.
Refreshing needs uv (from PyPI, pinned below); dev.py installs it in a venv of
its own under ``.venv/.lock-tools``. Installing from the locks needs only pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
LOCKS = ROOT / "requirements"
RUN_LOCK = LOCKS / "run.txt"
TEST_LOCK = LOCKS / "test.txt"
LOCK_COMMAND = "python3 dev.py lock"
UV = "uv==0.13.8"
LOCK_TOOLS = VENV / ".lock-tools"
PIP = ("-m", "pip", "--disable-pip-version-check")


def sh(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def ensure_venv() -> None:
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)


def install(lock: Path) -> None:
    """The exact versions of ``lock``, then the project itself (editable), without deps."""
    ensure_venv()
    sh(BIN / "python", *PIP, "install", "--quiet", "-r", lock.relative_to(ROOT))
    sh(BIN / "python", *PIP, "install", "--quiet", "--no-deps", "-e", ".")


def data_dir() -> Path:
    """The daemon's data directory as ``syncd run`` will see it (SYNCD_DATA_DIR or .syncd)."""
    return (ROOT / os.environ.get("SYNCD_DATA_DIR", ".syncd")).resolve()


def demo_note(directory: Path) -> str | None:
    """What to tell before ``run --demo`` on a data directory that already has a database:
    the demo seeding fills empty stores only, so it will do nothing there."""
    if not (directory / "pg" / "PG_VERSION").exists():
        return None
    return (f"note: {directory} already holds a database; the demo data is seeded only into"
            " empty stores, so rows from an earlier run are kept and nothing new is seeded"
            f" (to start over: stop syncd, then rm -rf {directory})")


def parallel(args: list[str]) -> list[str]:
    """Two pytest workers (one per core of the machines this runs on), each with its
    embedded services, unless the caller chose (``-n``, ``-p no:xdist``); the tests of
    one ``xdist_group`` (the heavy harness runs, the real cluster's) share a worker."""
    chosen = any(a == "-n" or a.startswith("-n") or a.startswith("--numprocesses")
                 or a == "no:xdist" for a in args)
    workers = min(2, os.cpu_count() or 1)
    return [] if chosen or workers < 2 else ["-n", str(workers), "--dist", "loadgroup"]


def lock(upgrade: bool) -> int:
    """Compile both locks with uv, keeping the versions .venv has unless ``upgrade``."""
    if not (LOCK_TOOLS / "bin" / "uv").exists():
        venv.EnvBuilder(with_pip=True).create(LOCK_TOOLS)
        sh(LOCK_TOOLS / "bin" / "python", *PIP, "install", "--quiet", UV)
    LOCKS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "venv-versions.txt"
        pinned = ""
        if not upgrade and (BIN / "python").exists():
            pinned = subprocess.run(
                [str(BIN / "python"), *PIP, "freeze", "--exclude-editable"],
                check=True, capture_output=True, text=True).stdout
        constraints.write_text(pinned)
        for target, extras in ((RUN_LOCK, ()), (TEST_LOCK, ("test",))):
            extra_args = [arg for extra in extras for arg in ("--extra", extra)]
            sh(LOCK_TOOLS / "bin" / "uv", "pip", "compile", "pyproject.toml", *extra_args,
               "--universal", "--python-version", "3.11", "--constraint", constraints,
               "--custom-compile-command", LOCK_COMMAND, "--quiet",
               "--output-file", target.relative_to(ROOT))
            _drop_constraint_notes(target, constraints)
    return 0


def _drop_constraint_notes(target: Path, constraints: Path) -> None:
    """uv names the (temporary) constraints file as a reason for each pin: leave it out."""
    lines = [line for line in target.read_text().splitlines()
             if line.strip() not in (f"#   -c {constraints}", f"# via -c {constraints}")]
    target.write_text("\n".join(lines).replace(f"-c {constraints}, ", "") + "\n")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test", "lock"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "lock":
        if rest not in ([], ["--upgrade"]):
            print("usage: python3 dev.py lock [--upgrade]", file=sys.stderr)
            return 2
        return lock(upgrade=bool(rest))
    if command == "run" and "--remote" in rest:
        install(RUN_LOCK)
        rest.remove("--remote")
        os.chdir(ROOT)  # ``ops`` is the repository's, not installed
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "ops.demo_remote", *rest])
    if command == "run":
        install(RUN_LOCK)
        note = demo_note(data_dir())
        if note:
            print(note, file=sys.stderr, flush=True)
        os.execv(BIN / "syncd", [str(BIN / "syncd"), "run", "--demo", *rest])
    install(TEST_LOCK)
    try:
        sh(BIN / "ruff", "check", "daemon", "projections", "adapters", "migrations", "ops",
           "tests", "dev.py")
        sh(BIN / "mypy")
        sh(BIN / "lint-imports")
        sh(BIN / "python", "-m", "pytest", *parallel(rest), *rest)
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
