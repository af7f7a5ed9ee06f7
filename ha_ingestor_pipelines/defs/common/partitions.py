"""The one partitioning every partitioned asset shares: UTC days, like the lake's ``date=``."""

import datetime as dt

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)


def neighbour_day(day: str, offset: int) -> str:
    """The UTC day ``offset`` days from ``day`` (``YYYY-MM-DD``)."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=offset)).isoformat()
