"""One asset per SQL model in ``dbt_like_sql/`` (a table in the DuckDB warehouse), and the read-only snapshot."""

from pathlib import Path

import dagster as dg

from ..common.lake_resource import LakeResource, WarehouseResource
from .project import Model, SqlProject, cached_project, default_models_dir
from .warehouse import (
    POOL,
    build_model,
    publish_snapshot,
    refresh_source_views,
    snapshot_path,
    writer_connection,
)

GROUP_NAME = "sql_models"
SNAPSHOT_KEY = dg.AssetKey(["warehouse", "snapshot"])


def _relative(path: Path, project: SqlProject) -> str:
    return str(path.relative_to(project.root.parent))


def _model_asset(project: SqlProject, model: Model) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(list(model.asset_key)),
        deps=[dg.AssetKey(list(key)) for key in project.upstream_asset_keys(model.tables)],
        description=model.description,
        group_name=GROUP_NAME,
        kinds={"duckdb", "sql"},
        code_version=model.code_version,
        pool=POOL,
        metadata={
            "dagster/table_name": model.name,
            "sql_file": _relative(model.path, project),
            "sql": dg.MetadataValue.md(f"```sql\n{model.sql.strip()}\n```"),
        },
    )
    def _materialise(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        database = Path(warehouse.database)
        with writer_connection(database) as connection:
            missing = refresh_source_views(connection, project.sources.values(), lake.store) & model.tables
            if missing:
                keys = sorted({"/".join(project.asset_key(t)) for t in missing})
                raise dg.Failure(
                    description=f"{model.name} reads {', '.join(sorted(missing))}, which has no data "
                    f"in the lake yet: materialise {', '.join(keys)} first"
                )
            built = build_model(connection, model)
        context.log.info(f"{model.name}: {built.rows} rows in {database}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": built.rows,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name, type_) for name, type_ in built.columns]
                ),
                "database": str(database),
                "preview": dg.MetadataValue.md(built.to_markdown()),
            }
        )

    return _materialise


def _snapshot_asset(project: SqlProject) -> dg.AssetsDefinition:
    @dg.asset(
        key=SNAPSHOT_KEY,
        deps=[dg.AssetKey(list(model.asset_key)) for model in project.models.values()],
        description="A copy of the whole warehouse (every model table and the views over the lake) that "
        "people and tools open read-only while the pipelines write: "
        "duckdb.connect('<warehouse>.snapshot.duckdb', read_only=True). Replaced atomically, so a "
        "reader never sees a half-written file and keeps its copy until it reconnects.",
        group_name=GROUP_NAME,
        kinds={"duckdb"},
        pool=POOL,
    )
    def warehouse_snapshot(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        database = Path(warehouse.database)
        with writer_connection(database) as connection:
            refresh_source_views(connection, project.sources.values(), lake.store)
            published = publish_snapshot(connection, database)
            tables = connection.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
            ).fetchall()[0][0]
        context.log.info(f"published {published}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(published)),
                "bytes": published.stat().st_size,
                "tables": tables,
                "open_with": dg.MetadataValue.md(
                    f"```python\nduckdb.connect({str(snapshot_path(database))!r}, read_only=True)\n```"
                ),
            }
        )

    return warehouse_snapshot


def build_assets(project: SqlProject) -> list[dg.AssetsDefinition]:
    """The model assets in dependency order, then the snapshot that depends on all of them."""
    return [_model_asset(project, project.models[name]) for name in project.order] + [_snapshot_asset(project)]


@dg.definitions
def sql_model_assets() -> dg.Definitions:
    return dg.Definitions(assets=build_assets(cached_project(default_models_dir())))
