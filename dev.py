#!/usr/bin/env python3
"""The project's two commands, for a fresh machine with only Python 3.11+ and git.

    python3 dev.py run     create .venv, install, run the daemon on embedded services
    python3 dev.py test    create .venv, install the test tools, lint, type-check, test

Anything after the command is passed on (to ``syncd run`` or to pytest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"


def sh(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def install(extra: str) -> None:
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extra}]" if extra else "."
    sh(BIN / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
       "-e", spec)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "run":
        install("")
        os.execv(BIN / "syncd", [str(BIN / "syncd"), "run", "--demo", *rest])
    install("test")
    try:
        sh(BIN / "ruff", "check", "daemon", "projections", "adapters", "migrations", "tests",
           "dev.py")
        sh(BIN / "mypy")
        sh(BIN / "lint-imports")
        sh(BIN / "python", "-m", "pytest", *rest)
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
