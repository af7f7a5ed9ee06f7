"""Pure functions that turn Home Assistant messages into lake rows.

Every timestamp leaves here as an ISO 8601 UTC string with a ``+00:00`` offset (Arrow casts
the column to ``timestamp[us, UTC]`` at commit). Times are HA's own: ``time_fired`` for events,
``last_updated`` for states; ``received_at`` is kept beside them, never instead of them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import msgspec
from xxhash import xxh3_128_hexdigest

from .messages import (
    Context,
    Event,
    HistoryRow,
    StateObject,
    any_decoder,
    event_decoder,
    event_entity_decoder,
    history_decoder,
    state_changed_decoder,
    state_list_decoder,
)

# A lake row: its values in the table's schema order (``lake_schema``). Tuples, not
# dicts, because the writer appends them column by column, and that is the collector's hottest loop.
Row = tuple[Any, ...]

_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?\+00:00")
_is_utc_iso = _ISO_UTC.fullmatch
_NUMBER_START = frozenset("0123456789-+.")
_NO_CONTEXT = Context()
_EMPTY_OBJECT = b"{}"


class MalformedMessage(ValueError):
    """A message that cannot become a row; the text says why (it goes to quarantine)."""


def utc_iso(value: str) -> str:
    """HA's timestamp string as ISO UTC with ``+00:00``; other offsets are converted."""
    if _is_utc_iso(value):
        return value
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedMessage(f"invalid timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        raise MalformedMessage(f"timestamp without time zone {value!r}")
    return parsed.astimezone(dt.UTC).isoformat()


def utc_iso_from_unix(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def partition_date(iso_utc: str) -> str:
    return iso_utc[:10]


def parse_number(state: str | None) -> float | None:
    """HA's state string as a finite double, or None when it is not a plain number."""
    if not state or state[0] not in _NUMBER_START or "_" in state:
        return None
    try:
        value = float(state)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def event_id(event_type: str, time_fired: str, context_id: str | None, data: bytes | msgspec.Raw) -> str:
    """Deterministic id from the event's content: re-ingesting the same event gives the same id.

    XXH3-128 for speed, not secrecy (a quarter of SHA-1's cost on the collector's hot path)."""
    return xxh3_128_hexdigest(f"{event_type}\x1f{time_fired}\x1f{context_id or ''}\x1f".encode() + data)


def domain_of(entity_id: str) -> str:
    return entity_id.partition(".")[0]


def decode_event(raw: bytes) -> Event:
    try:
        return event_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"unexpected event shape: {exc}") from exc


def event_rows(event: Event, received_at: str, spool_seq: int, home: str) -> tuple[Row, Row | None]:
    """The ``events`` row of one event and, for ``state_changed``, its ``states`` row.

    Every live event passes here: it is written flat, with few helper calls, for speed."""
    context = event.context or _NO_CONTEXT
    event_type, raw_time, context_id = event.event_type, event.time_fired, context.id
    time_fired = raw_time if _is_utc_iso(raw_time) else utc_iso(raw_time)
    data = event.data or _EMPTY_OBJECT  # HA's own bytes (a buffer into the frame), hashed and decoded as they are
    eid = event_id(event_type, raw_time, context_id, data)
    text = str(data, "utf-8")
    state: Row | None = None
    entity_id: str | None = None
    if event_type == "state_changed":
        try:
            change = state_changed_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"unexpected state_changed data: {exc}") from exc
        entity_id, old, new = change.entity_id, change.old_state, change.new_state
        if new is None:  # a removal, kept with a null state at time_fired
            old_context = (old.context if old else None) or _NO_CONTEXT
            # STATES column order
            state = (
                home,
                entity_id,
                entity_id.partition(".")[0],
                None,
                None,
                None,
                time_fired,
                time_fired,
                None,
                old.state if old else None,
                old_context.id,
                old_context.parent_id,
                old_context.user_id,
                "live",
                eid,
                received_at,
                spool_seq,
            )
        else:
            state = state_row(new, "live", received_at, spool_seq, home, eid, old.state if old else None, time_fired)
    elif '"entity_id"' in text:  # most events have none: skip the decode
        try:
            found = event_entity_decoder.decode(data).entity_id
        except msgspec.DecodeError:
            found = None
        if isinstance(found, str):
            entity_id = found
        elif isinstance(found, list) and len(found) == 1 and isinstance(found[0], str):
            entity_id = found[0]
    # EVENTS column order
    row = (
        home,
        eid,
        event_type,
        time_fired,
        event.origin,
        context_id,
        context.parent_id,
        context.user_id,
        entity_id,
        text,
        received_at,
        spool_seq,
    )
    return row, state


