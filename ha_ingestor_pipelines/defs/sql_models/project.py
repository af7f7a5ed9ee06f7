"""The SQL model project in ``dbt_like_sql/``: sources, models, assertions and their dependencies.

Folder is schema, file is table: ``dbt_like_sql/core/fct_state_changes.sql`` holds one SELECT and
becomes the table ``core.fct_state_changes``. Dependencies are the tables the SELECT reads, found
by parsing it with sqlglot (CTE names excluded, scope by scope). Every table a model or an
assertion reads must be another model or a source declared in ``dbt_like_sql/sources.yml``;
anything else is an error when the project loads, so a typo fails the Dagster definitions instead
of a run at 3 a.m.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import sqlglot
import yaml
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from ha_ingestor_lake.schema import SCHEMAS

DIALECT = "duckdb"
SOURCES_FILE = "sources.yml"
ASSERT_SUFFIX = ".assert.sql"
DEFAULT_SCHEMA = "main"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_ASSERT_HEADER = re.compile(r"^--\s*@assert:\s*(\S+)\s*$", re.MULTILINE)
# Table functions that read files behind the project's back: lineage would miss them.
_FILE_READERS = (exp.ReadParquet, exp.ReadCSV)
_FILE_READER_NAMES = {
    "read_parquet",
    "parquet_scan",
    "read_csv",
    "read_csv_auto",
    "read_json",
    "read_json_auto",
    "read_ndjson",
    "read_ndjson_auto",
    "read_text",
    "read_blob",
    "iceberg_scan",
    "delta_scan",
}


class SqlProjectError(ValueError):
    """A model, an assertion or ``sources.yml`` that cannot be turned into assets."""


@dataclass(frozen=True)
class Source:
    """A lake table the models read through a view: ``name`` is how SQL refers to it, ``location`` the Delta
    table (``ha_ingestor_lake.tables.table_uri``), ``where`` an optional filter on its rows."""

    name: str
    location: str
    asset_key: tuple[str, ...]
    description: str
    contract: str | None
    where: str | None = None

    @property
    def schema(self) -> str:
        return self.name.split(".")[0]

    @property
    def table(self) -> str:
        return self.name.split(".")[1]


@dataclass(frozen=True)
class Assertion:
    """A query returning the rows that break a rule; it passes when it returns none."""

    name: str
    sql: str
    path: Path
    tables: frozenset[str]


@dataclass(frozen=True)
class Model:
    """One ``<schema>/<table>.sql`` file: a SELECT materialised as the table ``schema.table``."""

    schema: str
    table: str
    path: Path
    sql: str
    description: str
    tables: frozenset[str]
    assertions: tuple[Assertion, ...]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def asset_key(self) -> tuple[str, ...]:
        return (self.schema, self.table)

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SqlProject:
    root: Path
    sources: dict[str, Source]
    models: dict[str, Model]
    order: tuple[str, ...]

    def asset_key(self, table: str) -> tuple[str, ...]:
        """Dagster asset key of a model or a source, by its SQL name."""
        if table in self.models:
            return self.models[table].asset_key
        return self.sources[table].asset_key

    def upstream_asset_keys(self, tables: frozenset[str]) -> list[tuple[str, ...]]:
        return sorted({self.asset_key(t) for t in tables})


def default_models_dir() -> Path:
    """``HA_INGESTOR_SQL_MODELS``, else ``dbt_like_sql/`` at the repository root."""
    configured = os.environ.get("HA_INGESTOR_SQL_MODELS")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "dbt_like_sql"


def qualified_name(table: exp.Table) -> str:
    """``schema.table`` in lower case (DuckDB identifiers are case-insensitive); no schema means ``main``."""
    if table.catalog:
        raise SqlProjectError(f"{table.sql(DIALECT)}: three-part names are not supported, use schema.table")
    return f"{(table.db or DEFAULT_SCHEMA).lower()}.{table.name.lower()}"


def table_references(sql: str) -> frozenset[str]:
    """The tables one SELECT reads, as ``schema.table``; CTEs are resolved per scope and left out."""
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None]
    except SqlglotError as error:
        raise SqlProjectError(f"cannot parse the SQL: {error}") from error
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlProjectError("must hold exactly one SELECT statement (no DDL, no DML, no second statement)")
    found: set[str] = set()
    for scope in traverse_scope(statements[0]):
        for table in scope.tables:
            if isinstance(table.this, _FILE_READERS) or (
                isinstance(table.this, exp.Func) and table.this.name.lower() in _FILE_READER_NAMES
            ):
                raise SqlProjectError(f"reads files directly ({table.sql(DIALECT)}); declare a source instead")
            if not isinstance(table.this, exp.Identifier):
                continue  # a table function such as generate_series or range
            if not table.db and table.name.lower() in {name.lower() for name in scope.cte_sources}:
                continue
            found.add(qualified_name(table))
    return frozenset(found)


def load_sources(path: Path) -> dict[str, Source]:
    """The declared sources: ``{name: {location, asset_key, contract?, where?, description?}}`` under ``sources:``."""
    if not path.is_file():
        raise SqlProjectError(f"{path}: missing; the models need their sources declared")
    document = yaml.safe_load(path.read_text()) or {}
    sources = {}
    for name, spec in (document.get("sources") or {}).items():
        qualified = name if "." in name else f"{DEFAULT_SCHEMA}.{name}"
        parts = qualified.split(".")
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise SqlProjectError(f"{path}: source name {name!r} must be table or schema.table in lower snake case")
        if not isinstance(spec, dict) or not spec.get("location") or not spec.get("asset_key"):
            raise SqlProjectError(f"{path}: source {name!r} needs a location and an asset_key")
        contract = spec.get("contract")
        if contract is not None and contract not in SCHEMAS:
            raise SqlProjectError(f"{path}: source {name!r}: unknown lake contract {contract!r}")
        sources[qualified] = Source(
            name=qualified,
            location=str(spec["location"]).strip("/"),
            asset_key=tuple(spec["asset_key"]),
            description=str(spec.get("description", "")).strip(),
            contract=contract,
            where=str(spec["where"]).strip() if spec.get("where") else None,
        )
    return sources


def leading_comment(sql: str) -> str:
    """The ``--`` comment block a file starts with: the model's description."""
    lines = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        lines.append(stripped[2:].strip())
    return "\n".join(lines).strip()


