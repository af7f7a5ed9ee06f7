"""The lake as typed resources: the landing zone the collector writes, the Delta tables the pipelines read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import polars as pl

from ha_ingestor_lake.schema import DATE_COLUMN, SCHEMAS
from ha_ingestor_lake.tables import DEFAULT_VACUUM_RETENTION_HOURS, TableStore, default_tables_root


def _empty(table: str) -> pl.LazyFrame:
    return pl.LazyFrame(schema=pl.Schema(pl.from_arrow(SCHEMAS[table].empty_table()).schema))


def _day(date: str) -> dt.date:
    return dt.date.fromisoformat(date)


class LakeResource(dg.ConfigurableResource):
    """The lake: ``root`` is the collector's landing zone (local, ``HA_INGESTOR_LAKE``, default ``./data/lake``),
    which only the table loader reads; ``tables`` is where the Delta tables live (``HA_INGESTOR_TABLES``,
    default ``<root>/tables``): a local directory or ``s3://bucket/prefix`` on an S3-compatible object store
    reached with the ``s3_*`` settings (``HA_INGESTOR_S3_*``). Every other reader and writer goes through the
    Delta tables: raw ones (``events``, ``states``, ``registry``, ``quarantine``, ``collector_sessions``) and
    derived ones, each ``<tables>/<name>``, partitioned by ``date`` (UTC) when they are daily."""

    root: str = "./data/lake"
    tables: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    landing_retention_days: int = -1
    """Delete a landing day's loaded files once it is this many days old and in the tables; -1 keeps them."""
    vacuum_retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS
    """How long files an older table version needs are kept (readers of that version, time travel)."""

    @property
    def path(self) -> Path:
        """The landing zone (and local outputs such as reports)."""
        return Path(self.root)

    @property
    def store(self) -> TableStore:
        root = self.tables or default_tables_root(self.root)
        options: dict[str, str] = {}
        if root.startswith("s3://"):
            options = {"AWS_REGION": self.s3_region, "AWS_CONDITIONAL_PUT": "etag"}
            if self.s3_endpoint_url:
                options["AWS_ENDPOINT_URL"] = self.s3_endpoint_url
            if self.s3_access_key_id:
                options["AWS_ACCESS_KEY_ID"] = self.s3_access_key_id
                options["AWS_SECRET_ACCESS_KEY"] = self.s3_secret_access_key
            if self.s3_endpoint_url.startswith("http://"):  # a local or in-house store without TLS
                options["AWS_ALLOW_HTTP"] = "true"
        return TableStore(root, options)

    # raw tables

    def scan_raw(self, location: str, date: str) -> pl.LazyFrame:
        """One day of a raw table in the landing contract's columns (``registry/<kind>`` for one registry
        kind); an empty frame of those columns when nothing was loaded."""
        return self.scan_raw_days(location, [date])

    def scan_raw_days(self, location: str, dates: Iterable[str] | None = None) -> pl.LazyFrame:
        """Several days (every day by default) of a raw table in the landing contract's columns."""
        return self._scan_raw_table(location, dates).select(SCHEMAS[location.split("/")[0]].names)

    def scan_raw_by_collector(self, location: str, dates: Iterable[str]) -> pl.LazyFrame:
        """Several days of a raw table with a ``collector_id`` column: the collector that wrote each row."""
        names = SCHEMAS[location.split("/")[0]].names
        return self._scan_raw_table(location, dates).select([*names, "collector_id"])

    def scan_collector_sessions(self) -> pl.LazyFrame:
        """Every row of ``collector_sessions`` (one per collector session, its newest version)."""
        return self.scan_raw_days("collector_sessions")

    def _scan_raw_table(self, location: str, dates: Iterable[str] | None) -> pl.LazyFrame:
        table, _, kind = location.partition("/")
        frame = self.store.scan(table)
        if frame is None:
            return _empty(table).with_columns(pl.lit(None, pl.String).alias("collector_id"))
        if dates is not None:
            frame = frame.filter(pl.col(DATE_COLUMN).is_in([_day(d) for d in sorted(set(dates))]))
        if kind:
            frame = frame.filter(pl.col("kind") == kind)
        return frame

    def raw_dates(self, location: str) -> list[str]:
        """The days a raw table holds rows for (``registry/<kind>``: of that kind)."""
        table, _, kind = location.partition("/")
        if not kind:
            return self.store.dates(table)
        frame = self.store.scan(table)
        if frame is None:
            return []
        days = frame.filter(pl.col("kind") == kind).select(pl.col(DATE_COLUMN).unique()).collect()
        return sorted(day.isoformat() for day in days[DATE_COLUMN])

    # derived tables

    def has_day(self, name: str, date: str) -> bool:
        """Whether the daily table ``name`` was written for ``date`` (possibly with no rows)."""
        return self.store.has_day(name, date)

    def scan_day(self, name: str, date: str) -> pl.LazyFrame | None:
        """One day of a daily derived table, without its ``date`` column; None when the table was never
        written."""
        frame = self.store.scan(name)
        if frame is None:
            return None
        return frame.filter(pl.col(DATE_COLUMN) == _day(date)).drop(DATE_COLUMN)

    def scan_derived(self, name: str) -> pl.LazyFrame | None:
        """Every row of a derived table (daily ones with their ``date``); None when it was never written."""
        return self.store.scan(name)

    def replace_partition(self, name: str, date: str, frame: pl.LazyFrame | pl.DataFrame) -> str:
        """Write ``frame`` as the whole of ``name``'s ``date`` partition in one Delta transaction; returns the
        table's location. Readers see the previous day until the commit, never a part of it."""
        data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        self.store.write(name, data.with_columns(pl.lit(_day(date)).alias(DATE_COLUMN)), day=date)
        return self.store.uri(name)

    def write_table(self, name: str, frame: pl.DataFrame) -> str:
        """Replace the whole unpartitioned table ``name`` in one Delta transaction; returns its location."""
        self.store.write(name, frame, day=None)
        return self.store.uri(name)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB database file with views over the lake and the SQL models (one writer at a time)."""

    database: str = "./data/warehouse.duckdb"
