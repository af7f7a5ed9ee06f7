"""The one partitioning every partitioned asset shares: UTC days, like the lake's ``date=``."""

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)
