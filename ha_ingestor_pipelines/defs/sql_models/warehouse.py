"""The DuckDB warehouse the SQL models run in: one writer at a time, views over the lake's Delta tables, a
snapshot for readers.

A source view reads exactly the Parquet files of its Delta table's current version (the delta extension
cannot be installed everywhere, and a glob would also read files an optimize has replaced), so no row is
seen twice; each refresh moves it to the newest version. Tables on an object store are copied in, once per
new version, as DuckDB here reads no object store.

DuckDB lets one process open a database file for writing, or several for reading, never both: a
read-only connection fails while a writer holds the file, and a reader blocks the writer. So the
pipelines keep ``warehouse.duckdb`` to themselves (a Dagster pool plus a lock file serialise the
writers, and every connection is short), and publish ``warehouse.snapshot.duckdb`` for people and
tools: a full copy made with ``COPY FROM DATABASE`` and swapped in with an atomic rename. Readers
that opened the old snapshot keep reading it; the next connection gets the new one.
"""

from __future__ import annotations

import fcntl
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from ha_ingestor_lake.durable import replace_durably
from ha_ingestor_lake.schema import table_schema
from ha_ingestor_lake.tables import TableStore, is_remote

from .project import Assertion, Model, Source

POOL = "duckdb"
LOCK_TIMEOUT_S = 900.0
_ARROW_TO_DUCKDB = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
}


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


def _contract_columns(source: Source) -> pa.Schema | None:
    return table_schema(source.contract) if source.contract is not None else None


def _empty_relation(columns: pa.Schema) -> str:
    return (
        "SELECT "
        + ", ".join(f"CAST(NULL AS {_duckdb_type(f.type)}) AS {_quote(f.name)}" for f in columns)
        + (" WHERE false")
    )


def _snapshot_reader(table: DeltaTable) -> str:
    """``read_parquet`` over exactly the files of the table's current version: no glob, so no file an older
    or a newer version holds (optimize leaves the files it replaced in place until vacuum)."""
    files = ", ".join(_literal(uri) for uri in table.file_uris())
    hive = (
        "hive_partitioning = true, hive_types = {'date': DATE}"
        if table.metadata().partition_columns
        else ("hive_partitioning = false")
    )
    return f"read_parquet([{files}], {hive}, union_by_name = true)"


def source_view_sql(connection: duckdb.DuckDBPyConnection, source: Source, store: TableStore) -> str | None:
    """The view's body over the source's Delta table as of its current version; the contract's columns
    (``ha_ingestor_lake.schema``) in its order for a raw table, a column no file has yet (schema evolution)
    as null. While the table holds nothing, an empty relation of the contract's columns, or ``None``
    without a contract."""
    table = store.table(source.location)
    contract = _contract_columns(source)
    if table is None or not table.file_uris():
        return _empty_relation(contract) if contract is not None else None
    reader = _snapshot_reader(table)
    where = f" WHERE {source.where}" if source.where else ""
    if contract is None:
        return f"SELECT * FROM {reader}{where}"
    present = {row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    columns = [
        _quote(f.name) if f.name in present else f"CAST(NULL AS {_duckdb_type(f.type)}) AS {_quote(f.name)}"
        for f in contract
    ]
    return f"SELECT {', '.join(columns)} FROM {reader}{where}"


def _materialise_source(connection: duckdb.DuckDBPyConnection, source: Source, store: TableStore, name: str) -> bool:
    """A remote table's current version copied into the warehouse (DuckDB reads no object store here): only
    when the version changed since the last copy. False when there is no table and no contract."""
    table = store.table(source.location)
    contract = _contract_columns(source)
    if table is None:
        if contract is None:
            return False
        connection.execute(f"CREATE OR REPLACE TABLE {name} AS {_empty_relation(contract)}")
        return True
    connection.execute("CREATE TABLE IF NOT EXISTS main._lake_versions (source VARCHAR PRIMARY KEY, version BIGINT)")
    copied = connection.execute("SELECT version FROM main._lake_versions WHERE source = ?", [source.name]).fetchall()
    exists = connection.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [source.schema, source.table]
    ).fetchall()[0][0]
    if exists and copied and copied[0][0] == table.version():
        return True
    where = f" WHERE {source.where}" if source.where else ""
    columns = "*" if contract is None else ", ".join(_quote(f.name) for f in contract)
    connection.register("_lake_snapshot", table.to_pyarrow_dataset())
    try:
        connection.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {columns} FROM _lake_snapshot{where}")
    finally:
        connection.unregister("_lake_snapshot")
    connection.execute("INSERT OR REPLACE INTO main._lake_versions VALUES (?, ?)", [source.name, table.version()])
    return True


def _drop(connection: duckdb.DuckDBPyConnection, source: Source, kind: str) -> None:
    """Drop the source's relation when it is of ``kind`` (a source moved between local and remote storage)."""
    catalog, column = ("duckdb_views()", "view_name") if kind == "VIEW" else ("duckdb_tables()", "table_name")
    found = connection.execute(
        f"SELECT count(*) FROM {catalog} WHERE schema_name = ? AND {column} = ?", [source.schema, source.table]
    ).fetchall()[0][0]
    if found:
        connection.execute(f"DROP {kind} {_quote(source.schema)}.{_quote(source.table)}")


def refresh_source_views(
    connection: duckdb.DuckDBPyConnection, sources: Iterable[Source], store: TableStore
) -> set[str]:
    """(Re)create one relation per source over its Delta table's current version: a view over the version's
    files for local tables, a copy of the version for tables on an object store. Returns the sources that
    have none because nothing was loaded yet."""
    missing = set()
    for source in sources:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(source.schema)}")
        name = f"{_quote(source.schema)}.{_quote(source.table)}"
        if is_remote(store.root):
            _drop(connection, source, "VIEW")
            if not _materialise_source(connection, source, store, name):
                missing.add(source.name)
            continue
        _drop(connection, source, "TABLE")
        body = source_view_sql(connection, source, store)
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
        replace_durably(staging, target)
    finally:
        staging.unlink(missing_ok=True)
        staging.with_name(f"{staging.name}.wal").unlink(missing_ok=True)
    return target
