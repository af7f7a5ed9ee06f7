"""``enriched_states`` and ``peak_hours`` materialised on a copy of the fixture lake, checked against
facts computed independently from the raw rows."""

import shutil
from datetime import date

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.enrichment.assets import ENRICHED_STATES, ROWS_PRESERVED_CHECK, enriched_states
from ha_ingestor_pipelines.defs.enrichment.logic import USAGE_DOMAINS, enrich_states
from ha_ingestor_pipelines.defs.enrichment.tables import load_dimensions

from .enrichment_materialize import materialize_enrichment
from .lake_tables import derived


@pytest.fixture(scope="module")
def enriched_lake(fixture_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("enrichment") / "lake"
    shutil.copytree(fixture_lake, root)
    lake = LakeResource(root=str(root))
    [day] = lake.raw_dates("states")
    result = materialize_enrichment(root, day)
    return lake, day, result


@pytest.fixture(scope="module")
def enriched(enriched_lake) -> pl.DataFrame:
    lake, day, _ = enriched_lake
    return derived(lake, "enriched_states", day)


@pytest.fixture(scope="module")
def raw(enriched_lake) -> pl.DataFrame:
    lake, day, _ = enriched_lake
    return lake.scan_raw("states", day).collect()


def test_every_row_once_and_the_check_passes(enriched_lake, enriched, raw):
    _, _, result = enriched_lake
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == ROWS_PRESERVED_CHECK]
    assert check.passed and check.asset_key == ENRICHED_STATES
    assert enriched.height == raw.height == 5482
    assert enriched.select("entity_id", "last_updated").is_duplicated().sum() == 0
    assert enriched["last_updated"].is_sorted()
    assert "attributes" not in enriched.columns and "value_num" in enriched.columns


def test_rename_keeps_the_entity(enriched):
    co2 = enriched.filter(pl.col("entity_id").is_in(["sensor.carbon_dioxide", "sensor.kitchen_co2"]))
    assert co2.height == 3  # snapshot row, removal of the old id, first row of the new id
    assert co2["entity_uid"].n_unique() == 1 and co2["entity_uid"][0] is not None
    assert co2.select(pl.col("device_name", "area_id", "integration").cast(pl.String)).unique().rows() == [
        ("Carbon dioxide", "kitchen", "demo")
    ]


def test_area_floor_labels_and_integration(enriched):
    motion = enriched.filter(pl.col("entity_id") == "binary_sensor.hall_motion").row(0, named=True)
    assert (motion["area_name"], motion["floor_name"], motion["floor_level"]) == ("Hall", "Ground Floor", 0)
    assert motion["labels"] == ["security", "simulated"] and motion["label_names"] == ["Security", "Simulated"]
    assert motion["platform"] == "template" and motion["integration"] is None
    # an entity without its own area takes its device's: the demo power sensor's device is in the utility room
    power = enriched.filter(pl.col("entity_id") == "sensor.house_power").row(0, named=True)
    assert (power["area_id"], power["floor_name"]) == ("utility_room", "Basement")
    # entities HA registers without a unique id (demo locks) have no registry context at all
    lock = enriched.filter(pl.col("entity_id") == "lock.front_door")
    assert lock["entity_uid"].is_null().all() and lock["label_names"].is_null().all()


def test_local_time_and_calendar(enriched):
    # the capture ran at 17:23-17:27 UTC, 09:23-09:27 in Los Angeles, on Thursday 26 November 2026; Delta keeps
    # every timestamp as an instant shown in UTC, the local calendar is in the local_* columns
    assert (enriched["local_time"] == enriched["last_updated"]).all()
    assert enriched["local_time"].dt.convert_time_zone("America/Los_Angeles").dt.hour().unique().to_list() == [9]
    assert enriched.select("local_date", "local_hour", "weekday_name", "season", "is_weekend").unique().rows() == [
        (date(2026, 11, 26), 9, "Thursday", "autumn", False)
    ]


def test_time_since_previous_and_frequency(enriched, raw):
    for entity_id in ("input_boolean.ping", "sensor.living_room_temperature"):
        times = raw.filter(pl.col("entity_id") == entity_id)["last_updated"].sort()
        assert times.len() > 10
        gaps = [None, *((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))]
        rows = enriched.filter(pl.col("entity_id") == entity_id)
        assert rows["seconds_since_previous"].to_list() == pytest.approx(gaps)
        assert rows["entity_events_day"].unique().to_list() == [times.len()]
        # all of the fixture's rows fall in one UTC hour, so per hour is per day
        assert rows["entity_events_per_hour"].unique().to_list() == [times.len()]


