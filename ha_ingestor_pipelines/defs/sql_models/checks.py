"""Assertion queries (``<schema>/<table>.assert.sql``) as blocking asset checks on their model.

A query returns the rows that break a rule: the check passes when it returns none, and otherwise
reports how many and the first few. Checks are blocking, so a failing model stops its downstream
models and the snapshot readers see in the same run (write, audit, then publish).
"""

from pathlib import Path

import dagster as dg

from ..common.lake_resource import LakeResource, WarehouseResource
from .project import Assertion, Model, SqlProject, cached_project, default_models_dir, leading_comment
from .warehouse import POOL, refresh_source_views, run_assertion, writer_connection


def _assertion_check(project: SqlProject, model: Model, assertion: Assertion) -> dg.AssetChecksDefinition:
    others = assertion.tables - {model.name}

    @dg.asset_check(
        asset=dg.AssetKey(list(model.asset_key)),
        name=assertion.name,
        description=leading_comment(assertion.sql) or f"No rows from the {assertion.name} query.",
        blocking=True,
        additional_deps=[
            dg.AssetKey(list(key)) for key in project.upstream_asset_keys(frozenset(others)) if key != model.asset_key
        ],
        pool=POOL,
        metadata={"sql_file": str(assertion.path.relative_to(project.root.parent))},
    )
    def _check(lake: LakeResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with writer_connection(Path(warehouse.database)) as connection:
            refresh_source_views(connection, project.sources.values(), lake.store)
            failing = run_assertion(connection, assertion)
        metadata: dict[str, dg.RawMetadataValue] = {
            "failing_rows": failing.rows,
            "query": dg.MetadataValue.md(f"```sql\n{assertion.sql}\n```"),
        }
        if failing.rows:
            metadata["sample"] = dg.MetadataValue.md(failing.to_markdown())
        return dg.AssetCheckResult(passed=failing.rows == 0, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)

    return _check


def build_checks(project: SqlProject) -> list[dg.AssetChecksDefinition]:
    return [
        _assertion_check(project, project.models[name], assertion)
        for name in project.order
        for assertion in project.models[name].assertions
    ]


@dg.definitions
def sql_model_checks() -> dg.Definitions:
    return dg.Definitions(asset_checks=build_checks(cached_project(default_models_dir())))
