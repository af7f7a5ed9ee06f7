"""Validation rules, the split into validated and quarantined rows, and the pandera contracts, on real rows."""

from __future__ import annotations

import datetime as dt
import re

import pandera.polars as pa
import polars as pl
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.quality import schemas
from ha_ingestor_pipelines.defs.quality.rules import ENTITY_ID_PATTERN, EVENT_RULES, STATE_RULES
from ha_ingestor_pipelines.defs.quality.validation import (
    COLLECT_ENGINE,
    EVENTS,
    STATES,
    split_day,
    split_with_fallback,
)

# homeassistant.core.VALID_ENTITY_ID, with the look-arounds polars' regex engine lacks
HA_VALID_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
LATE_AFTER = dt.timedelta(minutes=10)


@pytest.fixture(scope="module")
def day(fixture_lake) -> tuple[pl.DataFrame, pl.DataFrame]:
    lake = LakeResource(root=str(fixture_lake))
    [date] = lake.raw_dates("states")
    return lake.scan_raw("states", date).collect(), lake.scan_raw("events", date).collect()


def _split(frame: pl.DataFrame, spec=STATES) -> tuple[pl.DataFrame, pl.DataFrame]:
    return split_with_fallback(frame.lazy(), spec, LATE_AFTER)


def test_the_real_day_is_valid_and_keeps_every_row(day):
    states, events = day
    for frame, spec in ((states, STATES), (events, EVENTS)):
        validated, quarantine = _split(frame, spec)
        assert quarantine.height == 0, quarantine["failed_rules"].to_list()
        assert validated.height == frame.height
        assert validated[spec.time_column].is_sorted()
    schemas.RawStates.validate(states, lazy=True)
    schemas.RawEvents.validate(events, lazy=True)


def test_entity_id_pattern_agrees_with_home_assistant(day):
    states, _ = day
    candidates = states["entity_id"].unique().to_list() + [
        "vacuum.0_ground_floor",
        "sensor.a",
        "a.b",
        "sensor._x",
        "sensor.x_",
        "_sensor.x",
        "sensor_.x",
        "sensor.a__b",
        "sen__sor.x",
        "Sensor.x",
        "sensor.x-y",
        "sensor",
        "sensor.x.y",
        "sensor.",
        ".x",
        "",
        "sensor.kitchen co2",
        "light.ümlaut",
        "a1.b2_c3",
    ]
    ours = (
        pl.DataFrame({"e": candidates})
        .select(pl.col("e").str.contains(ENTITY_ID_PATTERN) & ~pl.col("e").str.contains("__", literal=True))["e"]
        .to_list()
    )
    assert ours == [bool(HA_VALID_ENTITY_ID.match(e)) for e in candidates]


def _one_row(frame: pl.DataFrame, entity_id: str) -> pl.DataFrame:
    return frame.filter(pl.col("entity_id") == entity_id).sort("last_updated").head(1)


BROKEN_STATES = {
    "entity_id_present": dict(entity_id=None),
    "entity_id_format": dict(entity_id="sensor.Kitchen", domain="sensor"),
    "domain_matches_entity_id": dict(domain="binary_sensor"),
    "home_present": dict(home=""),
    "last_updated_present": dict(last_updated=None),
    "last_changed_present": dict(last_changed=None),
    "last_changed_not_after_last_updated": dict(last_changed=dt.datetime(2026, 11, 26, 23, 0, tzinfo=dt.UTC)),
    "last_reported_not_before_last_updated": dict(last_reported=dt.datetime(2026, 11, 26, 0, 0, tzinfo=dt.UTC)),
    "state_length": dict(state="x" * 256, state_num=None),
    "state_num_finite": dict(state="nan", state_num=float("nan")),
    "state_num_matches_state": dict(state_num=-1.0),
    "attributes_json_object": dict(attributes='["not", "an", "object"]'),
    "removal_has_no_attributes": dict(state=None, state_num=None),
    "source_known": dict(source="replay"),
    "live_row_has_event_id": dict(event_id=None),
    "event_id_format": dict(event_id="NOT-HEX"),
    "received_at_present": dict(received_at=None),
}


