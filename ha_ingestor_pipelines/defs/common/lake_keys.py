"""Asset keys of the collector's raw lake tables, for the domains that read them."""

import dagster as dg

LAKE_EVENTS = dg.AssetKey(["lake", "events"])
LAKE_STATES = dg.AssetKey(["lake", "states"])
LAKE_REGISTRY = dg.AssetKey(["lake", "registry"])
LAKE_QUARANTINE = dg.AssetKey(["lake", "quarantine"])
LAKE_COLLECTOR_SESSIONS = dg.AssetKey(["lake", "collector_sessions"])
