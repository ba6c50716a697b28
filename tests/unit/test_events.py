from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.events import MAX_EVENT_BYTES, InvalidEvent, decode_event, encode_event
from tests.support.events import change


def test_round_trip() -> None:
    """An encoded event decodes to an equal event."""
    event = change(values={"email": "a@example.com", "n": 3}, changed=["email"])
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (None, "empty"),
        (b"{not json", "malformed"),
        (b"\xff\xfe\x00", "malformed"),
        (b"{}", "missing required field"),
        (b"[]", "Expected `object`"),
    ],
)
def test_invalid_bytes_are_rejected_with_a_reason(raw: bytes | None, detail: str) -> None:
    """Undecodable input raises InvalidEvent with the catalogue reason."""
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.reason == "incorrect parameter or value"
    assert detail in info.value.detail


def test_unknown_module_wrong_type_nul_and_size() -> None:
    """Unknown module, a wrongly typed field, NUL in text and oversize all fail."""
    good = encode_event(change())
    for bad, detail in [
        (good.replace(b'"contacts"', b'"spaceships"'), "unknown module"),
        (good.replace(b'"op":"create"', b'"op":"explode"'), "op"),
        (good.replace(b'"values":{}', b'"values":"x"'), "values"),
        (encode_event(change(values={"name": "a\x00b"})), "NUL"),
        (good + b" " * MAX_EVENT_BYTES, "limit"),
        (good.replace(b'"modified_at":"2026-11-01T12:00:00Z"',
                      b'"modified_at":"2026-11-01T12:00:00"'), "time zone"),
    ]:
        with pytest.raises(InvalidEvent, match=detail):
            decode_event(bad)


@given(st.binary(max_size=2048))
def test_decoder_never_raises_anything_else(raw: bytes) -> None:
    """Arbitrary bytes either decode or raise InvalidEvent, nothing else."""
    with contextlib.suppress(InvalidEvent):
        decode_event(raw)
