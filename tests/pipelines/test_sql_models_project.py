"""The SQL model project: dependency inference with sqlglot, load-time errors, and the Dagster definitions."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from ha_ingestor_pipelines.defs.sql_models.assets import GROUP_NAME, SNAPSHOT_KEY, build_assets
from ha_ingestor_pipelines.defs.sql_models.checks import build_checks
from ha_ingestor_pipelines.defs.sql_models.project import (
    SqlProjectError,
    default_models_dir,
    load_project,
    table_references,
)

MODELS = default_models_dir()
SOURCES = """sources:
  states: {location: states, asset_key: [lake, states], contract: states}
  events: {location: events, asset_key: [lake, events], contract: events}
  registry.entities: {location: registry/entities, asset_key: [lake, registry], contract: registry}
"""


def _project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sources.yml").write_text(SOURCES)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_dependencies_leave_ctes_out():
    sql = """
        WITH recent AS (SELECT * FROM states WHERE last_updated > now() - INTERVAL 1 DAY),
             nested AS (WITH inner_cte AS (SELECT 1 AS x) SELECT * FROM inner_cte)
        SELECT * FROM recent JOIN core.dim_entities AS d USING (entity_id), nested
    """
    assert table_references(sql) == {"main.states", "core.dim_entities"}


def test_a_cte_shadowing_a_table_still_depends_on_the_table():
    # the CTE's own body reads the real `states`; only the outer reference is the CTE
    assert table_references("WITH states AS (SELECT * FROM states) SELECT * FROM states") == {"main.states"}


def test_schema_qualified_names_subqueries_unions_and_case():
    sql = """
        SELECT (SELECT max(hour) FROM Core.Agg_Entity_Hourly) AS latest, s.*
        FROM states AS s
        WHERE s.entity_id IN (SELECT entity_id FROM registry.entities)
          AND EXISTS (SELECT 1 FROM events AS e WHERE e.context_id = s.context_id)
        UNION ALL
        SELECT NULL, * FROM energy.energy_daily, generate_series(1, 3), unnest([1, 2]) AS u(x)
    """
    assert table_references(sql) == {
        "core.agg_entity_hourly",
        "main.states",
        "registry.entities",
        "main.events",
        "energy.energy_daily",
    }


def test_recursive_cte_has_no_dependency():
    sql = "WITH RECURSIVE n AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT * FROM n"
    assert table_references(sql) == frozenset()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1; SELECT 2", "exactly one SELECT"),
        ("CREATE TABLE x AS SELECT 1", "exactly one SELECT"),
        ("SELECT * FROM read_parquet('lake/states/*/*.parquet')", "reads files directly"),
        ("SELECT * FROM warehouse.core.fct_state_changes", "three-part names"),
        ("SELECT * FROM (", "cannot parse"),
    ],
)
def test_statements_that_are_not_one_plain_select_are_refused(sql, message):
    with pytest.raises(SqlProjectError, match=message):
        table_references(sql)


def test_unknown_table_is_an_error_naming_the_file_and_the_table(tmp_path):
    root = _project(tmp_path, {"core/a.sql": "SELECT * FROM states", "core/b.sql": "SELECT * FROM core.aa"})
    with pytest.raises(SqlProjectError, match=r"core/b\.sql: unknown table 'core\.aa'"):
        load_project(root)


def test_a_quoted_file_path_is_an_unknown_table(tmp_path):
    root = _project(tmp_path, {"core/a.sql": "SELECT * FROM 'lake/states/date=2026-11-26/part-1.parquet'"})
    with pytest.raises(SqlProjectError, match=r"core/a\.sql: unknown table 'main\.lake/states/date="):
        load_project(root)


def test_unqualified_model_names_get_a_hint(tmp_path):
    root = _project(tmp_path, {"core/a.sql": "SELECT * FROM states", "core/b.sql": "SELECT * FROM a"})
    with pytest.raises(SqlProjectError, match=r"unknown table 'main\.a' \(models are referenced as schema\.table\)"):
        load_project(root)


def test_cycles_and_self_references_are_errors(tmp_path):
    cycle = _project(tmp_path / "cycle", {"core/a.sql": "SELECT * FROM core.b", "core/b.sql": "SELECT * FROM core.a"})
    with pytest.raises(SqlProjectError, match="cycle"):
        load_project(cycle)
    itself = _project(tmp_path / "self", {"core/a.sql": "SELECT * FROM core.a"})
    with pytest.raises(SqlProjectError, match="reads its own table"):
        load_project(itself)


def test_assertion_files_and_their_errors(tmp_path):
    root = _project(
        tmp_path,
        {
            "core/a.sql": "-- The states.\n-- Second line.\nSELECT * FROM states",
            "core/a.assert.sql": "-- header comment\n-- @assert: no_null_entity\n-- Entities have ids.\n"
            "SELECT * FROM core.a WHERE entity_id IS NULL;\n\n"
            "-- @assert: all_events_known\nSELECT * FROM events ANTI JOIN core.a USING (context_id)\n",
        },
    )
    project = load_project(root)
    model = project.models["core.a"]
    assert model.description == "The states.\nSecond line."
    assert [(a.name, a.tables) for a in model.assertions] == [
        ("no_null_entity", {"core.a"}),
        ("all_events_known", {"main.events", "core.a"}),
    ]
    assert model.assertions[0].sql.endswith("WHERE entity_id IS NULL")

    (root / "core/a.assert.sql").write_text("SELECT 1\n-- @assert: late_header\nSELECT 2")
    with pytest.raises(SqlProjectError, match="must follow a '-- @assert: <name>' line"):
        load_project(root)
    (root / "core/a.assert.sql").write_text("-- @assert: bad\nSELECT * FROM core.nope")
    with pytest.raises(SqlProjectError, match=r"a\.assert\.sql: unknown table 'core\.nope'"):
        load_project(root)
    (root / "core/a.assert.sql").unlink()
    (root / "core/gone.assert.sql").write_text("-- @assert: x\nSELECT 1")
    with pytest.raises(SqlProjectError, match="without a model"):
        load_project(root)


def test_model_layout_errors(tmp_path):
    root = _project(tmp_path / "deep", {"core/sub/a.sql": "SELECT 1"})
    with pytest.raises(SqlProjectError, match="one folder deep"):
        load_project(root)
    root = _project(tmp_path / "clash", {"registry/a.sql": "SELECT 1"})
    with pytest.raises(SqlProjectError, match="belongs to the sources"):
        load_project(root)


def test_the_shipped_project_and_its_dependency_graph():
    project = load_project(MODELS)
    assert set(project.models) == {
        "core.dim_homes",
        "core.dim_entities",
        "core.fct_state_changes",
        "core.state_segments",
        "core.agg_entity_hourly",
        "core.agg_entity_daily",
        "energy.energy_daily",
        "automation.automation_runs",
    }
    tables = {name: model.tables for name, model in project.models.items()}
    assert tables["core.fct_state_changes"] == {"main.states"}
    assert tables["core.state_segments"] == {"core.fct_state_changes", "main.events", "main.states"}
    assert tables["energy.energy_daily"] == {"main.states", "core.dim_homes"}
    assert tables["automation.automation_runs"] == {"main.events", "main.states", "core.fct_state_changes"}
    order = list(project.order)
    for name, model in project.models.items():
        assert all(order.index(dep) < order.index(name) for dep in model.tables if dep in project.models)
    assert all(model.assertions for model in project.models.values())


def test_definitions_load_with_one_asset_per_model_and_one_check_per_assertion():
    from ha_ingestor_pipelines.definitions import defs

    project = load_project(MODELS)
    definitions = defs()
    specs = {spec.key: spec for spec in definitions.resolve_all_asset_specs()}
    for model in project.models.values():
        spec = specs[dg.AssetKey(list(model.asset_key))]
        assert spec.group_name == GROUP_NAME
        assert spec.kinds == {"duckdb", "sql"}
        assert spec.code_version == hashlib.sha256(model.path.read_bytes()).hexdigest()[:16]
        assert {dep.asset_key for dep in spec.deps} == {dg.AssetKey(list(project.asset_key(t))) for t in model.tables}
    assert {dep.asset_key for dep in specs[SNAPSHOT_KEY].deps} == {
        dg.AssetKey(list(m.asset_key)) for m in project.models.values()
    }

    check_keys = set(definitions.resolve_asset_graph().asset_check_keys)
    expected = {
        dg.AssetCheckKey(dg.AssetKey(list(m.asset_key)), a.name) for m in project.models.values() for a in m.assertions
    }
    assert expected <= check_keys
    assert all(a.op.pool == "duckdb" for a in build_assets(project))
    checks = build_checks(project)
    assert all(c.op.pool == "duckdb" and all(s.blocking for s in c.check_specs) for c in checks)
    job = definitions.resolve_job_def("sql_models")
    assert {k for k in job.asset_layer.asset_graph.get_all_asset_keys() if k.path[0] != "lake"} >= set(
        dg.AssetKey(list(m.asset_key)) for m in project.models.values()
    )


def test_definitions_refuse_to_load_a_model_reading_an_unknown_table(tmp_path, monkeypatch):
    from ha_ingestor_pipelines.definitions import defs

    broken = tmp_path / "dbt_like_sql"
    shutil.copytree(MODELS, broken)
    (broken / "core" / "typo.sql").write_text("SELECT * FROM core.fct_state_chnages")
    monkeypatch.setenv("HA_INGESTOR_SQL_MODELS", str(broken))
    with pytest.raises(Exception) as raised:  # noqa: B017 - Dagster wraps the error in its own exception types
        defs()
    causes = []
    error: BaseException | None = raised.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    [cause] = [e for e in causes if isinstance(e, SqlProjectError)]
    assert "core/typo.sql: unknown table 'core.fct_state_chnages'" in str(cause)
