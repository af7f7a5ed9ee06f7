"""One landed day into the raw Delta tables: read the collector's files, set bad ones aside, deduplicate.

Only this loader reads the landing zone; everything else reads the Delta tables, so every reader sees
the same rows. A file is set aside whole, with its path and the reason, into the ``quarantine`` table
when it is not a committed file's name (``part-*``, ``session-*`` for collector_sessions), cannot be
read (truncated, corrupt), or its schema does not match the contract (a column of another type, a
column the contract does not have, a contract column missing that older files cannot lack). The
day's other files still load.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ha_ingestor_lake.durable import fsync_path, write_json_atomically
from ha_ingestor_lake.files import LandingFile, date_directories, landing_listing, table_locations
from ha_ingestor_lake.schema import (
    ADDED_COLUMNS,
    DATE_COLUMN,
    IDENTITY,
    PARTITION_TIME,
    SCHEMAS,
    STATE_SOURCE_PRIORITY,
    table_schema,
)
from ha_ingestor_lake.tables import TableStore

# quarantine last: it records the files the other tables set aside
RAW_TABLES = ("events", "states", "registry", "collector_sessions", "quarantine")
SET_ASIDE_STAGE = "landing_file"
# a pruned landing day keeps this marker: reloading it adds the remaining files to the table's rows
PRUNED_MARKER = "_pruned.json"
_READERS = max(2, os.cpu_count() or 2)
_FILE = "_landing_file"
_ROW = "_row"


@dataclass(frozen=True)
class SetAside:
    table: str
    path: Path
    collector_id: str | None
    reason: str


@dataclass
class DayLoad:
    """What one table's day holds after loading: rows ready for the Delta table and what was set aside."""

    table: str
    date: str
    rows: pa.Table
    files: list[Path] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)
    landed_rows: int = 0
    duplicates: int = 0


def _normalised(data_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_timestamp(data_type) and data_type.tz is None:  # a time without a zone is taken as UTC
        return pa.timestamp(data_type.unit, tz="UTC")
    return pa.string() if pa.types.is_large_string(data_type) else data_type


def schema_mismatch(table: str, schema: pa.Schema) -> str | None:
    """Why a file of ``schema`` does not match ``table``'s contract; None when it does."""
    contract = SCHEMAS[table]
    problems = []
    for column in schema:
        if column.name not in contract.names:
            problems.append(f"unexpected column {column.name} ({column.type})")
        elif _normalised(column.type) != contract.field(column.name).type:
            problems.append(
                f"column {column.name} is {column.type}, the contract says {contract.field(column.name).type}"
            )
    missing = [name for name in contract.names if name not in schema.names and name not in ADDED_COLUMNS[table]]
    if missing:
        problems.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return "; ".join(problems) or None


def check_landing_file(table: str, landing: LandingFile) -> SetAside | None:
    """Why a landing file cannot be loaded (its footer unreadable, its schema not the contract's); None when
    its schema conforms."""
    try:
        schema = pq.read_schema(landing.path)
    except (pa.ArrowException, OSError) as error:
        return SetAside(table, landing.path, landing.collector_id, f"unreadable Parquet: {error}")
    reason = schema_mismatch(table, schema)
    if reason is None:
        return None
    return SetAside(table, landing.path, landing.collector_id, f"schema does not match the {table} contract: {reason}")


def _scan(table: str, files: list[LandingFile], missing_columns: str = "insert") -> pl.LazyFrame:
    """The files' rows in the contract's columns (a column older files lack is null there), with the collector
    of each row's file. Polars refuses a column of another type or one the contract does not have."""
    collectors = {str(landing.path): landing.collector_id for landing in files}
    frame = pl.scan_parquet(
        list(collectors),
        schema=_polars_schema(table),
        missing_columns=missing_columns,  # type: ignore[arg-type]
        extra_columns="raise",
        include_file_paths=_FILE,
    )
    if table != "collector_sessions":
        frame = frame.with_columns(
            pl.col(_FILE).replace_strict(collectors, return_dtype=pl.String).alias("collector_id")
        )
    return frame.drop(_FILE)


def _read(table: str, files: list[LandingFile]) -> tuple[pl.DataFrame, list[SetAside]]:
    """All the files' rows at once; when one body is unreadable (a corrupt page behind a good footer), each file
    alone, to set aside exactly the bad ones."""
    try:
        return _scan(table, files).collect(), []
    except (pl.exceptions.PolarsError, OSError):
        pass
    readable, unreadable = [], []
    for landing in files:
        try:
            readable.append(_scan(table, [landing]).collect())
        except (pl.exceptions.PolarsError, OSError) as error:
            unreadable.append(SetAside(table, landing.path, landing.collector_id, f"unreadable Parquet: {error}"))
    return pl.concat(readable) if readable else _empty(table), unreadable


def _polars_schema(table: str) -> pl.Schema:
    return pl.Schema(pl.from_arrow(SCHEMAS[table].empty_table()).schema)


def _empty(table: str) -> pl.DataFrame:
    frame = pl.from_arrow(SCHEMAS[table].empty_table())
    assert isinstance(frame, pl.DataFrame)
    return (
        frame if "collector_id" in frame.columns else frame.with_columns(pl.lit(None, pl.String).alias("collector_id"))
    )


def deduplicate(table: str, rows: pl.DataFrame) -> pl.DataFrame:
    """One row per identity, in partition-time order: for states the richest source then the first received
    (as validation keeps it), for collector_sessions the newest version of the row, otherwise the first
    landed. The choice is made on a narrow frame of keys and row numbers, so the wide rows are copied once."""
    identity, time = list(IDENTITY[table]), PARTITION_TIME[table]
    order: list[pl.Expr] = []
    descending = False
    if table == "collector_sessions":
        order, descending = [pl.col("updated_at")], True
    elif table == "states":
        order = [
            pl.col("source").replace_strict(
                STATE_SOURCE_PRIORITY, default=len(STATE_SOURCE_PRIORITY), return_dtype=pl.Int8
            ),
            pl.col("received_at"),
        ]
    narrow = rows.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias(_ROW),
        *{*identity, time},
        *[expression.alias(f"_order{n}") for n, expression in enumerate(order)],
    )
    if order:
        keys = [f"_order{n}" for n in range(len(order))]
        narrow = narrow.sort(keys, descending=descending, nulls_last=True, maintain_order=True)
    kept = narrow.unique(subset=identity, keep="first", maintain_order=True)
    return rows[kept.sort(time, nulls_last=True, maintain_order=True)[_ROW]]