def test_every_state_rule_has_a_breaking_case():
    assert set(BROKEN_STATES) | {"last_updated_plausible"} == {rule.name for rule in STATE_RULES}


@pytest.mark.parametrize("rule", sorted(BROKEN_STATES))
def test_a_row_breaking_a_state_rule_is_quarantined_under_its_name(day, rule):
    states, _ = day
    row = _one_row(states.filter(pl.col("source") == "live"), "sensor.house_power")
    changes = BROKEN_STATES[rule]
    bad = row.with_columns(
        *[pl.lit(value, dtype=row.schema[column]).alias(column) for column, value in changes.items()]
    )
    frame = pl.concat([states, bad])
    validated, quarantine = _split(frame)
    assert quarantine.height == 1 and rule in quarantine["failed_rules"][0].to_list()
    assert validated.height + quarantine.height == frame.height
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        schemas.RawStates.validate(frame, lazy=True)
    assert rule in set(raised.value.failure_cases["check"].to_list())


def test_a_state_from_the_far_future_is_quarantined(day):
    states, _ = day
    row = _one_row(states.filter(pl.col("source") == "live"), "sensor.house_power")
    # received 4 h before HA says it happened (relative to last_updated: the fixture's own receive lag
    # grows with the time since the fixture lake was built)
    bad = row.with_columns((pl.col("last_updated") - dt.timedelta(hours=4)).alias("received_at"))
    _, quarantine = _split(pl.concat([states, bad]))
    assert quarantine["failed_rules"].to_list() == [["last_updated_plausible"]]


BROKEN_EVENTS = {
    "event_id_present": dict(event_id=None),
    "event_id_format": dict(event_id="0" * 31),
    "event_type_present": dict(event_type=""),
    "event_type_length": dict(event_type="x" * 65),
    "time_fired_present": dict(time_fired=None),
    "origin_known": dict(origin="local"),
    "context_id_present": dict(context_id=None),
    "entity_id_format": dict(entity_id="light.Bed"),
    "data_json_object": dict(data='{"entity_id": "light.bed_light"'),
    "received_at_present": dict(received_at=None),
    "home_present": dict(home=None),
}


@pytest.mark.parametrize("rule", sorted(BROKEN_EVENTS))
def test_an_event_breaking_a_rule_is_quarantined_under_its_name(day, rule):
    _, events = day
    row = events.filter(pl.col("event_type") == "call_service").head(1)
    bad = row.with_columns(
        *[pl.lit(value, dtype=row.schema[column]).alias(column) for column, value in BROKEN_EVENTS[rule].items()]
    )
    validated, quarantine = _split(pl.concat([events, bad]), EVENTS)
    assert quarantine.height == 1 and rule in quarantine["failed_rules"][0].to_list()
    assert validated.height == events.height


def test_a_state_changed_event_without_entity_is_quarantined(day):
    _, events = day
    bad = (
        events.filter(pl.col("event_type") == "state_changed")
        .head(1)
        .with_columns(pl.lit(None, pl.String).alias("entity_id"), pl.lit("c" * 32).alias("event_id"))
    )
    _, quarantine = _split(pl.concat([events, bad]), EVENTS)
    assert quarantine["failed_rules"].to_list() == [["state_changed_has_entity_id"]]
    assert {rule.name for rule in EVENT_RULES} == set(BROKEN_EVENTS) | {
        "time_fired_plausible",
        "state_changed_has_entity_id",
    }


def test_brace_shaped_invalid_json_is_caught_by_the_per_row_fallback(day):
    states, _ = day
    row = _one_row(states.filter(pl.col("source") == "live"), "sensor.house_power")
    bad = row.with_columns(pl.lit('{"unit_of_measurement": W}').alias("attributes"))
    frame = pl.concat([states, bad])
    fast = split_day(frame.lazy(), STATES, strict_json=False)
    with pytest.raises(pl.exceptions.ComputeError):
        pl.collect_all([fast.validated, fast.quarantine])
    validated, quarantine = _split(frame)
    assert quarantine["failed_rules"].to_list() == [["attributes_json_object"]]
    clean_fast, _ = _split(states)
    clean_strict = split_day(states.lazy(), STATES, strict_json=True).validated.collect(engine=COLLECT_ENGINE)
    assert clean_fast.equals(clean_strict)
    assert validated.equals(clean_strict)


