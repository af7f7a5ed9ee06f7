"""The lake the live collector writes, declared as external assets with their column contract."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from ha_ingestor_lake.schema import COLLECTOR_SESSIONS, EVENTS, QUARANTINE, REGISTRY, STATES

from ..common.lake_keys import LAKE_COLLECTOR_SESSIONS, LAKE_EVENTS, LAKE_QUARANTINE, LAKE_REGISTRY, LAKE_STATES


def _table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def _lake_table(key: dg.AssetKey, schema: pa.Schema, layout: str, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=key,
        description=description,
        group_name="lake",
        kinds={"parquet"},
        metadata={"layout": layout, "dagster/column_schema": _table_schema(schema)},
    )


events = _lake_table(
    LAKE_EVENTS,
    EVENTS,
    "events/date=YYYY-MM-DD/part-*.parquet",
    "Every Home Assistant event, one row each, landed by `ha-ingestor collect`.",
)
states = _lake_table(
    LAKE_STATES,
    STATES,
    "states/date=YYYY-MM-DD/part-*.parquet",
    "Every state change (live, backfilled from HA's history, or from snapshots).",
)
registry = _lake_table(
    LAKE_REGISTRY,
    REGISTRY,
    "registry/<kind>/date=YYYY-MM-DD/part-*.parquet",
    "Registry and configuration snapshots (areas, floors, labels, devices, entities, "
    "config entries, automations, scripts, core config, services).",
)
quarantine = _lake_table(
    LAKE_QUARANTINE,
    QUARANTINE,
    "quarantine/date=YYYY-MM-DD/part-*.parquet",
    "Input the collector could not turn into rows, with the reason and the raw text.",
)
collector_sessions = _lake_table(
    LAKE_COLLECTOR_SESSIONS,
    COLLECTOR_SESSIONS,
    "collector_sessions/date=YYYY-MM-DD/session-<session_id>-<collector_id>.parquet",
    "The collector's own record of each connection to Home Assistant: when, the gap it closed, what the history "
    "backfill returned, and its counters (events received, committed, quarantined, frames), one row per session.",
)
