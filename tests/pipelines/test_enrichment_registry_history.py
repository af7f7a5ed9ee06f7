"""Registry history (type 2 dimensions) from the fixture lake's registry snapshots and events."""

import dataclasses
import json
from datetime import timedelta

import polars as pl
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.enrichment.assets import build_dimensions
from ha_ingestor_pipelines.defs.enrichment.logic import RegistryDims, enrich_states
from ha_ingestor_pipelines.defs.enrichment.registry_history import (
    DIMENSIONS,
    history_problems,
    registry_history,
    snapshot_clock,
)

BED_LIGHT_DEVICE = "f1423a55af56c55a982c45d3e392a66d"


@pytest.fixture(scope="module")
def lake(fixture_lake) -> LakeResource:
    return LakeResource(root=str(fixture_lake))


@pytest.fixture(scope="module")
def dimensions(lake) -> dict[str, pl.DataFrame]:
    return build_dimensions(lake)


def test_rename_is_a_new_version_of_the_same_registry_entity(lake, dimensions):
    events = lake.scan_raw_days("events").filter(pl.col("event_type") == "entity_registry_updated").collect()
    renames = [
        (row["time_fired"], json.loads(row["data"]))
        for row in events.iter_rows(named=True)
        if "old_entity_id" in json.loads(row["data"])
    ]
    assert [(d["old_entity_id"], d["entity_id"]) for _, d in renames] == [
        ("sensor.carbon_dioxide", "sensor.kitchen_co2")
    ]
    renamed_at = renames[0][0]

    entities = dimensions["entities"]
    [uid] = entities.filter(pl.col("entity_id") == "sensor.carbon_dioxide")["entity_uid"].to_list()
    history = entities.filter(pl.col("entity_uid") == uid).sort("version")
    assert history["entity_id"].to_list() == ["sensor.carbon_dioxide", "sensor.kitchen_co2"]
    assert history["valid_to"][0] == renamed_at == history["valid_from"][1]
    assert history["is_current"].to_list() == [False, True]
    assert history["change_source"].to_list() == ["snapshot", "rename_event"]
    # the rest of the registry entry goes with the entity: same device, platform, unique id
    assert history.select(pl.col("device_id", "platform", "unique_id").n_unique()).row(0) == (1, 1, 1)
    assert json.loads(history["data"][1])["entity_id"] == "sensor.kitchen_co2"


def test_fixture_registry_snapshots_and_which_edits_they_hold(lake, dimensions):
    # the replayed capture answers every registry re-fetch with the recorded (initial) registry, so the
    # device area edits of the first 240 s are visible only as events, and Bed Light's move to the
    # Kids Room (t+240 s) happens after the bundled capture ends
    devices = lake.scan_raw_days("registry/devices").collect()
    assert devices["snapshot_seq"].n_unique() >= 2  # the initial one and re-fetches (debounced: 1 to 3)
    assert devices.group_by("item_id").agg(pl.col("data").n_unique())["data"].max() == 1
    edits = lake.scan_raw_days("events").filter(pl.col("event_type") == "device_registry_updated").collect()
    edited = {json.loads(d)["device_id"] for d in edits["data"]}
    assert len(edited) == 3 and BED_LIGHT_DEVICE not in edited

    dim_devices = dimensions["devices"]
    assert dim_devices.height == 51 and dim_devices["is_current"].all()
    bed_light = dim_devices.filter(pl.col("device_id") == BED_LIGHT_DEVICE)
    assert bed_light.select("name", "area_id", "version").row(0) == ("Bed Light", "bedroom", 1)
    for kind, spec in DIMENSIONS.items():
        assert history_problems(dimensions[kind], spec.key).is_empty(), kind
    assert {k: d.height for k, d in dimensions.items()} == {
        "entities": 137,
        "devices": 51,
        "areas": 10,
        "floors": 3,
        "labels": 5,
        "config_entries": 3,
    }


def test_snapshots_are_put_on_home_assistants_clock(lake):
    snapshots = pl.concat([lake.scan_raw_days(f"registry/{kind}") for kind in DIMENSIONS])
    events = lake.scan_raw_days("events")
    clock = snapshot_clock(snapshots, events).collect().sort("snapshot_seq")
    first_event = events.select(pl.col("time_fired").min()).collect().item()
    # the replay runs 40 times faster than the recording, long after it was made: the collector's
    # receive times are not HA's; on HA's clock the initial snapshots are the subscription's moment
    assert clock["observed_at"].is_sorted()
    first_of_kind = pl.col("snapshot_seq") == pl.col("snapshot_seq").min().over("kind")
    initial = clock.filter(first_of_kind)
    assert (initial["observed_at"] - first_event).abs().max() < timedelta(seconds=2)
    # and each device re-fetch comes after the device_registry_updated event that caused it
    edits = (
        events.filter(pl.col("event_type") == "device_registry_updated")
        .select("time_fired")
        .collect()["time_fired"]
        .sort()
    )
    refetches = clock.filter((pl.col("kind") == "devices") & ~first_of_kind)["observed_at"].sort()
    # how many re-fetches a burst of edits collapses into depends on timing; each edit must be followed by one
    assert edits.len() == 3 and refetches.len() >= 1
    assert all((refetches > edit).any() for edit in edits)


