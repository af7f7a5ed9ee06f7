"""The DuckDB warehouse the SQL models run in: one writer at a time, views over the lake, a snapshot for readers.

DuckDB lets one process open a database file for writing, or several for reading, never both: a
read-only connection fails while a writer holds the file, and a reader blocks the writer. So the
pipelines keep ``warehouse.duckdb`` to themselves (a Dagster pool plus a lock file serialise the
writers, and every connection is short), and publish ``warehouse.snapshot.duckdb`` for people and
tools: a full copy made with ``COPY FROM DATABASE`` and swapped in with an atomic rename. Readers
that opened the old snapshot keep reading it; the next connection gets the new one.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ha_ingestor_lake.schema import SCHEMAS

from .project import Assertion, Model, Source

POOL = "duckdb"
LOCK_TIMEOUT_S = 900.0
_ARROW_TO_DUCKDB = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}


class WarehouseBusyError(RuntimeError):
    """Another process kept the warehouse file for longer than the writer was willing to wait."""


def snapshot_path(database: Path) -> Path:
    """Where readers find the published copy: ``warehouse.duckdb`` -> ``warehouse.snapshot.duckdb``."""
    return database.with_name(f"{database.stem}.snapshot{database.suffix or '.duckdb'}")


def _lock_path(database: Path) -> Path:
    return database.with_name(f"{database.name}.writer.lock")


@contextmanager
def writer_connection(database: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to the warehouse, held by one writer at a time (waits for the others).

    The lock file serialises the pipelines' own writers even where no Dagster pool limit is set;
    the retry covers a foreign process (someone opened the working file by hand) until the deadline.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(_lock_path(database), "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseBusyError(
                        f"{database}: another pipeline step kept the writer lock for {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            while True:
                try:
                    connection = duckdb.connect(str(database))
                    break
                except duckdb.IOException as error:
                    if "lock" not in str(error).lower() or time.monotonic() > deadline:
                        raise WarehouseBusyError(
                            f"{database} is open in another process; readers should open "
                            f"{snapshot_path(database)} instead ({error})"
                        ) from error
                    time.sleep(0.5)
            try:
                # date_trunc and casts to DATE follow the session zone: pin it so results never depend on the host
                connection.execute("SET TimeZone = 'UTC'")
                yield connection
            finally:
                connection.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def connect_snapshot(database: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published snapshot; works while the pipelines write."""
    return duckdb.connect(str(snapshot_path(database)), read_only=True)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    return _ARROW_TO_DUCKDB[arrow_type]


def source_view_sql(source: Source, lake_root: Path) -> str | None:
    """The view's body over the source's Parquet files: partitioned (``date=*/*.parquet``, with the
    ``date`` column) or one unpartitioned table (``*.parquet`` in the folder). While nothing has
    landed, an empty relation of the contract's columns, or ``None`` without a contract."""
    directory = lake_root.resolve() / source.location
    # neither pattern matches the hidden staging files and folders (`.date=...`, `.data.parquet.<id>`)
    if any(directory.glob("date=*/*.parquet")):
        pattern = _literal(str(directory / "date=*" / "*.parquet"))
        return f"SELECT * FROM read_parquet({pattern}, hive_partitioning = true, union_by_name = true)"
    if any(p for p in directory.glob("*.parquet") if not p.name.startswith(".")):
        pattern = _literal(str(directory / "[!.]*.parquet"))
        return f"SELECT * FROM read_parquet({pattern}, union_by_name = true)"
    if source.contract is None:
        return None
    columns = [f"CAST(NULL AS {_duckdb_type(f.type)}) AS {_quote(f.name)}" for f in SCHEMAS[source.contract]]
    return f"SELECT {', '.join(columns)}, CAST(NULL AS DATE) AS date WHERE false"


def refresh_source_views(connection: duckdb.DuckDBPyConnection, sources: Iterable[Source], lake_root: Path) -> set[str]:
    """(Re)create one view per source; returns the sources that have no view because nothing landed yet."""
    missing = set()
    for source in sources:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(source.schema)}")
        name = f"{_quote(source.schema)}.{_quote(source.table)}"
        body = source_view_sql(source, lake_root)
        if body is None:
            connection.execute(f"DROP VIEW IF EXISTS {name}")
            missing.add(source.name)
        else:
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")
    return missing


@dataclass(frozen=True)
class Relation:
    """What a model build or an assertion produced: a row count, the columns and the first rows."""

    rows: int
    columns: list[tuple[str, str]]
    sample: list[tuple[Any, ...]]

    def to_markdown(self) -> str:
        """The first rows as a Markdown table, for Dagster metadata."""

        def cell(value: Any) -> str:
            text = "" if value is None else str(value)
            return text.replace("|", "\\|").replace("\n", " ")[:80]

        header = "| " + " | ".join(name for name, _ in self.columns) + " |"
        rule = "|" + "---|" * len(self.columns)
        rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.sample]
        return "\n".join([header, rule, *rows])


def build_model(connection: duckdb.DuckDBPyConnection, model: Model, sample_size: int = 5) -> Relation:
    """Replace ``schema.table`` with the model's SELECT in one transaction (a failed build keeps the old table)."""
    table = f"{_quote(model.schema)}.{_quote(model.table)}"
    connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(model.schema)}")
        connection.execute(f"CREATE OR REPLACE TABLE {table} AS\n{model.sql}\n")
        connection.execute("COMMIT")
    except Exception:
        connection.execute("ROLLBACK")
        raise
    rows = connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    columns = [(name, type_) for name, type_, *_ in connection.execute(f"DESCRIBE {table}").fetchall()]
    sample = connection.execute(f"SELECT * FROM {table} LIMIT {int(sample_size)}").fetchall()
    return Relation(rows=rows, columns=columns, sample=sample)


def run_assertion(connection: duckdb.DuckDBPyConnection, assertion: Assertion, sample_size: int = 5) -> Relation:
    """The rows breaking the rule: how many, and the first few."""
    relation = connection.sql(f"SELECT * FROM (\n{assertion.sql}\n) AS failing")
    rows = connection.execute(f"SELECT count(*) FROM (\n{assertion.sql}\n) AS failing").fetchall()[0][0]
    columns = list(zip(relation.columns, [str(t) for t in relation.types], strict=True))
    return Relation(rows=rows, columns=columns, sample=relation.limit(int(sample_size)).fetchall())


def publish_snapshot(connection: duckdb.DuckDBPyConnection, database: Path) -> Path:
    """Copy the whole warehouse (tables and lake views) to a new file and rename it over the snapshot."""
    target = snapshot_path(database)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    catalog = connection.execute("SELECT current_database()").fetchall()[0][0]
    try:
        connection.execute(f"ATTACH {_literal(str(staging))} AS snapshot_staging")
        try:
            connection.execute(f"COPY FROM DATABASE {_quote(catalog)} TO snapshot_staging")
        finally:
            connection.execute("DETACH snapshot_staging")
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
        staging.with_name(f"{staging.name}.wal").unlink(missing_ok=True)
    return target
