"""The validation assets and their blocking checks, materialised on a copy of the fixture lake."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from ha_ingestor_lake.schema import STATES
from ha_ingestor_pipelines.defs.common.asset_keys import LAKE_REGISTRY
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.quality import assets, checks
from ha_ingestor_pipelines.defs.quality.schemas import SCHEMA_REGISTRY

from . import quality_scenario
from .lake_tables import derived, load_tables

PARTITIONED_CHECKS = [c for c in checks.contract_checks if all(key.asset_key != LAKE_REGISTRY for key in c.check_keys)]


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
    lake, date = LakeResource(root=str(scenario.lake)), scenario.date
    quarantine = derived(lake, "validation_quarantine", date)
    for table in ("events", "states"):
        raw = lake.scan_raw(table, date).collect().height
        validated = derived(lake, f"validated_{table}", date).height
        quarantined = quarantine.filter(pl.col("table") == table).height
        assert validated + quarantined == raw
        assert quarantined > 0
    # the quarantine keeps each original row whole
    kept = quarantine.filter(pl.col("failed_rules").list.contains("source_known"))["row_json"].to_list()
    assert len(kept) == 1 and '"source":"manual"' in kept[0]


def test_materialisation_metadata(first_run):
    metadata = {
        m.asset_key.to_user_string(): m.materialization.metadata for m in first_run.get_asset_materialization_events()
    }
    states = metadata["derived/validated_states"]
    assert states["input_rows"].value == states["dagster/row_count"].value + states["quarantined_rows"].value
    # the table loader already kept one row per identity: validation finds no duplicate left
    assert states["duplicates_removed"].value == 0
    assert states["late_rows"].value == 3 and states["out_of_order_rows"].value == 1
    assert metadata["derived/validated_events"]["duplicates_removed"].value == 0
    assert metadata["derived/validation_quarantine"]["rows_per_table"].value == {"events": 4, "states": 11}


def test_a_rerun_rewrites_the_same_partition(scenario, first_run):
    lake = LakeResource(root=str(scenario.lake))
    names = ("validated_events", "validated_states", "validation_quarantine")
    before = {name: derived(lake, name, scenario.date) for name in names}
    versions = {name: lake.store.table(name).version() for name in names}
    assert materialize(scenario.lake, scenario.date).success
    for name, frame in before.items():
        assert_frame_equal(derived(lake, name, scenario.date), frame, check_row_order=False)
        assert lake.store.table(name).version() == versions[name] + 1  # one transaction per rerun
    assert lake.store.dates("validated_states") == [scenario.date]


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
    load_tables(root, [date])

    result = materialize(root, date, assets.quality_report)
    evaluations = _evaluations(result)
    raw = evaluations["raw_states_contract"]
    assert not raw.passed and raw.severity == dg.AssetCheckSeverity.ERROR
    assert raw.metadata["failing_rows_per_rule"].value == {"source_known": broken.height}
    assert "source_known" in raw.metadata["sample_failures"].value
    assert evaluations["rows_accounted_for"].passed  # the broken rows are quarantined, not lost
    quarantined = derived(lake, "validation_quarantine", date)
    assert quarantined.filter(pl.col("failed_rules").list.contains("source_known")).height == broken.height
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert assets.VALIDATED_STATES in materialized
    assert assets.QUALITY_REPORT not in materialized


def test_contract_failure_metadata_names_rules_and_dtypes(first_run, scenario):
    entry = next(e for e in SCHEMA_REGISTRY if e.check_name == "validated_states_contract")
    frame = derived(LakeResource(root=str(scenario.lake)), "validated_states", scenario.date)
    broken = pl.concat([frame, frame.head(2)]).with_columns(pl.col("is_late").cast(pl.Int8))
    result = checks.contract_result(entry, broken)
    assert not result.passed
    assert result.metadata["failing_rows_per_rule"].value == {"state_key_unique": 4, "sorted_by_event_time": 1}
    assert result.metadata["dtype_mismatches"].value == {"is_late": {"expected": "Boolean", "actual": "Int8"}}
    assert result.metadata["failing_rows"].value == 4


def test_registry_snapshots_hold_their_contract(scenario):
    registry_check = [c for c in checks.contract_checks if c not in PARTITIONED_CHECKS]
    result = dg.materialize(
        [dg.AssetSpec(LAKE_REGISTRY), *registry_check],
        resources={"lake": LakeResource(root=str(scenario.lake))},
        selection=dg.AssetSelection.all_asset_checks(),
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    # the snapshots as landed, each (home, kind, snapshot_seq, item_id) once
    total = _count(
        f"SELECT count(*) FROM (SELECT DISTINCT home, kind, snapshot_seq, item_id "
        f"FROM read_parquet('{scenario.lake}/registry/*/*/*.parquet'))"
    )
    assert evaluation.metadata["rows_checked"].value == total > 0
