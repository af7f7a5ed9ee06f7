"""Typed values and unit normalisation on the real day, and on real entities with made-up changes."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.quality import schemas
from ha_ingestor_pipelines.defs.quality.typed_values import (
    UNIT_CONVERSIONS,
    decode_attributes,
    typed_values,
    with_decoded_attributes,
)
from ha_ingestor_pipelines.defs.quality.validation import STATES, split_with_fallback


@pytest.fixture(scope="module")
def states(fixture_lake) -> pl.DataFrame:
    lake = LakeResource(root=str(fixture_lake))
    [date] = lake.raw_dates("states")
    return lake.scan_raw("states", date).collect()


def _validated(frame: pl.DataFrame) -> pl.DataFrame:
    validated, quarantine = split_with_fallback(frame.lazy(), STATES, dt.timedelta(minutes=10))
    assert quarantine.height == 0
    return validated


def _typed(states: pl.DataFrame, entity_id: str, state: str) -> dict:
    rows = _validated(states).filter((pl.col("entity_id") == entity_id) & (pl.col("state") == state))
    assert rows.height > 0, (entity_id, state)
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    ("entity_id", "state", "expected"),
    [
        ("light.bed_light", "on", True),
        ("light.bed_light", "off", False),
        ("binary_sensor.hall_motion", "on", True),
        ("cover.garage_door", "closed", False),
        ("cover.hall_window", "opening", True),
        ("cover.hall_window", "closing", True),
        ("lock.poorly_installed_door", "jammed", None),
        ("lock.front_door", "locked", False),
        ("lock.front_door", "unlocked", True),
        ("person.paulus", "home", True),
        ("person.paulus", "not_home", False),
        ("person.paulus", "Office", None),
        ("media_player.living_room", "playing", True),
        ("climate.hvac", "heat", True),
        ("timer.tea", "active", True),
        ("timer.tea", "idle", False),
        ("sun.sun", "above_horizon", True),
        ("input_select.house_mode", "Home", None),
        ("sensor.house_power", "1348.0", None),
    ],
)
def test_value_bool_follows_home_assistants_on_off_states(states, entity_id, state, expected):
    assert _typed(states, entity_id, state)["value_bool"] is expected


def test_numbers_text_and_sentinels(states):
    power = _typed(states, "sensor.house_power", "1348.0")
    assert (power["value_num"], power["value_str"], power["unit"]) == (1348.0, None, "W")
    text = _typed(states, "input_text.last_note", "take out the trash")
    assert (text["value_str"], text["value_num"], text["value_bool"]) == ("take out the trash", None, None)
    unknown = _typed(states, "button.push", "unknown")
    assert (unknown["value_str"], unknown["value_ts"], unknown["value_bool"]) == (None, None, None)
    removal = _validated(states).filter(pl.col("state").is_null()).row(0, named=True)
    assert removal["entity_id"] == "sensor.carbon_dioxide"
    assert all(removal[c] is None for c in ("value_num", "value_bool", "value_str", "value_ts"))


def test_timestamps_from_timestamp_sensors_and_stateless_entities(states):
    dawn = _typed(states, "sensor.sun_next_dawn", "2026-11-27T14:54:59+00:00")
    assert dawn["value_ts"] == dt.datetime(2026, 11, 27, 14, 54, 59, tzinfo=dt.UTC)
    scene = _validated(states).filter((pl.col("entity_id") == "scene.movie_time") & pl.col("value_ts").is_not_null())
    assert scene.height > 0
    as_text = pl.col("value_ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    assert scene.select((as_text == pl.col("state")).all()).item()
    time_only = _typed(states, "input_datetime.wake_up", "06:45:00")
    assert (time_only["value_ts"], time_only["value_str"]) == (None, "06:45:00")
    date_and_time = _typed(states, "datetime.date_and_time", "2020-01-01T12:00:00+00:00")
    assert date_and_time["value_ts"] == dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)


def test_input_datetime_with_a_date_uses_its_timestamp_attribute(states):
    real = states.filter(pl.col("entity_id") == "input_datetime.wake_up").head(1)
    # the attributes HA gives an input_datetime with date and time: "timestamp" is unix seconds
    with_date = real.with_columns(
        pl.lit("2026-11-27 06:45:00").alias("state"),
        pl.lit(
            '{"has_date":true,"has_time":true,"editable":false,"year":2026,"month":11,"day":27,"hour":6,'
            '"minute":45,"second":0,"timestamp":1795790700.0,"friendly_name":"Wake up time"}'
        ).alias("attributes"),
        (pl.col("last_updated") + dt.timedelta(seconds=1)).alias("last_updated"),
        (pl.col("last_changed") + dt.timedelta(seconds=1)).alias("last_changed"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("last_reported"),
    )
    row = _validated(pl.concat([states, with_date])).filter(pl.col("state") == "2026-11-27 06:45:00").row(0, named=True)
    assert row["value_ts"] == dt.datetime(2026, 11, 27, 14, 45, tzinfo=dt.UTC)  # 06:45 in Los Angeles


def test_a_unit_change_mid_stream_keeps_one_unit_in_the_normalised_column(states):
    entity = "sensor.living_room_temperature"
    last = states.filter(pl.col("entity_id") == entity).sort("last_updated").tail(1)
    assert '"unit_of_measurement":"°C"' in last["attributes"][0]
    fahrenheit = pl.concat(
        [
            last.with_columns(
                pl.lit(f).alias("state"),
                pl.lit(float(f)).alias("state_num"),
                pl.col("attributes").str.replace('"°C"', '"°F"', literal=True),
                (pl.col("last_updated") + dt.timedelta(minutes=i + 1)).alias("last_updated"),
                (pl.col("last_changed") + dt.timedelta(minutes=i + 1)).alias("last_changed"),
                pl.lit(None, pl.Datetime("us", "UTC")).alias("last_reported"),
            )
            for i, f in enumerate(("70.7", "212", "-40"))
        ]
    )
    validated = _validated(pl.concat([states, fahrenheit]))
    rows = validated.filter(pl.col("entity_id") == entity)
    assert rows["unit"].unique().sort().to_list() == ["°C", "°F"]
    assert rows["unit_normalized"].unique().to_list() == ["°C"]
    tail = rows.tail(3)
    assert tail["value_num"].to_list() == [70.7, 212.0, -40.0]
    assert tail["value_num_normalized"].to_list() == pytest.approx([21.5, 100.0, -40.0])
    celsius = rows.filter(pl.col("unit") == "°C")
    assert (celsius["value_num_normalized"] == celsius["value_num"]).all()
    schemas.NormalizedUnits.validate(validated, lazy=True)
    schemas.ValidatedStates.validate(validated, lazy=True)


@pytest.mark.parametrize(
    ("entity_id", "unit", "value", "expected", "canonical"),
    [
        ("sensor.house_power", "kW", "1.348", 1348.0, "W"),
        ("sensor.house_energy", "Wh", "1234506", 1234.506, "kWh"),
        ("sensor.house_energy", "MWh", "1.2345", 1234.5, "kWh"),
        ("sensor.total_gas_m3", "ft³", "100", 2.8316846592, "m³"),
    ],
)
def test_units_convert_to_one_canonical_unit_per_quantity(states, entity_id, unit, value, expected, canonical):
    real = states.filter(pl.col("entity_id") == entity_id).sort("last_updated").tail(1)
    original = real["attributes"].str.extract(r'"unit_of_measurement":"([^"]+)"', 1)[0]
    changed = real.with_columns(
        pl.lit(value).alias("state"),
        pl.lit(float(value)).alias("state_num"),
        pl.col("attributes").str.replace(f'"{original}"', f'"{unit}"', literal=True),
        (pl.col("last_updated") + dt.timedelta(minutes=10)).alias("last_updated"),
        (pl.col("last_changed") + dt.timedelta(minutes=10)).alias("last_changed"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("last_reported"),
    )
    row = _validated(pl.concat([states, changed])).tail(1).row(0, named=True)
    assert (row["unit"], row["unit_normalized"]) == (unit, canonical)
    assert row["value_num_normalized"] == pytest.approx(expected)
    assert UNIT_CONVERSIONS[original][0] == canonical


def test_typed_values_decodes_attributes_itself_when_given_none(states):
    on_its_own = typed_values(states.lazy()).collect()
    assert on_its_own.filter(pl.col("entity_id") == "sensor.house_power")["unit"].unique().to_list() == ["W"]


def test_attributes_decoded_once_per_distinct_text_match_a_decode_of_every_row(states):
    """Rows share attribute texts (HA repeats them), and some are null or not JSON objects."""
    rows = pl.concat(
        [
            states,
            states.head(50).with_columns(attributes=pl.lit(None, pl.String)),
            states.head(50).with_columns(attributes=pl.lit("[1, 2]")),
        ]
    )
    assert rows["attributes"].n_unique() < rows.height / 2
    is_object = pl.col("attributes").str.starts_with("{") & pl.col("attributes").str.ends_with("}")
    for strict in (False, True):
        every_row = rows.with_columns(
            decode_attributes(pl.when(is_object).then(pl.col("attributes")), strict=strict).alias("decoded")
        )
        once = with_decoded_attributes(rows.lazy(), "decoded", decodable=is_object, strict=strict).collect()
        # the fields, as typed_values reads them (a row without text gets a null struct, not one of nulls)
        assert once.unnest("decoded").equals(every_row.unnest("decoded"))
