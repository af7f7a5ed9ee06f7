"""Which assets run on new lake data and which run on a clock.

When the collector commits new data for a day, the raw Delta tables (keys ``lake/...``) load it and the
tables derived from them (keys ``derived/...``, all on the shared daily partitions) follow. Everything
else has a clock of its own: the long-term statistics (group ``statistics``: pulled from Home Assistant,
not from the lake), the SQL models (one DuckDB writer, hourly), the daily quality report's final run for
a finished day, and the tables' maintenance. Selecting by key prefix and group keeps the selection right
as assets are added; the landing zone (external assets) is never selected.
"""

import dagster as dg

STATISTICS_GROUP = "statistics"
PLATFORM_GROUP = "platform"

on_new_lake_data = dg.AssetSelection.key_prefixes("lake", "derived") - dg.AssetSelection.groups(STATISTICS_GROUP)
statistics = dg.AssetSelection.groups(STATISTICS_GROUP)
table_maintenance = dg.AssetSelection.groups(PLATFORM_GROUP)
