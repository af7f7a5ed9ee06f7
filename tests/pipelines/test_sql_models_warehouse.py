"""The SQL models materialised on the fixture lake, checked against figures computed from the raw lake."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import write_deltalake

from ha_ingestor_lake.schema import IDENTITY, STATES
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource, WarehouseResource
from ha_ingestor_pipelines.defs.sql_models.assets import SNAPSHOT_KEY, build_assets
from ha_ingestor_pipelines.defs.sql_models.checks import build_checks
from ha_ingestor_pipelines.defs.sql_models.project import default_models_dir, load_project
from ha_ingestor_pipelines.defs.sql_models.warehouse import snapshot_path

from .lake_tables import load_tables

PROJECT = load_project(default_models_dir())
MODEL_TABLES = sorted(PROJECT.models)


def materialize(lake: Path, database: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*build_assets(PROJECT), *build_checks(PROJECT)],
        resources={"lake": LakeResource(root=str(lake)), "warehouse": WarehouseResource(database=str(database))},
        raise_on_error=False,
    )


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def table(connection: duckdb.DuckDBPyConnection, name: str) -> pl.DataFrame:
    return connection.sql(f"SELECT * FROM {name}").pl()


def raw(lake: Path, location: str) -> pl.DataFrame:
    return pl.read_parquet(lake / location / "date=*" / "*.parquet", hive_partitioning=False)


@pytest.fixture(scope="module")
def warehouse(fixture_lake, tmp_path_factory):
    database = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    result = materialize(fixture_lake, database)
    assert result.success
    return database, result


def test_every_model_materialises_and_every_assertion_passes(warehouse):
    database, result = warehouse
    materialised = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialised == {dg.AssetKey(list(m.asset_key)) for m in PROJECT.models.values()} | {SNAPSHOT_KEY}
    checks = check_results(result)
    assert len(checks) == sum(len(m.assertions) for m in PROJECT.models.values())
    assert all(c.passed for c in checks.values()), [k for k, c in checks.items() if not c.passed]
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    with duckdb.connect(str(database), read_only=True) as connection:
        for name in MODEL_TABLES:
            key = "/".join(PROJECT.models[name].asset_key)
            rows = connection.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
            assert metadata[key]["dagster/row_count"].value == rows > 0
            assert [c.name for c in metadata[key]["dagster/column_schema"].schema.columns] == table(
                connection, name
            ).columns


def test_views_over_the_lake_match_the_raw_files(warehouse, fixture_lake):
    database, _ = warehouse
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchall()[0][0] == raw(fixture_lake, "events").height
        assert connection.execute("SELECT count(*) FROM states").fetchall()[0][0] == raw(fixture_lake, "states").height
        assert (
            connection.execute("SELECT count(*) FROM registry.entities").fetchall()[0][0]
            == raw(fixture_lake, "registry/entities").height
        )
        # nothing was quarantined: the view exists anyway, empty, with the contract's columns plus the collector
        # and `date`
        assert not (fixture_lake / "quarantine").exists()
        assert connection.sql("SELECT * FROM quarantine").columns == [
            "home",
            "received_at",
            "stage",
            "reason",
            "raw",
            "spool_seq",
            "collector_id",
            "date",
        ]
        assert connection.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0
        # the collector's one session, whose counters match the events it landed
        events = raw(fixture_lake, "events").height
        assert connection.execute(
            "SELECT count(*), sum(events_received), sum(events_committed) FROM collector_sessions"
        ).fetchall() == [(1, events, events)]


def _state(data: str, key: str) -> str | None:
    state = json.loads(data)[key]
    return None if state is None else state["state"]


def test_state_changes_match_the_state_changed_events(warehouse, fixture_lake):
    database, _ = warehouse
    events = raw(fixture_lake, "events").filter(pl.col("event_type") == "state_changed")
    changed = {
        row["event_id"]
        for row in events.iter_rows(named=True)
        if _state(row["data"], "new_state") != _state(row["data"], "old_state")
    }
    snapshot_entities = raw(fixture_lake, "states").filter(pl.col("source") == "snapshot")["entity_id"]
    with duckdb.connect(str(database), read_only=True) as connection:
        facts = table(connection, "core.fct_state_changes")
    live = facts.filter(pl.col("source") == "live")
    assert set(live["event_id"]) == changed and live.height == len(changed)
    # every entity's first row is its connect snapshot, a change from nothing
    assert set(facts.filter(pl.col("source") == "snapshot")["entity_id"]) == set(snapshot_entities)
    assert (
        facts.filter(pl.col("previous_state").is_null() & ~pl.col("is_removal")).height
        == facts.select(pl.struct("home", "entity_id").n_unique()).item()
    )
    removal = facts.filter(pl.col("is_removal"))
    assert removal["entity_id"].to_list() == ["sensor.carbon_dioxide"]


def test_entity_dimension_follows_the_latest_registry_snapshot(warehouse, fixture_lake):
    database, _ = warehouse

    def latest(kind: str) -> dict[str, dict]:
        frame = raw(fixture_lake, f"registry/{kind}")
        newest = frame.sort("snapshot_at", "snapshot_seq").tail(1)["snapshot_seq"].item()
        return {
            row["item_id"]: json.loads(row["data"])
            for row in frame.filter(pl.col("snapshot_seq") == newest).iter_rows(named=True)
        }

    entities, devices, areas = latest("entities"), latest("devices"), latest("areas")
    with duckdb.connect(str(database), read_only=True) as connection:
        dim = {row["entity_id"]: row for row in table(connection, "core.dim_entities").iter_rows(named=True)}
    states = raw(fixture_lake, "states").sort("last_updated")
    state_entities = set(states["entity_id"])
    friendly = {
        row["entity_id"]: json.loads(row["attributes"] or "{}").get("friendly_name")
        for row in states.iter_rows(named=True)
    }
    assert set(dim) == set(entities) | state_entities
    assert {e for e, row in dim.items() if row["in_registry"]} == set(entities)
    for entity_id, entry in entities.items():
        device = devices.get(entry["device_id"] or "", {})
        area_id = entry["area_id"] or device.get("area_id")
        row = dim[entity_id]
        assert (row["platform"], row["device_id"], row["area_id"]) == (entry["platform"], entry["device_id"], area_id)
        assert row["area_name"] == (areas[area_id]["name"] if area_id else None)
        assert row["device_name"] == (device.get("name_by_user") or device.get("name"))
        assert row["name"] == (
            friendly.get(entity_id)
            or entry["name"]
            or entry["original_name"]
            or (row["device_name"] if entry["has_entity_name"] else None)
            or entity_id
        )
    assert dim["light.bed_light"]["name"] == "Bedside lamp"
    assert dim["sensor.carbon_dioxide"]["is_removed"] and not dim["sensor.kitchen_co2"]["is_removed"]


def _segments(lake: Path) -> dict[tuple[str, str], list[tuple[datetime, datetime, str | None, float | None]]]:
    """(start, end, state, value) per entity, computed in Python from the raw states and events."""
    states = raw(lake, "states").sort("last_updated")
    horizon = max(states["last_updated"].max(), raw(lake, "events")["time_fired"].max())
    changes: dict[tuple[str, str], list] = defaultdict(list)
    for row in states.iter_rows(named=True):
        key = (row["home"], row["entity_id"])
        if not changes[key] or changes[key][-1]["state"] != row["state"]:
            changes[key].append(row)
    segments = {}
    for key, rows in changes.items():
        starts = [r["last_changed"] or r["last_updated"] for r in rows]
        ends = [*starts[1:], horizon]
        segments[key] = [(s, max(e, s), r["state"], r["state_num"]) for s, e, r in zip(starts, ends, rows, strict=True)]
    return segments


def _hour_stats(segments, bucket_start: datetime, bucket_end: datetime):
    weighted = seconds = 0.0
    values = []
    for start, end, _, value in segments:
        overlap = (min(end, bucket_end) - max(start, bucket_start)).total_seconds()
        if overlap > 0 and value is not None:
            weighted += value * overlap
            seconds += overlap
            values.append(value)
    return (min(values), max(values), weighted / seconds, seconds) if values else None


def test_hourly_and_daily_statistics_are_time_weighted(warehouse, fixture_lake):
    database, _ = warehouse
    segments = _segments(fixture_lake)
    with duckdb.connect(str(database), read_only=True) as connection:
        hourly = table(connection, "core.agg_entity_hourly")
        daily = table(connection, "core.agg_entity_daily")
        [time_zone] = connection.execute("SELECT time_zone FROM core.dim_homes").fetchall()[0]
    assert time_zone == "America/Los_Angeles"
    checked = 0
    for row in hourly.iter_rows(named=True):
        expected = _hour_stats(segments[(row["home"], row["entity_id"])], row["hour"], row["hour"] + timedelta(hours=1))
        if expected is None:
            assert row["time_weighted_mean"] is None
            continue
        assert (row["min_value"], row["max_value"]) == expected[:2]
        assert row["time_weighted_mean"] == pytest.approx(expected[2], rel=1e-12)
        assert row["numeric_seconds"] == pytest.approx(expected[3], abs=1e-6)
        checked += 1
    # the fixture lies within one UTC hour: one row per entity that held a number for some time
    assert checked == sum(any(v is not None and e > s for s, e, _, v in segs) for segs in segments.values()) > 30
    temperature = hourly.filter(pl.col("entity_id") == "sensor.living_room_temperature").row(0, named=True)
    samples = raw(fixture_lake, "states").filter(pl.col("entity_id") == "sensor.living_room_temperature")
    changes = samples.filter(pl.col("state") != pl.col("old_state"))
    assert temperature["updates"] == samples.height
    assert temperature["changes"] == changes.height + 1  # plus the connect snapshot
    assert temperature["min_value"] < temperature["time_weighted_mean"] < temperature["max_value"]
    # the fixture lies within one local day: a day's figures are the hour's
    assert daily.height == hourly.height
    joined = daily.join(hourly, on=["home", "entity_id"], suffix="_hour")
    for column in ("updates", "changes", "min_value", "max_value", "numeric_seconds"):
        assert joined[column].equals(joined[f"{column}_hour"], null_equal=True), column
    assert (joined["time_weighted_mean"] - joined["time_weighted_mean_hour"]).abs().max() < 1e-9


def test_automation_runs_are_the_triggered_events_with_what_they_changed(warehouse, fixture_lake):
    database, _ = warehouse
    events = raw(fixture_lake, "events")
    triggered = events.filter(pl.col("event_type") == "automation_triggered")
    states = raw(fixture_lake, "states")
    with duckdb.connect(str(database), read_only=True) as connection:
        runs = table(connection, "automation.automation_runs")
    assert runs.height == triggered.height == 684
    assert set(runs["event_id"]) == set(triggered["event_id"])
    written = defaultdict(set)
    for row in states.filter(pl.col("context_id").is_not_null()).iter_rows(named=True):
        written[row["context_id"]].add(row["entity_id"])
    calls = defaultdict(int)
    for context_id in events.filter(pl.col("event_type") == "call_service")["context_id"]:
        calls[context_id] += 1
    for run in runs.iter_rows(named=True):
        assert run["updated_entities"] == sorted(written[run["context_id"]] - {run["automation_entity_id"]})
        assert set(run["changed_entities"]) <= set(run["updated_entities"])
        assert run["service_calls"] == calls[run["context_id"]]
    parents, scripts = defaultdict(set), defaultdict(set)
    for run in runs.iter_rows(named=True):
        parents[run["automation_entity_id"]].add(run["parent_automation_entity_id"])
        scripts[run["automation_entity_id"]].update(run["scripts_started"])
    chain_a = "automation.chain_a_start_helper_turns_on_run_script"
    assert scripts[chain_a] == {"script.chain_step"}
    assert chain_a in parents["automation.chain_b_react_to_chain_hop_counter"]
    # the circular pair: each side is triggered by the other's run
    assert "automation.loop_pong_ping" in parents["automation.loop_ping_pong"]
    assert "automation.loop_ping_pong" in parents["automation.loop_pong_ping"]


def test_energy_per_day_on_the_fixture(warehouse, fixture_lake):
    database, _ = warehouse
    readings = [
        float(_state(d, "new_state"))
        for d in raw(fixture_lake, "events")
        .filter((pl.col("event_type") == "state_changed") & (pl.col("entity_id") == "sensor.house_energy"))
        .sort("time_fired")["data"]
    ]
    snapshot = (
        raw(fixture_lake, "states")
        .filter((pl.col("entity_id") == "sensor.house_energy") & (pl.col("source") == "snapshot"))["state_num"]
        .item()
    )
    with duckdb.connect(str(database), read_only=True) as connection:
        [row] = table(connection, "energy.energy_daily").iter_rows(named=True)
    assert row["entity_id"] == "sensor.house_energy" and row["resets"] == 0
    assert row["day"].isoformat() == "2026-11-26" and row["time_zone"] == "America/Los_Angeles"
    assert row["energy_kwh"] == pytest.approx(readings[-1] - snapshot, abs=1e-9)
    assert row["energy_kwh"] > 0


def test_a_rerun_gives_identical_tables(warehouse, fixture_lake):
    database, _ = warehouse
    with duckdb.connect(str(database), read_only=True) as connection:
        before = {name: table(connection, name) for name in MODEL_TABLES}
    assert materialize(fixture_lake, database).success
    with duckdb.connect(str(database), read_only=True) as connection:
        for name in MODEL_TABLES:
            assert table(connection, name).equals(before[name], null_equal=True), name


def _append_states(lake: Path, rows: list[dict], tag: str) -> None:
    """Land extra state rows as the collector would: one contract-conformant part file per UTC day."""
    by_day = defaultdict(list)
    for row in rows:
        by_day[row["last_updated"].date().isoformat()].append(row)
    for day, day_rows in by_day.items():
        directory = lake / "states" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        full = [{name: row.get(name) for name in STATES.names} for row in day_rows]
        pq.write_table(pa.Table.from_pylist(full, schema=STATES), directory / f"part-9-9-{tag}.parquet")


def _meter_row(template: dict, at: datetime, value: float, unit: str = "kWh", entity_id: str | None = None) -> dict:
    attributes = json.loads(template["attributes"]) | {"unit_of_measurement": unit}
    return template | {
        "entity_id": entity_id or template["entity_id"],
        "state": str(value),
        "state_num": value,
        "attributes": json.dumps(attributes),
        "last_changed": at,
        "last_updated": at,
        "last_reported": at,
        "received_at": at,
        "source": "live",
        "event_id": None,
        "context_id": None,
        "context_parent_id": None,
        "old_state": None,
    }


def test_meter_resets_dips_and_unit_changes(fixture_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(fixture_lake, lake)
    meter = raw(lake, "states").filter(pl.col("entity_id") == "sensor.house_energy").sort("last_updated")
    template, first = meter.row(-1, named=True), meter["state_num"][0]

    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    _append_states(
        lake,
        [
            _meter_row(template, utc("2026-11-26 20:00"), 1235.0),  # 12:00 in Los Angeles
            _meter_row(template, utc("2026-11-27 02:00"), 0.4),  # reset: 0.4 kWh since
            _meter_row(template, utc("2026-11-27 07:30"), 0.9),  # 23:30 on the 26th locally
            _meter_row(template, utc("2026-11-27 08:30"), 1.5),  # 00:30 on the 27th locally
            _meter_row(template, utc("2026-11-27 09:00"), 1.45),  # a dip, not a reset
            _meter_row(template, utc("2026-11-27 10:00"), 1.6),  # 0.1 above the highest reading
            _meter_row(template, utc("2026-11-27 11:00"), 1600.0, "Wh"),  # the unit changes, the energy does not
            _meter_row(template, utc("2026-11-27 12:00"), 2100.0, "Wh"),
        ],
        "reset",
    )
    load_tables(lake)
    database = tmp_path / "warehouse.duckdb"
    result = materialize(lake, database)
    assert result.success and all(c.passed for c in check_results(result).values())
    with duckdb.connect(str(database), read_only=True) as connection:
        days = {r["day"].isoformat(): r for r in table(connection, "energy.energy_daily").iter_rows(named=True)}
    assert set(days) == {"2026-11-26", "2026-11-27"}
    assert days["2026-11-26"]["energy_kwh"] == pytest.approx((1235.0 - first) + 0.4 + 0.5, abs=1e-9)
    assert days["2026-11-26"]["resets"] == 1
    assert days["2026-11-27"]["energy_kwh"] == pytest.approx(0.6 + 0.1 + 0.5, abs=1e-9)
    assert (days["2026-11-27"]["resets"], days["2026-11-27"]["last_reading_kwh"]) == (0, pytest.approx(2.1))


def test_assertions_fail_on_broken_data_and_block_the_snapshot(fixture_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(fixture_lake, lake)
    # a meter reporting a negative reading, landed; and rows the tables hold twice (the loader never lets a
    # copy in: appended to the Delta tables behind its back)
    event_file = max((lake / "events").glob("date=*/*.parquet"), key=lambda p: p.stat().st_size)
    entity_files = sorted((lake / "registry" / "entities").glob("date=*/*.parquet"))
    template = raw(lake, "states").filter(pl.col("entity_id") == "sensor.house_energy").row(-1, named=True)
    at = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)
    _append_states(
        lake,
        [
            _meter_row(template, at, 5.0, entity_id="sensor.broken_meter"),
            _meter_row(template, at + timedelta(minutes=1), -3.0, entity_id="sensor.broken_meter"),
        ],
        "broken",
    )
    load_tables(lake)
    store = LakeResource(root=str(lake)).store
    for table, file in (("events", event_file), ("registry", entity_files[-1])):
        copies = (
            store.scan(table)
            .collect()
            .join(pl.read_parquet(file).select(IDENTITY[table]), on=list(IDENTITY[table]), how="semi")
        )
        write_deltalake(store.uri(table), copies.to_arrow(), mode="append")

    database = tmp_path / "warehouse.duckdb"
    result = materialize(lake, database)
    checks = check_results(result)
    failed = {k for k, c in checks.items() if not c.passed}
    assert failed == {
        "automation/automation_runs:one_row_per_run",
        "core/dim_entities:one_row_per_entity",
        "energy/energy_daily:no_negative_energy",
    }
    # the runs landed twice, and the runs they triggered (each now finds two parents)
    duplicated = pl.read_parquet(event_file).filter(pl.col("event_type") == "automation_triggered")
    all_runs = raw(fixture_lake, "events").filter(pl.col("event_type") == "automation_triggered")
    children = all_runs.filter(pl.col("context_parent_id").is_in(duplicated["context_id"].to_list()))
    run_check = checks["automation/automation_runs:one_row_per_run"]
    assert run_check.metadata["failing_rows"].value == len(set(duplicated["event_id"]) | set(children["event_id"]))
    assert duplicated.height > 100
    assert "| event_id | copies |" in run_check.metadata["sample"].value
    assert (
        checks["core/dim_entities:one_row_per_entity"].metadata["failing_rows"].value
        == pl.read_parquet(entity_files[-1]).height
    )
    energy = checks["energy/energy_daily:no_negative_energy"]
    assert energy.metadata["failing_rows"].value == 1 and "sensor.broken_meter" in energy.metadata["sample"].value
    assert energy.severity == dg.AssetCheckSeverity.ERROR
    # blocking checks: the readers' snapshot is not published from failing models
    assert SNAPSHOT_KEY not in {e.asset_key for e in result.get_asset_materialization_events()}
    assert not snapshot_path(database).exists()


def test_the_shipped_instance_lets_one_run_at_a_time_write_the_warehouse(tmp_path, monkeypatch):
    """Each SQL model sits in the duckdb pool, and both shipped instance files limit every pool to one."""
    repo = Path(__file__).resolve().parents[2]
    project = load_project(default_models_dir())
    assert {assets.node_def.pool for assets in build_assets(project)} == {"duckdb"}
    shipped, postgres = (
        yaml.safe_load((repo / name).read_text()) for name in ("dagster.yaml", "dagster-postgres.yaml")
    )
    assert postgres["concurrency"] == shipped["concurrency"]
    shutil.copy(repo / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 2
    finally:
        instance.dispose()
