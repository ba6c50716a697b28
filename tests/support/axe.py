"""axe-core, the accessibility checker, from the npm registry: fetched once into
``~/.cache/syncd-tests/`` (its tarball's integrity checked against the pin), then run
inside the page by the browser tests."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

AXE_VERSION = "4.10.3"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
AXE_INTEGRITY = ("sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZv"
                 "GfTs/PbZhideTcEg==")
CACHE = Path(os.environ.get("SYNCD_TEST_CACHE", Path.home() / ".cache" / "syncd-tests"))


def _integrity(raw: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(raw).digest()).decode()


def axe_source() -> str:
    """``axe.min.js`` of the pinned version (the registry's tarball, checked)."""
    cached = CACHE / f"axe-core-{AXE_VERSION}.tgz"
    raw = cached.read_bytes() if cached.exists() else b""
    if _integrity(raw) != AXE_INTEGRITY:
        with urllib.request.urlopen(AXE_TARBALL, timeout=60) as response:
            raw = response.read()
        if _integrity(raw) != AXE_INTEGRITY:
            raise RuntimeError(f"{AXE_TARBALL}: the tarball does not match its pinned integrity")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".partial-{os.getpid()}")
        partial.write_bytes(raw)
        partial.replace(cached)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
        member = archive.extractfile("package/axe.min.js")
        assert member is not None
        return member.read().decode()


SERIOUS = ("serious", "critical")


def violations(driver: Any, source: str) -> list[dict[str, Any]]:
    """The page's serious and critical violations (WCAG 2.x A and AA rules)."""
    driver.execute_script(source)
    found: list[dict[str, Any]] = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        " axe.run(document, {runOnly: {type: 'tag',"
        "   values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        " .then(function (r) { done(r.violations.map(function (v) {"
        "   return {id: v.id, impact: v.impact, help: v.help,"
        "     nodes: v.nodes.slice(0, 3).map(function (n) { return n.target.join(' '); })};"
        " })); }, function (e) { done([{id: 'axe-error', impact: 'critical',"
        "   help: String(e), nodes: []}]); });")
    return [v for v in found if v["impact"] in SERIOUS]