def _landing_files(lake_root: Path, table: str, date: str) -> tuple[list[LandingFile], list[Path]]:
    files, strays = [], []
    for location in table_locations(lake_root, (table,)):
        directory = date_directories(lake_root, location).get(date)
        if directory is not None:
            listing = landing_listing(directory, location)
            files += listing.files
            strays += listing.strays
    return files, strays


def was_pruned(lake_root: Path, table: str, date: str) -> bool:
    """Whether landing retention removed loaded files of this day (the table then holds rows landing has not)."""
    return any(
        (directory / PRUNED_MARKER).exists()
        for location in table_locations(lake_root, (table,))
        if (directory := date_directories(lake_root, location).get(date)) is not None
    )


def load_day(
    lake_root: Path,
    table: str,
    date: str,
    kept: pl.DataFrame | None = None,
    set_aside_elsewhere: list[SetAside] | None = None,
) -> DayLoad:
    """Read every landing file of ``table`` for ``date`` (all registry kinds for ``registry``), set aside what
    cannot be loaded, and deduplicate on the table's identity. ``kept``: rows the table already holds for a
    day whose landing files were pruned; ``set_aside_elsewhere`` (quarantine only): the files the other
    tables set aside that day, recorded as quarantine rows."""
    files, strays = _landing_files(lake_root, table, date)
    load = DayLoad(table, date, table_schema(table).empty_table())
    for stray in strays:
        prefix = "session-" if table == "collector_sessions" else "part-"
        load.set_aside.append(
            SetAside(table, stray, None, f"not a committed {table} file (a landing file is named {prefix}*.parquet)")
        )

    frame, conforming, unreadable = _empty(table), files, []
    try:
        # every file holds every contract column with its type (today's collectors): one scan, no footer read
        # twice
        if files:
            frame = _scan(table, files, missing_columns="raise").collect()
    except (pl.exceptions.PolarsError, OSError):
        with ThreadPoolExecutor(_READERS) as pool:  # footers are read without the GIL: side by side
            checks = list(pool.map(lambda landing: check_landing_file(table, landing), files))
        load.set_aside += [check for check in checks if check is not None]
        conforming = [landing for landing, check in zip(files, checks, strict=True) if check is None]
        frame, unreadable = _read(table, conforming) if conforming else (_empty(table), [])
    load.set_aside += unreadable
    bad = {item.path for item in unreadable}
    load.files = [landing.path for landing in conforming if landing.path not in bad]
    load.landed_rows = frame.height
    frame = frame.with_columns(pl.lit(dt.date.fromisoformat(date)).alias(DATE_COLUMN)).select(table_schema(table).names)
    if kept is not None:
        frame = pl.concat([kept.select(frame.columns).cast(frame.schema), frame])
    if table == "quarantine":
        recorded = pl.from_arrow(set_aside_rows(lake_root, (set_aside_elsewhere or []) + load.set_aside, date))
        assert isinstance(recorded, pl.DataFrame)
        frame = pl.concat([frame, recorded.cast(frame.schema)])
    unique = deduplicate(table, frame)
    load.duplicates = frame.height - unique.height
    del frame
    load.rows = unique.to_arrow()
    return load


