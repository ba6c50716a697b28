"""The dependency locks (requirements/) are in step with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SELF = canonicalize_name(PROJECT["name"])
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def pins(lock: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
        else:
            assert not line or line.startswith((" ", "#")), f"{lock}: not a pin: {line!r}"
    return found


def declared(*extras: str) -> list[Requirement]:
    """The project's requirements with these extras, following self-references."""
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == SELF:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


@pytest.mark.parametrize(("lock", "extras"), [("run.txt", ()), ("test.txt", ("test",))])
def test_every_declared_dependency_is_pinned_within_its_range(
        lock: str, extras: tuple[str, ...]) -> None:
    """Each dependency of pyproject.toml appears in the lock, at a version it allows;
    a dependency added without `python3 dev.py lock` fails here."""
    pinned = pins(lock)
    for req in declared(*extras):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not in requirements/{lock}: run python3 dev.py lock"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {req.name}=={pinned[name]}, outside {req.specifier}:"
            " run python3 dev.py lock")


def test_run_lock_holds_no_test_tool_and_test_lock_holds_the_run_lock() -> None:
    """The run lock is what the daemon needs; the test lock is that plus the test tools,
    at the same versions."""
    run, test = pins("run.txt"), pins("test.txt")
    for req in declared("test"):
        if req not in declared():
            name = canonicalize_name(req.name)
            if name != "psutil":  # pgserver needs it at run time too
                assert name not in run, f"{req.name} is a test tool but in the run lock"
    assert {name: test.get(name) for name in run} == run


def test_runtime_dependencies_leave_the_harness_tools_to_an_extra() -> None:
    """psutil serves the chaos and soak harnesses only: it is in the [tools] extra."""
    runtime = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert "psutil" not in runtime
    assert any(Requirement(r).name == "psutil"
               for r in PROJECT["optional-dependencies"]["tools"])


def test_locks_say_how_to_refresh_them_and_dev_py_documents_it() -> None:
    """Each lock names the refresh command, and dev.py's docstring gives it."""
    import dev

    for lock in ("run.txt", "test.txt"):
        assert dev.LOCK_COMMAND in (ROOT / "requirements" / lock).read_text()
    assert dev.__doc__ is not None and dev.LOCK_COMMAND in dev.__doc__


def test_the_environment_under_test_is_the_test_lock() -> None:
    """The versions installed here are the test lock's (`python3 dev.py test` installs
    it), so CI tests what the lock says."""
    wrong = {}
    for name, version in pins("test.txt").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-only pin (win32)
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements/test.txt: {wrong}"
