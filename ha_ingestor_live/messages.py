"""Typed shapes of Home Assistant WebSocket messages (msgspec).

Structs are ``gc=False``: they hold no cycles, and the collector makes millions of them, so keeping them
out of the cyclic garbage collector's lists saves its traversals.

Sub-documents whose exact text must survive (event data, state attributes, command
results) are kept as ``msgspec.Raw``: HA's own bytes, never re-encoded, so big integers,
-0.0 and non-ASCII keys stay exactly as Home Assistant sent them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Raw, Struct

EMPTY = Raw(b"")


class Envelope(Struct, gc=False):
    """One message of a frame: enough to route it without decoding its payload."""

    type: str
    id: int | None = None
    success: bool | None = None
    event: Raw = EMPTY
    result: Raw = EMPTY
    error: dict[str, Any] | None = None
    ha_version: str | None = None
    message: str | None = None


class Context(Struct, gc=False):
    id: str | None = None
    parent_id: str | None = None
    user_id: str | None = None


class Event(Struct, gc=False):
    event_type: str
    time_fired: str
    data: Raw = EMPTY
    origin: str | None = None
    context: Context | None = None


class StateObject(Struct, gc=False):
    entity_id: str
    state: str
    last_changed: str
    last_updated: str
    attributes: Raw = EMPTY
    last_reported: str | None = None
    context: Context | None = None


class OldState(Struct, gc=False):
    """Of the previous state only what a row keeps; the rest is skipped, not decoded."""

    state: str
    context: Context | None = None


class StateChangedData(Struct, gc=False):
    entity_id: str
    old_state: OldState | None = None
    new_state: StateObject | None = None


class EventEnvelope(Struct, gc=False):
    """A message decoded for the processor: events typed in the same pass as the frame."""

    type: str
    id: int | None = None
    success: bool | None = None
    event: Event | None = None
    result: Raw = EMPTY
    error: dict[str, Any] | None = None


class EventEntity(Struct, gc=False):
    """Only the top-level ``entity_id`` of an arbitrary event's data, when there is one."""

    entity_id: Any = None


class HistoryRow(Struct, gc=False):
    """A row of ``history/history_during_period`` (compressed: unix float times)."""

    s: str | None
    lu: float
    a: Raw = EMPTY
    lc: float | None = None
    lr: float | None = None


class EntityIdOnly(Struct, gc=False):
    entity_id: str


frame_decoder = msgspec.json.Decoder(list[Envelope] | Envelope)
event_frame_decoder = msgspec.json.Decoder(list[EventEnvelope] | EventEnvelope)
event_decoder = msgspec.json.Decoder(Event)
state_changed_decoder = msgspec.json.Decoder(StateChangedData)
event_entity_decoder = msgspec.json.Decoder(EventEntity)
state_list_decoder = msgspec.json.Decoder(list[StateObject])
history_decoder = msgspec.json.Decoder(dict[str, list[HistoryRow]])
entity_ids_decoder = msgspec.json.Decoder(list[EntityIdOnly])
any_decoder = msgspec.json.Decoder()
