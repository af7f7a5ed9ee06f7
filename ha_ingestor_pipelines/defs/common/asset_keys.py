"""Every asset key the domains share, defined once; a derived table's name (its location under the tables
root, ``ha_ingestor_lake.tables.table_uri``) is its key's last part."""

import dagster as dg

# the collector's landing zone (external: written by `ha-ingestor collect`, read only by the table loader)
LANDING_EVENTS = dg.AssetKey(["landing", "events"])
LANDING_STATES = dg.AssetKey(["landing", "states"])
LANDING_REGISTRY = dg.AssetKey(["landing", "registry"])
LANDING_QUARANTINE = dg.AssetKey(["landing", "quarantine"])
LANDING_COLLECTOR_SESSIONS = dg.AssetKey(["landing", "collector_sessions"])

# the raw Delta tables loaded from it
LAKE_EVENTS = dg.AssetKey(["lake", "events"])
LAKE_STATES = dg.AssetKey(["lake", "states"])
LAKE_REGISTRY = dg.AssetKey(["lake", "registry"])
LAKE_QUARANTINE = dg.AssetKey(["lake", "quarantine"])
LAKE_COLLECTOR_SESSIONS = dg.AssetKey(["lake", "collector_sessions"])
TABLE_MAINTENANCE = dg.AssetKey(["platform", "table_maintenance"])

# quality
VALIDATED_EVENTS = dg.AssetKey(["derived", "validated_events"])
VALIDATED_STATES = dg.AssetKey(["derived", "validated_states"])
VALIDATION_QUARANTINE = dg.AssetKey(["derived", "validation_quarantine"])
QUALITY_REPORT = dg.AssetKey(["derived", "quality_report"])

# enrichment
DIMENSION_KEYS = {
    kind: dg.AssetKey(["derived", f"dim_{kind}"])
    for kind in ("entities", "devices", "areas", "floors", "labels", "config_entries")
}
ENRICHED_STATES = dg.AssetKey(["derived", "enriched_states"])
PEAK_HOURS = dg.AssetKey(["derived", "peak_hours"])

# graphs
DEVICE_NODES = dg.AssetKey(["derived", "device_graph_nodes"])
DEVICE_EDGES = dg.AssetKey(["derived", "device_graph_edges"])
FAILURE_CASCADES = dg.AssetKey(["derived", "failure_cascades"])
AUTOMATION_RUNS = dg.AssetKey(["derived", "automation_runs"])
AUTOMATION_NODES = dg.AssetKey(["derived", "automation_graph_nodes"])
AUTOMATION_EDGES = dg.AssetKey(["derived", "automation_graph_edges"])
AUTOMATION_CYCLES = dg.AssetKey(["derived", "automation_cycles"])

RAW_TABLE_KEYS = {
    "events": LAKE_EVENTS,
    "states": LAKE_STATES,
    "registry": LAKE_REGISTRY,
    "quarantine": LAKE_QUARANTINE,
    "collector_sessions": LAKE_COLLECTOR_SESSIONS,
}
LANDING_KEYS = {
    "events": LANDING_EVENTS,
    "states": LANDING_STATES,
    "registry": LANDING_REGISTRY,
    "quarantine": LANDING_QUARANTINE,
    "collector_sessions": LANDING_COLLECTOR_SESSIONS,
}


def table_name(key: dg.AssetKey) -> str:
    """The Delta table an asset writes: the last part of its key."""
    return key.path[-1]