def set_aside_rows(lake_root: Path, set_aside: list[SetAside], date: str) -> pa.Table:
    """Quarantine rows for files set aside: the path (relative to the lake root) as ``raw``, the reason."""
    schema = table_schema("quarantine")
    rows = [
        {
            "home": None,
            "received_at": _modified_at(item.path),
            "stage": SET_ASIDE_STAGE,
            "reason": f"{item.table}: {item.reason}",
            "raw": str(item.path.relative_to(lake_root)),
            "spool_seq": None,
            "collector_id": item.collector_id,
            DATE_COLUMN: dt.date.fromisoformat(date),
        }
        for item in set_aside
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def _modified_at(path: Path) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    except FileNotFoundError:
        return None


def prune_landing(lake_root: Path, table: str, date: str, loaded: list[Path]) -> int:
    """Delete a day's loaded landing files (they are in the table now); a marker in each directory records
    it, so a later load of the day keeps the table's rows instead of replacing them with what is left.
    Files set aside are kept for a person to look at."""
    directories = {path.parent for path in loaded}
    for directory in directories:
        marker = directory / PRUNED_MARKER
        if not marker.exists():
            write_json_atomically(marker, {"pruned_at": dt.datetime.now(dt.UTC).isoformat(), "table": table})
    for path in loaded:
        path.unlink(missing_ok=True)
    for directory in directories:
        fsync_path(directory)
    return len(loaded)


@dataclass(frozen=True)
class LoadedDay:
    """What loading one table's day wrote (its rows are released once written)."""

    table: str
    date: str
    rows: int
    files: list[Path]
    set_aside: list[SetAside]
    landed_rows: int
    duplicates: int
    version: int


def load_landing_day(lake_root: Path, store: TableStore, date: str) -> list[LoadedDay]:
    """Load one landed day into every raw table, one Delta transaction per table (quarantine last, with the
    files the others set aside). Memory holds one table's day at a time."""
    loaded: list[LoadedDay] = []
    set_aside: list[SetAside] = []
    for table in RAW_TABLES:
        load = load_day(lake_root, table, date, _kept_rows(lake_root, store, table, date), set_aside)
        set_aside += load.set_aside
        version = store.write(table, load.rows, day=date)
        loaded.append(
            LoadedDay(
                table,
                date,
                load.rows.num_rows,
                load.files,
                load.set_aside,
                load.landed_rows,
                load.duplicates,
                version,
            )
        )
        del load
    return loaded


def _kept_rows(lake_root: Path, store: TableStore, table: str, date: str) -> pl.DataFrame | None:
    """The rows of a day whose landing files retention deleted: the table is then the only copy of them."""
    if not was_pruned(lake_root, table, date):
        return None
    frame = store.scan(table)
    if frame is None:
        return None
    return frame.filter(pl.col(DATE_COLUMN) == dt.date.fromisoformat(date)).collect()