def test_zones_of_people_and_trackers(enriched):
    trackers = enriched.filter(pl.col("domain").is_in(["person", "device_tracker"]) & pl.col("state").is_not_null())
    named = trackers.filter(pl.col("state") != "not_home").filter(pl.col("state") != "unknown")
    expected = named["state"].replace(
        {"home": "zone.home", "Office": "zone.office", "Gym": "zone.gym", "School": "zone.school"}
    )
    assert named.height > 40
    assert named["zone_entity_id"].to_list() == expected.to_list()
    assert set(named["zone_match"]) == {"state"}
    assert enriched.filter(~pl.col("domain").is_in(["person", "device_tracker"]))["zone_entity_id"].is_null().all()


def test_area_temperature_is_the_latest_reading_in_that_area(enriched, raw):
    readings = raw.filter(pl.col("entity_id") == "sensor.living_room_temperature").sort("last_updated")
    rows = enriched.filter(pl.col("area_id") == "living_room")
    assert rows.height > 100
    for row in rows.iter_rows(named=True):
        before = readings.filter(pl.col("last_updated") <= row["last_updated"])
        if before.is_empty():
            assert row["area_temperature_c"] is None
        else:
            assert row["area_temperature_c"] == before["state_num"][-1]
            assert row["area_temperature_at"] == before["last_updated"][-1]
    # the garden has both an outside temperature and an outside humidity sensor
    garden = enriched.filter((pl.col("area_id") == "garden") & pl.col("area_humidity_pct").is_not_null())
    assert set(garden["area_humidity_entity_id"]) == {"sensor.outside_humidity"}
    assert enriched.filter(pl.col("area_id").is_null())["area_temperature_c"].is_null().all()


def test_peak_hours_count_usage(enriched_lake, raw):
    lake, day, _ = enriched_lake
    peaks = derived(lake, "peak_hours", day)
    usage = raw.filter(
        pl.col("domain").is_in(USAGE_DOMAINS)
        & pl.col("old_state").is_not_null()
        & (pl.col("state") != pl.col("old_state"))
    )
    home = peaks.filter(pl.col("scope") == "home").row(0, named=True)
    assert (home["local_hour"], home["events"], home["usage_events"], home["is_peak"]) == (
        9,
        raw.height,
        usage.height,
        True,
    )
    assert (
        peaks.filter(pl.col("scope") == "area")["area_id"].n_unique() == peaks.filter(pl.col("scope") == "area").height
    )


def test_rerun_gives_identical_partition(enriched_lake, enriched):
    lake, day, _ = enriched_lake
    before = lake.store.table("enriched_states").version()
    result = dg.materialize([enriched_states], resources={"lake": lake}, partition_key=day)
    assert result.success
    assert_frame_equal(derived(lake, "enriched_states", day), enriched, check_row_order=False)
    # one new version; the previous one stays readable (time travel) with the same rows
    assert lake.store.table("enriched_states").version() == before + 1
    previous = lake.store.scan("enriched_states", version=before).drop("date").collect()
    assert_frame_equal(previous, enriched, check_row_order=False)


def test_previous_day_context_and_input_order(enriched_lake):
    """Rows before a cut given as context feed the rows after it as if the day were whole; rows out of time
    order (a raw day) come out the same as rows in order (a validated day)."""
    lake, day, _ = enriched_lake
    validated = derived(lake, "validated_states", day)
    dims = load_dimensions(lake)
    cut = validated["last_updated"][validated.height // 2]
    earlier, later = validated.filter(pl.col("last_updated") < cut), validated.filter(pl.col("last_updated") >= cut)
    key = ["entity_id", "last_updated"]
    carried = [
        *key,
        "seconds_since_previous",
        "area_temperature_c",
        "area_temperature_at",
        "zone_entity_id",
        "entity_name",
        "area_name",
    ]
    whole = enrich_states(validated.lazy(), dims, "UTC").collect().filter(pl.col("last_updated") >= cut)
    in_order = enrich_states(later.lazy(), dims, "UTC", context=earlier.lazy()).collect()
    shuffled = enrich_states(
        later.sample(fraction=1.0, shuffle=True, seed=1).lazy(),
        dims,
        "UTC",
        context=earlier.sample(fraction=1.0, shuffle=True, seed=2).lazy(),
    ).collect()
    assert in_order["last_updated"].is_sorted() and shuffled["last_updated"].is_sorted()
    assert in_order.sort(key).equals(shuffled.sort(key))
    assert in_order.select(carried).sort(key).equals(whole.select(carried).sort(key))
    assert in_order["seconds_since_previous"].null_count() < later["entity_id"].n_unique()
