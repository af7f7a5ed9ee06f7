"""Which assets run on new lake data and which run on a clock.

The tables derived from the lake (keys ``derived/...``, all on the shared daily partitions) run when
the collector commits new data for their day. Everything else has a clock of its own: the long-term
statistics (group ``statistics``: pulled from Home Assistant, not from the lake), the SQL models (one
DuckDB writer, hourly), the daily quality report's final run for a finished day, and the lake's
compaction. Selecting by key prefix and group keeps the selection right as assets are added; the raw
lake tables (external assets) are never selected.
"""

import dagster as dg

STATISTICS_GROUP = "statistics"
PLATFORM_GROUP = "platform"

on_new_lake_data = dg.AssetSelection.key_prefixes("derived") - dg.AssetSelection.groups(STATISTICS_GROUP)
statistics = dg.AssetSelection.groups(STATISTICS_GROUP)
lake_compaction = dg.AssetSelection.groups(PLATFORM_GROUP)
