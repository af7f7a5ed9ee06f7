"""The lake as a typed resource: raw tables the collector writes, derived tables the pipelines write."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import polars as pl

from ha_ingestor_lake.files import COLLECTOR_OF_PART_PATH, live_files
from ha_ingestor_lake.schema import COLLECTOR_SESSIONS, SCHEMAS
from ha_ingestor_lake.schema import COLLECTOR_SESSIONS_LOCATION as SESSIONS_TABLE


class LakeResource(dg.ConfigurableResource):
    """``root`` is the lake directory (``HA_INGESTOR_LAKE``, default ``./data/lake``).

    Derived tables live under ``<root>/derived/<name>/date=YYYY-MM-DD/data.parquet``; one file per
    partition, replaced whole, so a rerun or backfill of a day rewrites exactly that day.
    """

    root: str = "./data/lake"

    @property
    def path(self) -> Path:
        return Path(self.root)

    def raw_files(self, location: str, date: str) -> list[Path]:
        """Committed Parquet files of a raw table (``events``, ``states``, ``registry/areas``...) for one day,
        each row once even while a compaction is replacing files (see ``lake_files``)."""
        return live_files(self.path / location / f"date={date}")

    def scan_raw(self, location: str, date: str) -> pl.LazyFrame:
        """One day of a raw table; an empty frame of the contract's schema when nothing landed."""
        files = self.raw_files(location, date)
        if not files:
            return pl.LazyFrame(schema=pl.Schema(pl.from_arrow(SCHEMAS[location.split("/")[0]].empty_table()).schema))
        return pl.scan_parquet(files)

    def scan_raw_by_collector(self, location: str, dates: Iterable[str]) -> pl.LazyFrame:
        """Several days of a raw table with a ``collector_id`` column: the collector that wrote each row, from
        its file's name (``part-<first>-<last>-<collector_id>.parquet``)."""
        files = [path for date in sorted(set(dates)) for path in self.raw_files(location, date)]
        if not files:
            return self.scan_raw(location, "1970-01-01").with_columns(pl.lit(None, pl.String).alias("collector_id"))
        return (
            pl.scan_parquet(files, include_file_paths="file")
            .with_columns(pl.col("file").str.extract(COLLECTOR_OF_PART_PATH, 1).alias("collector_id"))
            .drop("file")
        )

    def scan_collector_sessions(self) -> pl.LazyFrame:
        """Every row of ``collector_sessions`` (one per collector session; one file each, replaced atomically
        while its session runs); an empty frame of the contract's schema when there is none."""
        files = sorted((self.path / SESSIONS_TABLE).glob("date=*/session-*.parquet"))
        if not files:
            return pl.LazyFrame(schema=pl.Schema(pl.from_arrow(COLLECTOR_SESSIONS.empty_table()).schema))
        return pl.scan_parquet(files)

    def raw_dates(self, location: str) -> list[str]:
        directory = self.path / location
        if not directory.is_dir():
            return []
        return sorted(p.name.removeprefix("date=") for p in directory.glob("date=*") if any(p.glob("*.parquet")))

    def derived_file(self, name: str, date: str) -> Path:
        return self.path / "derived" / name / f"date={date}" / "data.parquet"

    def scan_derived(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.path / "derived" / name / "date=*" / "data.parquet", hive_partitioning=True)

    def replace_partition(self, name: str, date: str, frame: pl.LazyFrame | pl.DataFrame) -> Path:
        """Write ``frame`` as the whole of ``name``'s ``date`` partition, atomically (temp dir, then rename)."""
        final = self.derived_file(name, date)
        staging = final.parent.with_name(f".{final.parent.name}.{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(staging / final.name, compression="zstd")
        else:
            frame.write_parquet(staging / final.name, compression="zstd")
        retired = None
        if final.parent.exists():
            retired = final.parent.with_name(f".{final.parent.name}.old.{uuid.uuid4().hex}")
            os.replace(final.parent, retired)
        os.replace(staging, final.parent)
        if retired is not None:
            shutil.rmtree(retired)
        return final


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB database file with views over the lake and the SQL models (one writer at a time)."""

    database: str = "./data/warehouse.duckdb"
