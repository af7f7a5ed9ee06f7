"""Loading a test lake's landing zone into its raw Delta tables, and reading derived tables back."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from ha_ingestor_lake.files import date_directories, table_locations
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake.assets import lake_tables
from ha_ingestor_pipelines.defs.lake.load import RAW_TABLES


def landed_days(lake: Path) -> list[str]:
    """Every day some landing table has a ``date=`` directory for."""
    return sorted({day for location in table_locations(lake, RAW_TABLES) for day in date_directories(lake, location)})


def load_tables(lake: Path, days: list[str] | None = None) -> None:
    """The raw Delta tables loaded from the landing zone, as the pipelines' loader does it."""
    resources = {"lake": LakeResource(root=str(lake))}
    for day in landed_days(lake) if days is None else days:
        assert dg.materialize([lake_tables], partition_key=day, resources=resources).success


def derived(lake: LakeResource, name: str, day: str | None = None) -> pl.DataFrame:
    """A derived table as stored: one day of a daily table (without ``date``), or the whole table."""
    frame = lake.scan_derived(name) if day is None else lake.scan_day(name, day)
    assert frame is not None, f"{name} was never written"
    return frame.collect()
