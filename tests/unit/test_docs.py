"""The documentation stays true: links resolve, the settings table is the code's."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from daemon.runtime import settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 250

_LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def documents() -> list[Path]:
    """README.md, docs/*.md and ops/**/*.md."""
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "ops").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks or code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces
    to hyphens (nothing collapsed)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link: its text
    text = text.replace("`", "").lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", _FENCE.sub("", path.read_text()),
                             re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file, or whose #anchor, does not exist."""
    problems = []
    for target in _LINK.findall(_prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        where = f"{shown}: {target}"
        if not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and (resolved.is_dir() or resolved.suffix != ".md"):
            problems.append(f"{where}: an anchor into something that is not Markdown")
        elif anchor and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    """Each relative link in README.md, docs/ and ops/ names an existing file, and each
    #anchor a heading of its target."""
    docs = documents()
    assert (ROOT / "docs" / "architecture.md") in docs
    problems = [problem for path in docs for problem in broken_links(path)]
    assert problems == []


def test_link_check_catches_a_broken_link_and_anchor(tmp_path: Path) -> None:
    """The checker itself: a missing file and a missing anchor are reported; code is not
    taken for links. (The probe is written outside docs/: the test above, on another
    worker, reads every page of docs/ and would find it gone.)"""
    page = tmp_path / "__link_check_probe__.md"
    operations = os.path.relpath(ROOT / "docs" / "operations.md", tmp_path)
    page.write_text("# Probe\n\n## A heading, with `code`!\n\n"
                    f"[ok](#a-heading-with-code) [ok]({operations}#metrics)\n"
                    f"[gone](no-such-page.md) [gone]({operations}#no-such-heading)\n"
                    "`[not a link](nowhere.md)`\n\n```\n[nor this](nowhere.md)\n```\n")
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "no-such-page.md: no such file" in problems[0]
    assert "operations.md#no-such-heading: no heading" in problems[1]


def settings_variables() -> dict[str, Any]:
    """Each setting's environment variable and its default (the factory's value for lists
    and dicts), read from the ``Settings`` class: an alias is used as it is, otherwise
    the variable is the prefix and the field name in capitals."""
    module = settings_module
    settings = module.Settings
    prefix = settings.model_config.get("env_prefix", "")
    variables = {}
    for name, field in settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        alias = alias or field.alias
        variable = alias.upper() if alias else f"{prefix}{name}".upper()
        default = field.get_default(call_default_factory=True)
        variables[variable] = default
    return variables


def configuration_table(text: str) -> dict[str, str]:
    """The settings table of docs/configuration.md: variable -> its default cell."""
    rows = re.findall(r"^\| `(SYNCD_[A-Z0-9_]+)` \| ([^|]*) \|", text, re.M)
    table = dict(rows)
    assert len(table) == len(rows), "a variable is listed twice"
    return table


def default_problems(table: dict[str, str], code: dict[str, Any]) -> list[str]:
    """Where the table states a default (a literal in backticks first in its cell), it is
    the code's; an unset default reads "unset" or "none"."""
    problems = []
    for variable, cell in table.items():
        if variable not in code:
            continue
        default = code[variable]
        if default is None or default in ([], {}):
            if not cell.startswith(("unset", "none")):
                problems.append(f"{variable}: the code has no default, the table says {cell!r}")
            continue
        stated = re.match(r"`([^`]*)`", cell)
        if stated is None:
            continue
        literal = stated.group(1)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            agrees = literal == str(default)
        else:
            try:
                agrees = float(literal.replace("_", "")) == float(default)
            except ValueError:
                agrees = False
        if not agrees:
            problems.append(f"{variable}: table {literal!r}, code {default!r}")
    return problems


def test_configuration_table_is_the_settings_object() -> None:
    """docs/configuration.md lists exactly the settings of ``Settings``, and the defaults
    it states are the code's."""
    table = configuration_table(CONFIGURATION.read_text())
    code = settings_variables()
    assert sorted(table) == sorted(code)
    assert default_problems(table, code) == []


def test_configuration_check_catches_a_missing_row_and_a_wrong_default() -> None:
    """The checker itself: a dropped row and a changed default are both seen."""
    text = CONFIGURATION.read_text()
    code = settings_variables()
    dropped = re.sub(r"^\| `SYNCD_BATCH_MAX` \|.*\n", "", text, flags=re.M)
    assert sorted(configuration_table(dropped)) != sorted(code)
    changed = text.replace("| `SYNCD_PARTITIONS` | `6` |", "| `SYNCD_PARTITIONS` | `7` |")
    assert changed != text
    assert default_problems(configuration_table(changed), code) != []


@pytest.mark.parametrize("path", [README], ids=["README.md"])
def test_readme_is_a_front_door(path: Path) -> None:
    """README.md stays under 250 lines; the rest lives in docs/."""
    lines = len(path.read_text().splitlines())
    assert lines < README_MAX_LINES, f"{path.name} has {lines} lines"