def test_duplicates_keep_the_live_copy_and_quarantine_the_others(day):
    states, _ = day
    live = states.filter(pl.col("source") == "live").head(5)
    copies = pl.concat(
        [
            live.with_columns(
                pl.lit("backfill").alias("source"),
                pl.lit(None, pl.String).alias("event_id"),
                (pl.col("received_at") + dt.timedelta(minutes=5)).alias("received_at"),
            ),
            live.head(2).with_columns(pl.lit("snapshot").alias("source"), pl.lit(None, pl.String).alias("event_id")),
        ]
    )
    validated, quarantine = _split(pl.concat([copies, states]))  # the copies come first in the input
    assert validated.height == states.height
    assert quarantine.height == 7
    assert quarantine["failed_rules"].to_list() == [["duplicate"]] * 7
    kept = validated.join(live.select("entity_id", "last_updated"), on=["entity_id", "last_updated"])
    assert kept["source"].to_list() == ["live"] * 5 and kept["event_id"].null_count() == 0
    assert validated.select(pl.struct("home", "entity_id", "last_updated").is_unique().all()).item()


def test_late_and_out_of_order_rows_are_flagged(day):
    states, _ = day
    live = states.filter(pl.col("source") == "live")
    lag = (live["received_at"] - live["last_updated"]).median()
    light = live.filter(pl.col("entity_id") == "light.bed_light").sort("last_updated")
    first = light.row(0, named=True)
    late = pl.DataFrame(
        [
            {
                **first,
                "source": "backfill",
                "event_id": None,
                "last_updated": first["last_updated"] - dt.timedelta(seconds=30),
                "last_changed": first["last_updated"] - dt.timedelta(seconds=30),
                "last_reported": None,
                "received_at": live["received_at"].max() + dt.timedelta(minutes=20),
            }
        ],
        schema=states.schema,
    )
    on_time = pl.DataFrame(
        [
            {
                **first,
                "source": "backfill",
                "event_id": None,
                "last_updated": first["last_updated"] + dt.timedelta(microseconds=1),
                "last_changed": first["last_updated"] + dt.timedelta(microseconds=1),
                "last_reported": None,
                "received_at": first["last_updated"] + lag + dt.timedelta(minutes=5),
            }
        ],
        schema=states.schema,
    )
    validated, _ = _split(pl.concat([states, late, on_time]))
    flagged = validated.filter(pl.col("is_late") | pl.col("is_out_of_order"))
    assert flagged.select("last_updated", "is_late", "is_out_of_order").rows() == [
        (late["last_updated"][0], True, True),
        (on_time["last_updated"][0], False, True),
    ]
    assert validated["last_updated"].is_sorted()


def test_contracts_of_the_validated_tables_hold_and_can_fail(day):
    states, events = day
    validated_states, _ = _split(states)
    validated_events, _ = _split(events, EVENTS)
    schemas.ValidatedStates.validate(validated_states, lazy=True)
    schemas.ValidatedEvents.validate(validated_events, lazy=True)
    schemas.NormalizedUnits.validate(validated_states, lazy=True)

    shuffled = validated_states.reverse().with_columns(pl.col("value_num_normalized").cast(pl.Float32))
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        schemas.ValidatedStates.validate(shuffled, lazy=True)
    failures = raised.value.failure_cases
    assert "sorted_by_event_time" in failures["check"].to_list()
    assert failures.filter(pl.col("column") == "value_num_normalized")["failure_case"].to_list() == ["Float32"]

    mixed = validated_states.with_columns(
        pl.when((pl.col("entity_id") == "sensor.house_power") & (pl.int_range(pl.len()) % 2 == 0))
        .then(pl.lit("kW"))
        .otherwise(pl.col("unit_normalized"))
        .alias("unit_normalized")
    )
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        schemas.NormalizedUnits.validate(mixed, lazy=True)
    assert set(raised.value.failure_cases["check"].to_list()) == {"one_unit_per_entity"}
