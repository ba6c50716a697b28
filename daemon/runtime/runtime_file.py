"""``<data dir>/runtime.json``: how to reach the running daemon.

Written after start-up, removed on clean exit. It names addresses only; a
database password is redacted and no token is ever written here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.runtime.logs import redact


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    http: str
    broker: str
    database: str


def runtime_path(data_dir: Path) -> Path:
    return data_dir / "runtime.json"


def write_runtime(data_dir: Path, info: RuntimeInfo) -> Path:
    path = runtime_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = asdict(info) | {"database": redact(info.database)}
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_runtime(data_dir: Path) -> RuntimeInfo | None:
    try:
        data = json.loads(runtime_path(data_dir).read_text())
        return RuntimeInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_runtime(data_dir: Path) -> None:
    runtime_path(data_dir).unlink(missing_ok=True)
