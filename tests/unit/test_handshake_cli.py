"""``syncd handshake``: reading the event stream, finding the daemon, printing the board."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli.client import SseEvent, parse_sse
from daemon.cli.handshake import format_board, format_move, handshake
from daemon.http.board import reply_problem, sse_frame
from daemon.runtime.settings import load_settings


def test_sse_frames_round_trip() -> None:
    """What the server frames, the client parses back: event, id and data."""
    frames = (sse_frame("board", {"a": 1}, event_id=7) + b": keepalive\n\n"
              + b"retry: 2000\n\n" + sse_frame("move", {"b": "x\ny"}, event_id=8))
    events = parse_sse(frames.decode().splitlines(keepends=True))
    assert events == [SseEvent("board", '{"a": 1}', "7"), SseEvent("move", '{"b": "x\\ny"}', "8")]


def test_sse_multi_line_data_and_defaults() -> None:
    """Data lines join with newlines; no event name means "message"; the id sticks."""
    events = parse_sse(["id: 3\n", "data: one\n", "data:two\n", "\n", "data: three\r\n", "\n"])
    assert events == [SseEvent("message", "one\ntwo", "3"), SseEvent("message", "three", "3")]


BOARD = {
    "department": {"id": "3", "name": "Support"}, "cursor": 9, "total": 3,
    "columns": [
        {"column": "new", "title": "New", "count": 2, "tickets": [
            {"id": "12", "subject": "Printer jams", "requester_email": "ana@x.org",
             "priority": "High", "due_date": "2026-11-03T10:00:00+00:00"}]},
        {"column": "customers", "title": "Customers", "count": 1, "tickets": [
            {"id": "14", "subject": None, "requester_phone": "+33 6 12 34 56 78"}]},
    ],
}


def test_board_is_printed_column_by_column() -> None:
    """Columns in order with counts, one line per ticket, and what the limit left out."""
    assert format_board(BOARD).splitlines() == [
        "Support (department 3): 3 open tickets",
        "",
        "New (2)",
        "  #12  Printer jams  ana@x.org  High  due 2026-11-03T10:00",
        "  … and 1 more",
        "",
        "Customers (1)",
        "  #14  (no subject)  +33 6 12 34 56 78",
    ]
    assert format_board({"department": {"id": "4", "name": None}, "total": 0,
                         "columns": []}).splitlines() == [
        "department 4: 0 open tickets", "(no open tickets)"]


def test_moves_are_printed_as_arrows() -> None:
    """A move reads from → to; additions and removals say so."""
    ticket = {"id": "12", "subject": "Printer jams"}
    base = {"ticket": ticket, "at": "2026-11-03T10:00:00+00:00"}
    assert format_move(base | {"kind": "moved", "from": "new", "to": "customers"}).endswith(
        "#12 Printer jams: New → Customers")
    assert format_move(base | {"kind": "added", "from": None, "to": "new"}).endswith(
        "added to New")
    assert format_move(base | {"kind": "removed", "from": "opportunities", "to": None}
                       ).endswith("removed from Opportunities")


def test_unreachable_daemon_is_a_clear_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No daemon at the address: exit status 1 and a sentence saying so."""
    from daemon.runtime.embedded import free_port

    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path, http_listen=f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(handshake, ["Support"], obj=settings)
    assert result.exit_code == 1
    assert "no daemon answering" in result.output


@pytest.mark.parametrize(("body", "problem"), [
    ({"content": "Thanks"}, None),
    ({"content": "Thanks", "author": "rui"}, None),
    ([], "the body must be a JSON object"),
    ({"content": ""}, "content must be a non-empty string"),
    ({"content": "x" * 65_537}, "content is longer than 65536 characters"),
    ({"content": "x", "to": "y"}, "unknown field(s): to"),
    ({"content": "x", "author": ""}, "author must be a string of 1 to 200 characters"),
    ({"content": "a\x00b"}, "NUL character in a text value"),
])
def test_reply_bodies_are_validated(body: object, problem: str | None) -> None:
    """HS-07: a reply is a JSON object with content and an optional author, nothing else."""
    assert reply_problem(body) == problem


def test_json_output_is_the_api_body() -> None:
    """--json prints exactly what the API answered (here: a frame's data)."""
    frame = sse_frame("board", BOARD, event_id=9).decode()
    (event,) = parse_sse(frame.splitlines(keepends=True))
    assert json.loads(event.data) == BOARD