def state_row(
    state: StateObject,
    source: str,
    received_at: str,
    spool_seq: int,
    home: str,
    eid: str | None = None,
    old_state: str | None = None,
    time_fired: str | None = None,
) -> Row:
    context = state.context or _NO_CONTEXT
    entity_id = state.entity_id
    # HA's three times are usually the same string (and, live, the event's time_fired): validate each once
    raw_updated = state.last_updated
    if raw_updated == time_fired:
        last_updated = time_fired
    else:
        last_updated = raw_updated if _is_utc_iso(raw_updated) else utc_iso(raw_updated)
    last_changed = last_updated if state.last_changed == raw_updated else utc_iso(state.last_changed)
    reported = state.last_reported
    last_reported = (last_updated if reported == raw_updated else utc_iso(reported)) if reported else None
    value = state.state
    attributes = state.attributes
    # STATES column order
    return (
        home,
        entity_id,
        entity_id.partition(".")[0],
        value,
        parse_number(value),
        str(attributes, "utf-8") if attributes else None,
        last_changed,
        last_updated,
        last_reported,
        old_state,
        context.id,
        context.parent_id,
        context.user_id,
        source,
        eid,
        received_at,
        spool_seq,
    )


def snapshot_state_rows(result: bytes, received_at: str, spool_seq: int, home: str) -> list[Row]:
    """``get_states`` result as ``states`` rows with source ``snapshot``."""
    try:
        states = state_list_decoder.decode(result)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"unexpected get_states result: {exc}") from exc
    return [state_row(state, "snapshot", received_at, spool_seq, home) for state in states]


def history_state_rows(result: bytes, received_at: str, spool_seq: int, home: str) -> list[Row]:
    """``history/history_during_period`` result (compressed rows, unix times) as ``states`` rows."""
    try:
        history: dict[str, list[HistoryRow]] = history_decoder.decode(result)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"unexpected history result: {exc}") from exc
    rows: list[Row] = []
    for entity_id, entries in history.items():
        domain = domain_of(entity_id)
        previous: str | None = None
        attributes: str | None = None
        for entry in entries:
            last_updated = utc_iso_from_unix(entry.lu)
            if entry.s is None:  # a removed entity: HA's recorder row with a null state
                attributes = None
            elif entry.a:
                attributes = bytes(entry.a).decode()
            # STATES column order
            rows.append(
                (
                    home,
                    entity_id,
                    domain,
                    entry.s,
                    parse_number(entry.s),
                    attributes,
                    utc_iso_from_unix(entry.lc) if entry.lc is not None else last_updated,
                    last_updated,
                    utc_iso_from_unix(entry.lr) if entry.lr is not None else None,
                    previous,
                    None,
                    None,
                    None,
                    "backfill",
                    None,
                    received_at,
                    spool_seq,
                )
            )
            previous = entry.s
    return rows


REGISTRY_KEYS: dict[str, tuple[str, ...]] = {
    "areas": ("area_id",),
    "floors": ("floor_id",),
    "labels": ("label_id",),
    "devices": ("id",),
    "entities": ("entity_id", "id"),
    "config_entries": ("entry_id",),
}


def registry_rows(
    kind: str, result: bytes, snapshot_at: str, snapshot_seq: int, home: str, item_id: str | None = None
) -> list[Row]:
    """Registry and configuration snapshots, one row per item, each item's JSON kept exactly.

    ``item_id`` names a single-item result (an automation or script config by entity_id).
    """
    try:
        parsed = any_decoder.decode(result)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"invalid {kind} result: {exc}") from exc

    def row(key: str | None, item: Any) -> Row:  # REGISTRY column order
        return (home, kind, key, snapshot_at, snapshot_seq, msgspec.json.encode(item).decode())

    if item_id is not None:
        return [row(item_id, parsed)]
    if kind == "services" and isinstance(parsed, dict):
        return [
            row(f"{domain}.{service}", spec)
            for domain, services in parsed.items()
            for service, spec in (services or {}).items()
        ]
    if kind == "core_config" and isinstance(parsed, dict):
        return [row(parsed.get("location_name"), parsed)]
    if not isinstance(parsed, list):
        raise MalformedMessage(f"{kind} result is a {type(parsed).__name__}, expected a list")
    keys = REGISTRY_KEYS.get(kind, ("id",))
    rows = []
    for item in parsed:
        key = next((str(item[k]) for k in keys if isinstance(item, dict) and item.get(k) is not None), None)
        rows.append(row(key, item))
    return rows
