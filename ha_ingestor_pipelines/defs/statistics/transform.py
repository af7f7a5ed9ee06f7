"""Home Assistant's long-term statistics as lake rows, and meter consumption that is never negative.

How HA's ``sum`` treats meter resets (``homeassistant/components/sensor/recorder.py``): for a
``total_increasing`` sensor a reading more than 10 % below the previous one starts a new cycle, and
for a ``total`` sensor a new ``last_reset`` does; either way the new cycle counts from zero and HA adds
the previous cycle's growth to ``sum``. So HA's own ``sum`` never drops at a reset and its ``change``
(``sum`` minus the previous period's ``sum``) is the period's consumption. It can still go down:
a dip of less than 10 % is taken as a real decrease (and comes back as an increase), a ``total`` meter
may run backwards (net metering), and statistics imported by integrations or ``recorder/import_statistics``
carry whatever ``sum`` the importer computed, sometimes a plain copy of the meter reading that drops to
zero at a reset.

``consumption`` therefore follows the ``sum`` with two rules, and ``change`` keeps HA's signed value:

- a drop of ``sum`` by more than 10 % of its previous value (HA's own threshold) is a reset the ``sum``
  did not absorb: ``meter_reset`` is true and the period consumed what the meter reads since, its
  ``state`` (the meter restarted from zero);
- otherwise consumption is the growth of ``sum`` above the highest ``sum`` seen before in the same cycle,
  so a dip is 0 and its recovery is not counted twice.

The first row of a statistic whose previous ``sum`` is unknown (the first hour HA ever recorded) has no
consumption (null): HA reports its whole ``sum`` as ``change`` there.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import polars as pl


class StatisticRow(msgspec.Struct):
    start: int
    end: int
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    last_reset: int | None = None
    state: float | None = None
    sum: float | None = None
    change: float | None = None


statistics_decoder = msgspec.json.Decoder(dict[str, list[StatisticRow]])

TIMESTAMP = pl.Datetime("us", "UTC")
SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "statistic_id": pl.String,
        "source": pl.String,
        "unit": pl.String,
        "unit_class": pl.String,
        "has_mean": pl.Boolean,
        "has_sum": pl.Boolean,
        "start": TIMESTAMP,
        "end": TIMESTAMP,
        "mean": pl.Float64,
        "min": pl.Float64,
        "max": pl.Float64,
        "last_reset": TIMESTAMP,
        "state": pl.Float64,
        "sum": pl.Float64,
        "change": pl.Float64,
        "consumption": pl.Float64,
        "meter_reset": pl.Boolean,
    }
)
_FETCHED = [name for name in SCHEMA if name not in ("consumption", "meter_reset")]
RESET_RATIO = 0.9


def rows_frame(result: bytes, home: str, metadata: dict[str, dict]) -> pl.DataFrame:
    """One ``recorder/statistics_during_period`` answer as rows of the lake table (without consumption)."""
    decoded = statistics_decoder.decode(result)
    columns: dict[str, list] = {name: [] for name in _FETCHED}
    for statistic_id, rows in decoded.items():
        meta = metadata.get(statistic_id, {})
        n = len(rows)
        columns["home"] += [home] * n
        columns["statistic_id"] += [statistic_id] * n
        columns["source"] += [meta.get("source")] * n
        columns["unit"] += [meta.get("statistics_unit_of_measurement")] * n
        columns["unit_class"] += [meta.get("unit_class")] * n
        columns["has_mean"] += [meta.get("has_mean")] * n
        columns["has_sum"] += [meta.get("has_sum")] * n
        for name in ("start", "end", "last_reset"):
            columns[name] += [None if (ms := getattr(r, name)) is None else ms * 1000 for r in rows]
        for name in ("mean", "min", "max", "state", "sum", "change"):
            columns[name] += [getattr(r, name) for r in rows]
    schema = {name: (pl.Int64 if SCHEMA[name] == TIMESTAMP else SCHEMA[name]) for name in _FETCHED}
    frame = pl.DataFrame(columns, schema=schema)
    return frame.with_columns(pl.col(n).cast(TIMESTAMP) for n in ("start", "end", "last_reset"))


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def with_consumption(frame: pl.DataFrame, known_prior: set[str] | frozenset[str] = frozenset()) -> pl.DataFrame:
    """Add ``consumption`` and ``meter_reset`` (see the module doc) to rows of one or more statistics.

    ``frame`` holds consecutive rows per statistic; for the first row of each, HA's ``change`` gives the
    previous ``sum``, trusted when it differs from ``sum`` or when the statistic is in ``known_prior``
    (HA holds older rows, whose ``sum`` happened to be 0).
    """
    by_id = "statistic_id"
    first = pl.int_range(pl.len()).over(by_id) == 0
    change_known = (pl.col("change") != pl.col("sum")) | pl.col(by_id).is_in(list(known_prior))
    previous_sum = (
        pl.when(first)
        .then(pl.when(change_known).then(pl.col("sum") - pl.col("change")))
        .otherwise(pl.col("sum").shift(1).over(by_id))
    )
    reset = (pl.col("_prev") > 0) & (pl.col("sum") < RESET_RATIO * pl.col("_prev"))
    high_water = pl.max_horizontal(
        pl.col("sum").cum_max().shift(1).over(by_id, "_cycle"),
        pl.when(pl.col("_cycle") == 0).then(pl.col("_prev").first().over(by_id)),
    )
    consumption = (
        pl.when(pl.col("sum").is_null() | pl.col("_prev").is_null())
        .then(None)
        .when(pl.col("meter_reset"))
        .then(pl.coalesce("state", "sum").clip(lower_bound=0.0))
        .otherwise((pl.col("sum") - high_water).clip(lower_bound=0.0))
    )
    return (
        frame.sort(by_id, "start")
        .with_columns(_prev=previous_sum)
        .with_columns(meter_reset=pl.when(pl.col("sum").is_not_null()).then(reset.fill_null(False)))
        .with_columns(_cycle=pl.col("meter_reset").fill_null(False).cast(pl.Int32).cum_sum().over(by_id))
        .with_columns(consumption=consumption)
        .select(SCHEMA.names())
    )


def to_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def from_millis(millis: int) -> dt.datetime:
    """HA's statistics times (unix milliseconds) as UTC datetimes."""
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
