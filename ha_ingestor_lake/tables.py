"""The lake's Delta tables: where they live, and the one way they are written and read.

Every table (the raw ``events``, ``states``, ``registry``, ``quarantine``, ``collector_sessions`` loaded
from the landing zone, and the tables the pipelines derive) is ``<tables root>/<name>``, a Delta table
written with delta-rs. The root is a local directory or an S3-compatible ``s3://bucket/prefix``. A day
is replaced by one Delta transaction whose predicate is the ``date`` partition, so a reader sees the
day before or after, never a part of it and never a row twice; files are compacted with Delta's
``optimize`` and removed with ``vacuum``; a new column merges into the table's schema; every version
stays readable (time travel) until vacuumed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from .schema import DATE_COLUMN

TABLES_DIR = "tables"
# files the pipelines publish beside the landing zone (local, relative to the lake root)
QUALITY_REPORTS_DIR = Path("reports") / "quality"
AUTOMATION_GRAPH_PICTURE = Path("reports") / "automation_graph.png"
# Delta's own default: a reader that opened a version keeps its files for a week
DEFAULT_VACUUM_RETENTION_HOURS = 168
# optimize's target: a day of a busy home's states is a handful of files
OPTIMIZE_TARGET_BYTES = 128 * 1024 * 1024


# zstd like the landing zone; row groups of 128k rows keep DuckDB's and polars' row-group pruning useful
_WRITER = WriterProperties(compression="ZSTD", max_row_group_size=128 * 1024)


class TableAccessError(RuntimeError):
    """The tables' storage refused access (wrong credentials, missing bucket, no permission)."""


def default_tables_root(lake_root: str | Path) -> str:
    """Where the tables live unless configured: ``<lake>/tables``, beside the landing zone."""
    return str(Path(lake_root) / TABLES_DIR)