def _snapshot(rows: pl.DataFrame, seq: int, at, edit=None) -> pl.DataFrame:
    """A full device registry snapshot made of the real rows, with ``edit(item_id, data)`` applied."""

    def data(item_id: str, text: str) -> str:
        if edit is None or (edited := edit(item_id, json.loads(text))) == json.loads(text):
            return text
        return json.dumps(edited, separators=(",", ":"))

    return rows.with_columns(
        snapshot_seq=pl.lit(seq, pl.Int64),
        snapshot_at=pl.lit(at).cast(rows["snapshot_at"].dtype),
        data=pl.struct("item_id", "data").map_elements(lambda r: data(r["item_id"], r["data"]), return_dtype=pl.String),
    )


def test_device_moved_to_another_area_and_back(lake, dimensions):
    """Bed Light moved to the Kids Room and back, as the full capture does at t+240 s and t+400 s; the
    bundled capture stops before, so the later snapshots are the real ones with that edit applied."""
    devices_raw = lake.scan_raw_days("registry/devices")
    first = devices_raw.filter(pl.col("snapshot_seq") == pl.col("snapshot_seq").min()).collect()
    bed_rows = (
        lake.scan_raw("states", lake.raw_dates("states")[0])
        .filter(pl.col("entity_id") == "light.bed_light")
        .sort("last_updated")
        .collect()
    )
    moved_at, back_at = bed_rows["last_updated"][10], bed_rows["last_updated"][20]

    def move(area: str, when):
        def edit(item_id: str, data: dict) -> dict:
            if item_id == BED_LIGHT_DEVICE:
                return {**data, "area_id": area, "modified_at": when.timestamp()}
            return data

        return edit

    # all three snapshots stamped on HA's clock, as the collector's would be against a live HA
    snapshots = pl.concat(
        [
            _snapshot(first, 18, bed_rows["last_updated"][0]),
            _snapshot(first, 100, moved_at + timedelta(seconds=1), move("kids_room", moved_at)),
            _snapshot(first, 200, back_at + timedelta(seconds=1), move("bedroom", back_at)),
        ]
    )
    devices = registry_history(snapshots.lazy(), DIMENSIONS["devices"])
    history = devices.filter(pl.col("device_id") == BED_LIGHT_DEVICE).sort("version")
    assert history.select("area_id", "valid_from", "valid_to", "is_current").rows() == [
        ("bedroom", history["valid_from"][0], moved_at, False),
        ("kids_room", moved_at, back_at, False),
        ("bedroom", back_at, None, True),
    ]
    assert devices.filter(pl.col("device_id") != BED_LIGHT_DEVICE)["version"].max() == 1

    dims = RegistryDims(**{kind: frame.lazy() for kind, frame in dimensions.items()})
    dims = dataclasses.replace(dims, devices=devices.lazy())
    enriched = enrich_states(bed_rows.lazy(), dims, "America/Los_Angeles").collect()
    expected = ["bedroom"] * 10 + ["kids_room"] * 10 + ["bedroom"] * (bed_rows.height - 20)
    assert enriched["area_id"].cast(pl.String).to_list() == expected
    kids_floor = dimensions["areas"].filter(pl.col("area_id") == "kids_room")["floor_id"].item()
    assert enriched["floor_id"].cast(pl.String)[10] == kids_floor


def test_item_missing_from_a_later_full_snapshot_ends(lake):
    labels = lake.scan_raw_days("registry/labels").collect()
    later = labels.filter(pl.col("item_id") != "simulated").with_columns(
        snapshot_seq=pl.lit(999, pl.Int64), snapshot_at=pl.col("snapshot_at") + timedelta(minutes=5)
    )
    history = registry_history(pl.concat([labels, later]).lazy(), DIMENSIONS["labels"])
    gone = history.filter(pl.col("label_id") == "simulated").row(0, named=True)
    assert gone["valid_to"] == later["snapshot_at"][0] and not gone["is_current"]
    assert history.filter(pl.col("label_id") != "simulated")["is_current"].all()