def parse_assertions(path: Path) -> list[tuple[str, str]]:
    """``(name, sql)`` blocks of an assertion file, each headed by ``-- @assert: <name>``."""
    text = path.read_text()
    headers = list(_ASSERT_HEADER.finditer(text))
    preamble = text[: headers[0].start()] if headers else text
    if not headers or any(line.strip() and not line.strip().startswith("--") for line in preamble.splitlines()):
        raise SqlProjectError(f"{path}: every query must follow a '-- @assert: <name>' line")
    blocks = []
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        blocks.append((header.group(1), text[header.end() : end].strip().rstrip(";").strip()))
    return blocks


def _model_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.sql")):
        if path.name.endswith(ASSERT_SUFFIX):
            continue
        if len(path.relative_to(root).parts) != 2:
            raise SqlProjectError(f"{path}: models live in <schema>/<table>.sql, one folder deep")
        files.append(path)
    return files


def load_project(root: Path) -> SqlProject:
    """Parse every model and assertion under ``root`` and check that all they read exists."""
    root = root.resolve()
    sources = load_sources(root / SOURCES_FILE)
    source_schemas = {s.schema for s in sources.values()}
    parsed: dict[str, tuple[Path, str, frozenset[str]]] = {}
    for path in _model_files(root):
        schema, table = path.parent.name, path.name.removesuffix(".sql")
        if not (_IDENTIFIER.match(schema) and _IDENTIFIER.match(table)):
            raise SqlProjectError(f"{path}: schema and table names must be lower snake case")
        if schema in source_schemas:
            raise SqlProjectError(f"{path}: schema {schema!r} belongs to the sources; put models in another folder")
        sql = path.read_text()
        try:
            parsed[f"{schema}.{table}"] = (path, sql, table_references(sql))
        except SqlProjectError as error:
            raise SqlProjectError(f"{path}: {error}") from error

    known = set(sources) | set(parsed)

    def check_known(path: Path, tables: frozenset[str]) -> None:
        for table in sorted(tables - known):
            hint = " (models are referenced as schema.table)" if table.startswith(f"{DEFAULT_SCHEMA}.") else ""
            raise SqlProjectError(
                f"{path}: unknown table {table!r}{hint}; it is neither a model nor a source "
                f"declared in {root / SOURCES_FILE}"
            )

    models = {}
    for name, (path, sql, tables) in parsed.items():
        check_known(path, tables)
        if name in tables:
            raise SqlProjectError(f"{path}: the model reads its own table {name!r}")
        assertions = []
        assert_file = path.with_name(path.name.removesuffix(".sql") + ASSERT_SUFFIX)
        if assert_file.is_file():
            for check_name, check_sql in parse_assertions(assert_file):
                if not _IDENTIFIER.match(check_name):
                    raise SqlProjectError(f"{assert_file}: assertion name {check_name!r} must be lower snake case")
                try:
                    check_tables = table_references(check_sql)
                except SqlProjectError as error:
                    raise SqlProjectError(f"{assert_file}: assertion {check_name!r}: {error}") from error
                check_known(assert_file, check_tables)
                assertions.append(Assertion(check_name, check_sql, assert_file, check_tables))
        if len({a.name for a in assertions}) != len(assertions):
            raise SqlProjectError(f"{assert_file}: assertion names must be unique")
        schema, table = name.split(".")
        models[name] = Model(
            schema=schema,
            table=table,
            path=path,
            sql=sql,
            description=leading_comment(sql),
            tables=tables,
            assertions=tuple(assertions),
        )
    orphans = [
        path
        for path in root.rglob(f"*{ASSERT_SUFFIX}")
        if f"{path.parent.name}.{path.name.removesuffix(ASSERT_SUFFIX)}" not in models
    ]
    if orphans:
        raise SqlProjectError(f"{orphans[0]}: assertions without a model next to them")

    graph = {name: model.tables & set(models) for name, model in models.items()}
    try:
        order = tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise SqlProjectError(f"{root}: models depend on each other in a cycle: {cycle}") from error
    return SqlProject(root=root, sources=sources, models=models, order=order)


def cached_project(root: Path) -> SqlProject:
    """``load_project``, parsed once per version of the files: the asset and check definitions share it."""
    files = tuple(
        sorted((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in root.rglob("*") if path.is_file())
    )
    return _load_version(root, files)


@lru_cache(maxsize=4)
def _load_version(root: Path, files: tuple[tuple[str, int, int], ...]) -> SqlProject:
    return load_project(root)
