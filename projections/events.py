"""The change event: the one envelope every capture path produces.

Version 1 of the envelope (JSON on the topic, keyed ``source:module:record_id``
so all events of one record land on one partition, in order):

============  =======================================================
field         meaning
============  =======================================================
v             envelope version, ``1``
event_id      UUID fixed at capture (the outbox row), so a re-send keeps it
source        ``desk`` or ``crm``
module        ``contacts``, ``accounts``, ``products``, ``leads``, ``deals``, ...
record_id     the record's id in its source store (text)
op            ``create``, ``update``, ``delete`` or ``restore``
values        the record's values after the change (an object)
changed       the fields this change touched, or null for "all"
modified_at   the source's own modification time (RFC 3339)
created_at    the source's creation time of the record (RFC 3339)
origin        ``user``, ``import`` or ``sync``
captured_at   when capture saw the change (RFC 3339)
============  =======================================================

Anything that does not decode into this shape is rejected with the reason
``incorrect parameter or value`` and kept raw; it never stops its partition.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

ENVELOPE_VERSION: Literal[1] = 1
"""The envelope version (``v``) every event is written with: the relay builds envelopes
in SQL with it, and ``ChangeEvent.v`` accepts only it."""
MAX_EVENT_BYTES = 256 * 1024

Source = Literal["desk", "crm"]
Op = Literal["create", "update", "delete", "restore"]
Origin = Literal["user", "import", "sync"]

MODULES = frozenset(
    {"contacts", "accounts", "products", "departments", "leads", "deals", "tickets",
     "ticket_statuses", "ticket_threads", "notes", "calls", "events", "tasks",
     "ticket_actions", "ticket_attachments"}
)

REASON_BAD_EVENT = "incorrect parameter or value"


class ChangeEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    v: Literal[1] = ENVELOPE_VERSION
    event_id: uuid.UUID
    source: Source
    module: str
    record_id: str
    op: Op
    values: dict[str, Any]
    changed: list[str] | None = None
    modified_at: dt.datetime
    created_at: dt.datetime
    origin: Origin
    captured_at: dt.datetime

    @property
    def key(self) -> bytes:
        return record_key(self.source, self.module, self.record_id)


def record_key(source: str, module: str, record_id: str) -> bytes:
    return f"{source}:{module}:{record_id}".encode()


class InvalidEvent(ValueError):
    """The bytes are not a valid change event; ``detail`` says what is wrong."""

    reason = REASON_BAD_EVENT

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_decoder = msgspec.json.Decoder(ChangeEvent)
_encoder = msgspec.json.Encoder()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def decode_event(raw: bytes | None) -> ChangeEvent:
    """Decode and validate one event, or raise :class:`InvalidEvent`."""
    if raw is None:
        raise InvalidEvent("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event of {len(raw)} bytes is over the {MAX_EVENT_BYTES} byte limit")
    try:
        event = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as err:
        raise InvalidEvent(str(err)) from None
    if event.module not in MODULES:
        raise InvalidEvent(f"unknown module {event.module!r}")
    if not event.record_id or len(event.record_id) > 200:
        raise InvalidEvent("record_id must be 1 to 200 characters")
    for stamp in ("modified_at", "created_at", "captured_at"):
        if getattr(event, stamp).tzinfo is None:
            raise InvalidEvent(f"{stamp} must carry a time zone")
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail the batch. JSON
    # can only carry a NUL escaped, so raw bytes without that escape hold none: the
    # walk through the values is only needed when they do.
    if b"\\u0000" in raw and (_has_nul(event.values) or "\x00" in event.record_id):
        raise InvalidEvent("NUL character in a text value")
    return event


def encode_event(event: ChangeEvent) -> bytes:
    return _encoder.encode(event)
