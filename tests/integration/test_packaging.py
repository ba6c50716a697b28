"""The wheel carries the whole daemon: every module of its four packages (their
subpackages too: daemon.http, daemon.cli, projections.stores, adapters.zoho, …), the
migrations and the console's static files. Installing from the wheel, not the
checkout, is how `syncd` runs in production; the package list once named only the four
top-level packages, and the wheel held none of their subpackages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("daemon", "projections", "adapters", "migrations")


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    # Built from a copy of the sources alone: a checkout's build/ directory (left by an
    # earlier build) would lend the wheel files its configuration does not name.
    source = tmp_path / "source"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
         str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(path.relative_to(ROOT)) for package in PACKAGES
              for pattern in ("*.py", "*.sql", "static/*.js", "static/*.css")
              for path in (ROOT / package).rglob(pattern)
              if "__pycache__" not in path.parts}
    assert "daemon/http/console/static/console.js" in wanted
    assert "adapters/zoho/crm.py" in wanted
    assert wanted - held == set()
