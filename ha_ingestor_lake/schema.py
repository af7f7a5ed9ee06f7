"""The lake contract: table layouts and Arrow schemas (documented in docs/lake.md)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

EVENTS = pa.schema(
    [
        ("home", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("time_fired", TIMESTAMP),
        ("origin", pa.string()),
        ("context_id", pa.string()),
        ("context_parent_id", pa.string()),
        ("context_user_id", pa.string()),
        ("entity_id", pa.string()),
        ("data", pa.string()),
        ("received_at", TIMESTAMP),
        ("spool_seq", pa.int64()),
    ]
)

STATES = pa.schema(
    [
        ("home", pa.string()),
        ("entity_id", pa.string()),
        ("domain", pa.string()),
        ("state", pa.string()),
        ("state_num", pa.float64()),
        ("attributes", pa.string()),
        ("last_changed", TIMESTAMP),
        ("last_updated", TIMESTAMP),
        ("last_reported", TIMESTAMP),
        ("old_state", pa.string()),
        ("context_id", pa.string()),
        ("context_parent_id", pa.string()),
        ("context_user_id", pa.string()),
        ("source", pa.string()),
        ("event_id", pa.string()),
        ("received_at", TIMESTAMP),
        ("spool_seq", pa.int64()),
    ]
)

REGISTRY = pa.schema(
    [
        ("home", pa.string()),
        ("kind", pa.string()),
        ("item_id", pa.string()),
        ("snapshot_at", TIMESTAMP),
        ("snapshot_seq", pa.int64()),
        ("data", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("home", pa.string()),
        ("received_at", TIMESTAMP),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("spool_seq", pa.int64()),
    ]
)

# one row per connection session, rewritten while the session's figures change (session_log.py)
COLLECTOR_SESSIONS = pa.schema(
    [
        ("home", pa.string()),
        ("collector_id", pa.string()),
        ("session_id", pa.int64()),
        ("connected_at", TIMESTAMP),
        ("ha_version", pa.string()),
        ("disconnected_at", TIMESTAMP),
        ("disconnect_reason", pa.string()),
        ("gap_start", TIMESTAMP),
        ("gap_end", TIMESTAMP),
        ("backfill_from", TIMESTAMP),
        ("backfill_rows", pa.int64()),
        ("last_event_time", TIMESTAMP),
        ("events_received", pa.int64()),
        ("events_committed", pa.int64()),
        ("quarantined", pa.int64()),
        ("frames_received", pa.int64()),
        ("reconnects", pa.int64()),
        ("updated_at", TIMESTAMP),
    ]
)

COLLECTOR_SESSIONS_LOCATION = "collector_sessions"

SCHEMAS: dict[str, pa.Schema] = {
    "events": EVENTS,
    "states": STATES,
    "registry": REGISTRY,
    "quarantine": QUARANTINE,
    "collector_sessions": COLLECTOR_SESSIONS,
}

# the column whose UTC date names a row's partition
PARTITION_TIME = {
    "events": "time_fired",
    "states": "last_updated",
    "registry": "snapshot_at",
    "quarantine": "received_at",
    "collector_sessions": "connected_at",
}

# A row's identity: the Delta tables keep one row per identity (the first landed; for collector_sessions,
# whose landing file is rewritten while its session runs, the newest version by updated_at)
IDENTITY: dict[str, tuple[str, ...]] = {
    "events": ("event_id",),
    "states": ("home", "entity_id", "last_updated"),
    "registry": ("home", "kind", "snapshot_seq", "item_id"),
    "collector_sessions": ("collector_id", "session_id"),
    # no natural key: a quarantined input is its whole row
    "quarantine": tuple(QUARANTINE.names),
}

# Of several state rows with one identity, the one kept: the richest source first (a live row has the event's
# context and every attribute), then the first received
STATE_SOURCE_PRIORITY = {"live": 0, "snapshot": 1, "backfill": 2}

# Columns the contract gained after files had been written: a landing file may lack them (null there).
ADDED_COLUMNS: dict[str, frozenset[str]] = {
    "events": frozenset({"spool_seq"}),
    "states": frozenset({"spool_seq"}),
    "quarantine": frozenset({"spool_seq"}),
    "registry": frozenset(),
    "collector_sessions": frozenset(),
}

# The Delta tables' partition column: the UTC date of PARTITION_TIME, i.e. the landing directory's date=
DATE_COLUMN = "date"


def table_schema(table: str) -> pa.Schema:
    """A raw Delta table's columns: the landing contract, the collector that wrote each row (from its landing
    file's name), and the date partition."""
    schema = SCHEMAS[table]
    if "collector_id" not in schema.names:
        schema = schema.append(pa.field("collector_id", pa.string()))
    return schema.append(pa.field(DATE_COLUMN, pa.date32()))


# Parquet dictionary encoding for the columns with few distinct values only: on ids, timestamps and JSON
# text it is tried, overflows and is dropped, which costs time and bytes (a storage detail, not the contract)
DICTIONARY_COLUMNS = {
    table: [
        name
        for name in schema.names
        if name
        in {
            "home",
            "kind",
            "event_type",
            "origin",
            "domain",
            "entity_id",
            "state",
            "old_state",
            "source",
            "context_user_id",
            "stage",
            "collector_id",
            "ha_version",
        }
    ]
    for table, schema in SCHEMAS.items()
}


def row_from(table: str, values: dict[str, Any]) -> tuple[Any, ...]:
    """A row as the writer takes it (values in schema order) from values by column name."""
    return tuple(values[name] for name in SCHEMAS[table].names)


def row_as_dict(table: str, row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(SCHEMAS[table].names, row, strict=True))


def home_from_config(result: bytes) -> str | None:
    """A lake-friendly home name from ``get_config``'s ``location_name`` ("Maple House" -> maple_house)."""
    try:
        name = msgspec.json.decode(result).get("location_name")
    except (msgspec.DecodeError, AttributeError):
        return None
    return slug(name) if isinstance(name, str) and name.strip() else None


def slug(text: str) -> str:
    return re.sub(r"\W+", "_", text.strip().lower()).strip("_") or "home"
