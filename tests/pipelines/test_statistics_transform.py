"""Statistics rows and meter consumption, on answers shaped exactly like Home Assistant 2025.4's."""

import datetime as dt

import orjson
import polars as pl

from ha_ingestor_pipelines.defs.statistics.transform import SCHEMA, rows_frame, with_consumption

T0 = 1_795_708_800_000  # ms, on the hour, as HA sends `start` and `end`
HOUR_MS = 3_600_000
META = {
    "demo:grid": {
        "statistic_id": "demo:grid",
        "source": "demo",
        "statistics_unit_of_measurement": "kWh",
        "unit_class": "energy",
        "has_mean": False,
        "has_sum": True,
    },
    "sensor.outside_temperature": {
        "statistic_id": "sensor.outside_temperature",
        "source": "recorder",
        "statistics_unit_of_measurement": "°C",
        "unit_class": "temperature",
        "has_mean": True,
        "has_sum": False,
    },
}


def meter(statistic_id: str, sums: list[float], states: list[float], first_change: float) -> list[dict]:
    """Rows as `recorder/statistics_during_period` returns them: HA's change is sum minus the previous sum."""
    changes = [first_change] + [b - a for a, b in zip(sums, sums[1:], strict=False)]
    return [
        {
            "start": T0 + i * HOUR_MS,
            "end": T0 + (i + 1) * HOUR_MS,
            "state": state,
            "sum": total,
            "last_reset": None,
            "change": change,
        }
        for i, (total, state, change) in enumerate(zip(sums, states, changes, strict=True))
    ]


def frame(answer: dict) -> pl.DataFrame:
    meta = {sid: {**META["demo:grid"], "statistic_id": sid} for sid in answer} | {
        k: v for k, v in META.items() if k in answer
    }
    return rows_frame(orjson.dumps(answer), "maple_house", meta)


def consumption(result: pl.DataFrame, statistic_id: str) -> list[float | None]:
    values = result.filter(pl.col("statistic_id") == statistic_id)["consumption"].to_list()
    return [None if v is None else round(v, 9) for v in values]


def test_rows_keep_every_value_with_utc_times_and_metadata():
    answer = {
        "sensor.outside_temperature": [{"start": T0, "end": T0 + HOUR_MS, "mean": 15.6, "min": 15.2, "max": 16.0}],
        "demo:grid": meter("demo:grid", [3.0], [3.0], 3.0),
    }
    rows = with_consumption(rows_frame(orjson.dumps(answer), "maple_house", META))
    assert rows.schema == SCHEMA
    temperature = rows.filter(pl.col("statistic_id") == "sensor.outside_temperature").row(0, named=True)
    assert temperature["start"] == dt.datetime(2026, 11, 26, 16, tzinfo=dt.UTC)
    assert temperature["end"] - temperature["start"] == dt.timedelta(hours=1)
    assert (temperature["mean"], temperature["min"], temperature["max"]) == (15.6, 15.2, 16.0)
    assert (temperature["unit"], temperature["source"], temperature["has_mean"]) == ("°C", "recorder", True)
    assert temperature["consumption"] is None and temperature["meter_reset"] is None


def test_ha_s_own_sum_absorbs_a_reset_so_consumption_is_the_change():
    # the meter reads 100, 101, then is replaced and reads 0.5, 1.5: HA's sum keeps growing
    rows = with_consumption(frame({"a": meter("a", [10.0, 11.0, 11.5, 12.5], [100, 101, 0.5, 1.5], 1.0)}))
    assert consumption(rows, "a") == [1.0, 1.0, 0.5, 1.0]
    assert rows["meter_reset"].to_list() == [False] * 4


def test_a_sum_that_drops_with_the_meter_is_a_reset_not_negative_energy():
    # an importer copied the meter reading into `sum`: it falls from 101 to 0.5 when the meter restarts
    rows = with_consumption(frame({"b": meter("b", [100.0, 101.0, 0.5, 1.5], [100, 101, 0.5, 1.5], 2.0)}))
    assert rows["change"].to_list()[2] == -100.5  # HA's own signed value is kept
    assert consumption(rows, "b") == [2.0, 1.0, 0.5, 1.0]
    assert rows["meter_reset"].to_list() == [False, False, True, False]


def test_a_dip_counts_zero_and_its_recovery_is_not_counted_twice():
    rows = with_consumption(frame({"c": meter("c", [10.0, 9.8, 10.0, 10.3], [10, 9.8, 10.0, 10.3], 0.4)}))
    assert consumption(rows, "c") == [0.4, 0.0, 0.0, 0.3]
    assert sum(consumption(rows, "c")) == round(0.4 + (10.3 - 10.0), 9)


def test_the_first_hour_ha_ever_recorded_has_no_consumption():
    # HA reports a statistic's whole sum as the change of its first row
    rows = with_consumption(frame({"d": meter("d", [1000.0, 1001.5], [1000.0, 1001.5], 1000.0)}))
    assert consumption(rows, "d") == [None, 1.5]


def test_a_first_row_after_a_zero_sum_is_trusted_when_older_rows_exist():
    rows = with_consumption(frame({"e": meter("e", [0.7, 1.0], [0.7, 1.0], 0.7)}), known_prior={"e"})
    assert consumption(rows, "e") == [0.7, 0.3]


def test_consumption_is_never_negative_on_random_walks():
    import random

    generator = random.Random(7)
    answer = {}
    for n in range(20):
        total, sums = 50.0, []
        for _ in range(200):
            total = max(0.0, total + generator.uniform(-3, 5)) if generator.random() > 0.02 else 0.0
            sums.append(total)
        answer[f"m{n}"] = meter(f"m{n}", sums, sums, generator.uniform(-2, 2))
    rows = with_consumption(frame(answer))
    assert rows["consumption"].drop_nulls().min() >= 0
    assert rows.height == 4000
