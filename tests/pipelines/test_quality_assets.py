"""The validation assets and their blocking checks, materialised on a copy of the fixture lake."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from ha_ingestor_lake.schema import STATES
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake import assets as lake_assets
from ha_ingestor_pipelines.defs.quality import assets, checks
from ha_ingestor_pipelines.defs.quality.schemas import SCHEMA_REGISTRY

from . import quality_scenario

PARTITIONED_CHECKS = [
    c for c in checks.contract_checks if all(key.asset_key != lake_assets.registry.key for key in c.check_keys)
]


def materialize(lake_root, date: str, *extra) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [assets.validation, *PARTITIONED_CHECKS, checks.rows_accounted_for, *extra],
        partition_key=date,
        resources={"lake": LakeResource(root=str(lake_root))},
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def scenario(fixture_lake, tmp_path_factory) -> quality_scenario.Scenario:
    return quality_scenario.build(fixture_lake, tmp_path_factory.mktemp("quality_assets") / "lake")


@pytest.fixture(scope="module")
def first_run(scenario) -> dg.ExecuteInProcessResult:
    return materialize(scenario.lake, scenario.date)


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_every_check_passes_and_reports_what_it_found(first_run):
    assert first_run.success
    evaluations = _evaluations(first_run)
    assert set(evaluations) == {e.check_name for e in SCHEMA_REGISTRY if e.partitioned} | {"rows_accounted_for"}
    assert all(e.passed for e in evaluations.values())
    raw_states = evaluations["raw_states_contract"].metadata
    assert raw_states["failing_rows"].value == 11
    assert raw_states["failing_rows_per_rule"].value == {
        "attributes_json_object": 2,
        "domain_matches_entity_id": 2,
        "entity_id_format": 1,
        "last_changed_not_after_last_updated": 1,
        "last_updated_plausible": 1,
        "live_row_has_event_id": 1,
        "source_known": 1,
        "state_length": 1,
        "state_num_finite": 1,
        "state_num_matches_state": 1,
    }
    assert evaluations["raw_events_contract"].metadata["failing_rows"].value == 4


def _count(sql: str) -> int:
    return duckdb.sql(sql).fetchall()[0][0]


def test_nothing_is_silently_dropped(scenario, first_run):
    lake, date = scenario.lake, scenario.date
    derived = lake / "derived"
    for table in ("events", "states"):
        raw = _count(f"SELECT count(*) FROM read_parquet('{lake}/{table}/date={date}/*.parquet')")
        validated = _count(f"SELECT count(*) FROM '{derived}/validated_{table}/date={date}/data.parquet'")
        quarantined = _count(
            f"SELECT count(*) FROM '{derived}/validation_quarantine/date={date}/data.parquet' "
            f"WHERE \"table\" = '{table}'"
        )
        assert validated + quarantined == raw
        assert quarantined > 0
    # the quarantine keeps each original row whole
    kept = duckdb.sql(
        f"SELECT row_json FROM '{derived}/validation_quarantine/date={date}/data.parquet' "
        f"WHERE list_contains(failed_rules, 'source_known')"
    ).fetchall()
    assert len(kept) == 1 and '"source":"manual"' in kept[0][0]


def test_materialisation_metadata(first_run):
    metadata = {
        m.asset_key.to_user_string(): m.materialization.metadata for m in first_run.get_asset_materialization_events()
    }
    states = metadata["derived/validated_states"]
    assert states["input_rows"].value == states["dagster/row_count"].value + states["quarantined_rows"].value
    assert states["duplicates_removed"].value == 4
    assert states["late_rows"].value == 3 and states["out_of_order_rows"].value == 1
    assert metadata["derived/validated_events"]["duplicates_removed"].value == 1
    assert metadata["derived/validation_quarantine"]["rows_per_table"].value == {"events": 5, "states": 15}


def test_a_rerun_rewrites_the_same_partition(scenario, first_run):
    lake = LakeResource(root=str(scenario.lake))
    before = {
        name: pl.read_parquet(lake.derived_file(name, scenario.date))
        for name in ("validated_events", "validated_states", "validation_quarantine")
    }
    assert materialize(scenario.lake, scenario.date).success
    for name, frame in before.items():
        after = pl.read_parquet(lake.derived_file(name, scenario.date))
        assert after.equals(frame), name
    assert sorted(p.name for p in (scenario.lake / "derived" / "validated_states").iterdir()) == [
        f"date={scenario.date}"
    ]


def test_a_day_with_too_many_broken_rows_blocks_what_comes_after(fixture_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(fixture_lake, root)
    lake = LakeResource(root=str(root))
    [date] = lake.raw_dates("states")
    states = lake.scan_raw("states", date).collect()
    # 2% of the day from a source the contract does not know
    later = dt.timedelta(microseconds=1)
    broken = states.head(states.height // 50).with_columns(
        pl.lit("manual").alias("source"),
        *[(pl.col(c) + later).alias(c) for c in ("last_changed", "last_updated", "last_reported")],
    )
    more_broken = "part-900000000003-900000000003-broken.parquet"
    pq.write_table(broken.to_arrow().cast(STATES), root / "states" / f"date={date}" / more_broken)

    result = materialize(root, date, assets.quality_report)
    evaluations = _evaluations(result)
    raw = evaluations["raw_states_contract"]
    assert not raw.passed and raw.severity == dg.AssetCheckSeverity.ERROR
    assert raw.metadata["failing_rows_per_rule"].value == {"source_known": broken.height}
    assert "source_known" in raw.metadata["sample_failures"].value
    assert evaluations["rows_accounted_for"].passed  # the broken rows are quarantined, not lost
    quarantined = lake.derived_file("validation_quarantine", date)
    assert (
        _count(f"SELECT count(*) FROM '{quarantined}' WHERE list_contains(failed_rules, 'source_known')")
        == broken.height
    )
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert assets.VALIDATED_STATES in materialized
    assert assets.QUALITY_REPORT not in materialized


def test_contract_failure_metadata_names_rules_and_dtypes(first_run, scenario):
    entry = next(e for e in SCHEMA_REGISTRY if e.check_name == "validated_states_contract")
    frame = pl.read_parquet(LakeResource(root=str(scenario.lake)).derived_file("validated_states", scenario.date))
    broken = pl.concat([frame, frame.head(2)]).with_columns(pl.col("is_late").cast(pl.Int8))
    result = checks.contract_result(entry, broken)
    assert not result.passed
    assert result.metadata["failing_rows_per_rule"].value == {"state_key_unique": 4, "sorted_by_event_time": 1}
    assert result.metadata["dtype_mismatches"].value == {"is_late": {"expected": "Boolean", "actual": "Int8"}}
    assert result.metadata["failing_rows"].value == 4


def test_registry_snapshots_hold_their_contract(scenario):
    registry_check = [c for c in checks.contract_checks if c not in PARTITIONED_CHECKS]
    result = dg.materialize(
        [lake_assets.registry, *registry_check],
        resources={"lake": LakeResource(root=str(scenario.lake))},
        selection=dg.AssetSelection.all_asset_checks(),
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    total = _count(f"SELECT count(*) FROM read_parquet('{scenario.lake}/registry/*/*/*.parquet')")
    assert evaluation.metadata["rows_checked"].value == total > 0
