"""The mapping file is checked before it is sent: errors name the line and the field."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.cli.admin import read_mapping_file


def problem(text: str, module: str = "contacts") -> str:
    with pytest.raises(click.ClickException) as caught:
        read_mapping_file(text, module, name="m.json")
    return caught.value.message


def test_a_good_file_gives_its_entries() -> None:
    text = ('[\n  {"desk": "email", "crm": "email"},\n  {"desk": "custom.tier",'
            ' "desk_type": "text", "crm": "custom.tier", "crm_type": "text"}\n]\n')
    assert read_mapping_file(text, "contacts") == [
        {"desk": "email", "crm": "email"},
        {"desk": "custom.tier", "desk_type": "text", "crm": "custom.tier", "crm_type": "text"}]
    assert read_mapping_file('{"entries": [{"desk": "phone", "crm": "mobile"}]}',
                             "contacts") == [{"desk": "phone", "crm": "mobile"}]


def test_invalid_json_names_line_and_column() -> None:
    text = '[\n  {"desk": "email", "crm": "email"},\n  {"desk": "phone" "crm": "phone"}\n]'
    assert problem(text).startswith("m.json:3:20: not valid JSON")


def test_unknown_key_names_its_line() -> None:
    text = '[\n  {"desk": "email", "crm": "email"},\n  {"desk": "phone",\n   "cmr": "phone"}\n]'
    message = problem(text)
    assert message.startswith("m.json:4: entry 2: unknown field 'cmr'")
    assert "did you mean 'crm'" in message


def test_unknown_field_names_line_field_and_the_known_ones() -> None:
    text = '[\n  {"desk": "email", "crm": "email"},\n  {"desk": "phone",\n   "crm": "fax"}\n]'
    message = problem(text)
    assert message.startswith("m.json:4: entry 2, field 'crm': crm field 'fax' does not exist")
    assert "mobile" in message


def test_missing_field_types_and_pairs_are_named() -> None:
    assert problem('[\n  {"crm": "email"}\n]').startswith(
        "m.json:2: entry 1, field 'desk': desk field is missing")
    assert "need a type" in problem('[{"desk": "custom.x", "crm": "email"}]')
    assert problem('[{"desk": "email", "crm": "email"},\n {"desk": "email", "crm": "phone"}]'
                   ).startswith("m.json:2: entry 2:")
    assert problem('[\n  1\n]').startswith("m.json:2: entry 1: must be an object")
    assert problem('\n{"desk": "email"}').startswith("m.json:2: expected a JSON array")


def test_the_command_refuses_a_bad_file_before_calling_the_daemon(tmp_path: Path) -> None:
    """No daemon runs here: the error is the file's, not "no daemon answering"."""
    path = tmp_path / "m.json"
    path.write_text('[\n  {"desk": "email", "crm": "emial"}\n]\n')
    result = CliRunner().invoke(cli, ["integration", "mapping", "contacts", str(path)],
                                env={"SYNCD_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert f"{path}:2: entry 1, field 'crm'" in result.output
    assert "no daemon answering" not in result.output
