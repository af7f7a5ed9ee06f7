"""Reading the raw lake across days and writing unpartitioned derived tables.

Unpartitioned derived tables (dimensions, graphs) live at ``<lake>/derived/<name>/data.parquet``, one
file replaced whole, next to the partitioned ones (``<lake>/derived/<name>/date=D/data.parquet``).
"""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource

from .logic import RegistryDims
from .registry_history import DIMENSIONS, dimension_schema


def scan_raw_days(lake: LakeResource, location: str, dates: list[str] | None = None) -> pl.LazyFrame:
    """Several UTC days of a raw table (all landed days by default) as one lazy frame."""
    days = lake.raw_dates(location) if dates is None else dates
    if not days:
        return lake.scan_raw(location, "1970-01-01")
    return pl.concat([lake.scan_raw(location, day) for day in days], how="vertical_relaxed")


def neighbour_day(day: str, offset: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=offset)).isoformat()


def table_file(lake: LakeResource, name: str) -> Path:
    return lake.path / "derived" / name / "data.parquet"


def write_table(lake: LakeResource, name: str, frame: pl.DataFrame) -> Path:
    """Replace the unpartitioned derived table ``name`` atomically (temp file, fsync, rename)."""
    final = table_file(lake, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}")
    frame.write_parquet(staging, compression="zstd")
    with open(staging, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(staging, final)
    return final


def scan_table(lake: LakeResource, name: str) -> pl.LazyFrame:
    return pl.scan_parquet(table_file(lake, name))


def load_dimensions(lake: LakeResource) -> RegistryDims:
    """The six registry dimensions as ``registry_dimensions`` wrote them (empty where none exist yet)."""
    frames = {}
    for kind, spec in DIMENSIONS.items():
        exists = table_file(lake, spec.table).exists()
        frames[kind] = scan_table(lake, spec.table) if exists else pl.LazyFrame(schema=dimension_schema(spec))
    return RegistryDims(**frames)