def table_uri(tables_root: str, name: str) -> str:
    """``<tables root>/<name>``: the one rule for every table's location."""
    return f"{tables_root.rstrip('/')}/{name}"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _access_error(uri: str, error: Exception) -> Exception:
    text = str(error)
    if "403" in text or "privileges" in text or "Forbidden" in text or "InvalidAccessKeyId" in text:
        return TableAccessError(
            f"{uri}: the object store refused the request (403): check the access key and secret "
            f"(HA_INGESTOR_S3_ACCESS_KEY_ID, HA_INGESTOR_S3_SECRET_ACCESS_KEY) and the bucket's permissions"
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return TableAccessError(f"{uri}: no such bucket on the object store")
    return error


@dataclass(frozen=True)
class TableStore:
    """The Delta tables under one root, with the storage options delta-rs and polars need for it."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    # the size a write cuts its data files at (delta-rs' default when None)
    target_file_bytes: int | None = None

    def uri(self, name: str) -> str:
        return table_uri(self.root, name)

    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def table(self, name: str, version: int | None = None) -> DeltaTable | None:
        """The table at its current (or a past) version; None when it was never written."""
        uri = self.uri(name)
        try:
            return DeltaTable(uri, version=version, storage_options=self._options())
        except TableNotFoundError:
            return None
        except OSError as error:
            raise _access_error(uri, error) from error

    def names(self) -> list[str]:
        """The tables under the root (folders holding a ``_delta_log``)."""
        filesystem, base = self._filesystem()
        try:
            entries = filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as error:
            raise _access_error(self.root, error) from error
        folders = [entry.base_name for entry in entries if entry.type == pafs.FileType.Directory]
        logs = filesystem.get_file_info([f"{base}/{name}/_delta_log" for name in folders])
        return sorted(name for name, log in zip(folders, logs, strict=True) if log.type == pafs.FileType.Directory)

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if not is_remote(self.root):
            return pafs.LocalFileSystem(), str(Path(self.root.removeprefix("file://")).resolve())
        options = self.storage_options
        endpoint = options.get("AWS_ENDPOINT_URL", "")
        filesystem = pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            region=options.get("AWS_REGION"),
            endpoint_override=endpoint.split("://", 1)[-1] or None,
            scheme=endpoint.split("://", 1)[0] if "://" in endpoint else "https",
        )
        return filesystem, self.root.split("://", 1)[1].rstrip("/")

    def exists(self, name: str) -> bool:
        return self.table(name) is not None

    def write(
        self, name: str, data: pa.Table | pl.DataFrame, *, day: str | None, partitioned: bool | None = None
    ) -> int:
        """Replace one day of ``name`` (``day``: every row must carry that ``date``), or the whole table
        (``day=None``), in one Delta transaction; returns the new version. New columns merge into the
        table's schema; a reader sees the previous version until the commit."""
        table = data.to_arrow() if isinstance(data, pl.DataFrame) else data
        partitioned = (day is not None) if partitioned is None else partitioned
        uri = self.uri(name)
        arguments: dict[str, Any] = {
            "mode": "overwrite",
            "schema_mode": "merge",
            "storage_options": self._options(),
            "writer_properties": _WRITER,
            "target_file_size": self.target_file_bytes,
        }
        if partitioned:
            arguments["partition_by"] = [DATE_COLUMN]
        if day is not None:
            arguments["predicate"] = f"{DATE_COLUMN} = '{dt.date.fromisoformat(day).isoformat()}'"
        else:
            # a whole-table replace may change columns freely (an unpartitioned derived table)
            arguments["schema_mode"] = "overwrite"
        try:
            write_deltalake(uri, table, **arguments)
        except OSError as error:
            raise _access_error(uri, error) from error
        written = self.table(name)
        assert written is not None
        return written.version()

    def scan(self, name: str, version: int | None = None) -> pl.LazyFrame | None:
        """The table's current (or a past) snapshot as a lazy frame; None when it was never written."""
        table = self.table(name, version)
        if table is None:
            return None
        return pl.scan_delta(table)

    def dates(self, name: str) -> list[str]:
        """The ``date`` partitions holding rows, from the snapshot's file list (no data read)."""
        table = self.table(name)
        if table is None:
            return []
        actions = pa.table(table.get_add_actions(flatten=True))
        column = f"partition.{DATE_COLUMN}"
        if column not in actions.column_names:
            return []
        counts = actions.group_by(column).aggregate([("num_records", "sum")])
        days, rows = counts.column(column).to_pylist(), counts.column("num_records_sum").to_pylist()
        return sorted(str(day) for day, count in zip(days, rows, strict=True) if day is not None and count)

    def has_day(self, name: str, day: str) -> bool:
        """Whether ``day`` of ``name`` was ever written (a day written empty holds no file, so its commit is
        looked up in the table's history)."""
        if day in self.dates(name):
            return True
        table = self.table(name)
        if table is None:
            return False
        needle = f"'{day}'"
        return any(
            needle in str(commit.get("operationParameters", {}).get("predicate", "")) for commit in table.history()
        )

    def optimize(self, name: str, day: str | None = None) -> dict[str, Any]:
        """Compact the small files of one day (or the whole table) with Delta's ``optimize``; readers keep
        seeing each row once: the old files stay in earlier versions until vacuumed."""
        table = self.table(name)
        if table is None:
            return {}
        filters = (
            [(DATE_COLUMN, "=", day)] if day is not None and DATE_COLUMN in table.metadata().partition_columns else None
        )
        return table.optimize.compact(
            partition_filters=filters, target_size=OPTIMIZE_TARGET_BYTES, writer_properties=_WRITER
        )

    def vacuum(self, name: str, retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS) -> list[str]:
        """Delete files no version newer than ``retention_hours`` needs; returns the files removed."""
        table = self.table(name)
        if table is None:
            return []
        return table.vacuum(
            retention_hours=retention_hours,
            dry_run=False,
            enforce_retention_duration=False,
        )
