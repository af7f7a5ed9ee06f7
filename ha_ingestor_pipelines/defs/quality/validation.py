"""One day of raw events or states split into validated rows and quarantined rows (pure polars).

Every input row ends in exactly one of the two outputs: rows failing a rule and the extra copies of
duplicated rows go to the quarantine with the rules they failed; everything else is validated,
sorted by event time and flagged for late and out-of-order arrival. States also get typed values
(``typed_values.py``).

Lateness: ``arrival_lag_s`` is ``received_at - <event time>``. The collector's and HA's clocks need
not agree (and a replayed recording arrives hours after it happened), so a row ``is_late`` when its
lag exceeds the home's typical lag that day (the median over live rows) by more than ``late_after``:
backfilled rows after an outage, snapshot rows of changes the live stream missed. A row
``is_out_of_order`` when a row with a later event time (states: of the same entity; events: of the
same home) was received before it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from ha_ingestor_lake.schema import STATE_SOURCE_PRIORITY

from .rules import (
    DUPLICATE_RULE,
    EVENT_RULES,
    JSON_OBJECT_RULE_COLUMN,
    STATE_RULES,
    Rule,
    failed_rules,
    json_object_flag,
    passes_all,
)
from .typed_values import typed_values, with_decoded_attributes

QUARANTINE_SCHEMA = pl.Schema(
    {
        "table": pl.String,
        "home": pl.String,
        "row_key": pl.String,
        "event_time": pl.Datetime("us", "UTC"),
        "received_at": pl.Datetime("us", "UTC"),
        "failed_rules": pl.List(pl.String),
        "row_json": pl.String,
    }
)

# Which copy of a duplicated state survives: HA's live event carries context and event id, a snapshot
# carries all attributes, a backfilled row (HA's recorder) the least; then the first received.
SOURCE_PRIORITY = STATE_SOURCE_PRIORITY
DEFAULT_LATE_AFTER = dt.timedelta(minutes=10)
# Every node after the scan blocks (the sort by event time, per-entity and per-home windows): the in-memory
# engine does the work with less CPU and a lower peak than the streaming one. Floats may differ in the last
# bit between engines (polars divides by a constant as a multiplication in some kernels, not in others).
COLLECT_ENGINE = "in-memory"

LATENESS_COLUMNS = ("arrival_lag_s", "is_late", "is_out_of_order")
TYPED_COLUMNS = ("unit", "value_num", "value_bool", "value_str", "value_ts", "value_num_normalized", "unit_normalized")

_ATTRIBUTES = "_attrs"
PASSES = "_passes"
_PRIORITY = "_priority"


@dataclass(frozen=True)
class TableSpec:
    """How one raw table is validated."""

    table: str
    rules: tuple[Rule, ...]
    time_column: str
    json_column: str
    key: tuple[str, ...]
    ordering_group: tuple[str, ...]


STATES = TableSpec(
    "states", STATE_RULES, "last_updated", "attributes", ("home", "entity_id", "last_updated"), ("home", "entity_id")
)
EVENTS = TableSpec("events", EVENT_RULES, "time_fired", "data", ("event_id",), ("home",))


@dataclass(frozen=True)
class SplitDay:
    """The lazy outputs of ``split_day``; collect them together (``pl.collect_all``) to share the work."""

    validated: pl.LazyFrame
    quarantine: pl.LazyFrame


def check_rows(raw: pl.LazyFrame, spec: TableSpec, *, strict_json: bool) -> pl.LazyFrame:
    """``raw`` plus ``_passes``: true where the row satisfies every rule of ``spec``.

    States also get the decoded attribute fields (``_attrs``) ``typed_values`` reads. With
    ``strict_json=False`` the JSON rule looks only at the braces and one full decode per distinct text
    proves the rest: a brace-shaped text that is not JSON fails the whole query (polars names no row), and
    the caller reruns with ``strict_json=True``, which tests each row on its own.
    """
    text = pl.col(spec.json_column)
    checked = raw.with_columns(json_object_flag(spec.json_column, strict=strict_json).alias(JSON_OBJECT_RULE_COLUMN))
    parse_input = pl.when(pl.col(JSON_OBJECT_RULE_COLUMN)).then(text)
    if spec.table == "states":
        checked = with_decoded_attributes(
            checked, _ATTRIBUTES, strict=strict_json, decodable=json_object_flag(spec.json_column, strict=strict_json)
        )
    elif not strict_json:
        # an empty struct makes polars parse the whole text and keep nothing
        checked = checked.with_columns(
            (pl.col(JSON_OBJECT_RULE_COLUMN) & parse_input.str.json_decode(pl.Struct({})).is_not_null()).alias(
                JSON_OBJECT_RULE_COLUMN
            )
        )
    return checked.with_columns(passes_all(spec.rules).alias(PASSES))


def failing_rows(checked: pl.LazyFrame, spec: TableSpec) -> pl.LazyFrame:
    """The rows of ``check_rows`` that fail a rule, with ``failed_rules``: the names of the rules they fail."""
    return checked.filter(~pl.col(PASSES)).with_columns(failed_rules(spec.rules))


def _row_key(spec: TableSpec) -> pl.Expr:
    if spec.table == "events":
        return pl.col("event_id")
    return pl.concat_str(
        [pl.col("entity_id"), pl.col("last_updated").dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z")], separator="@"
    )


def quarantine_rows(rows: pl.LazyFrame, spec: TableSpec, raw_columns: list[str]) -> pl.LazyFrame:
    """Rows in the quarantine's shape (``QUARANTINE_SCHEMA``), the original row kept whole as JSON text."""
    return rows.select(
        pl.lit(spec.table).alias("table"),
        pl.col("home"),
        _row_key(spec).alias("row_key"),
        pl.col(spec.time_column).alias("event_time"),
        pl.col("received_at"),
        pl.col("failed_rules"),
        pl.struct(raw_columns).struct.json_encode().alias("row_json"),
    )


def lateness(rows: pl.LazyFrame, spec: TableSpec, late_after: dt.timedelta) -> pl.LazyFrame:
    """Add ``arrival_lag_s``, ``is_late`` and ``is_out_of_order`` to rows sorted by event time."""
    lag = pl.col("arrival_lag_s")
    live = pl.col("source") == "live" if spec.table == "states" else pl.lit(True)
    later_rows_first_receipt = (
        pl.col("received_at").reverse().cum_min().reverse().shift(-1).over(list(spec.ordering_group))
    )
    return rows.with_columns(
        ((pl.col("received_at") - pl.col(spec.time_column)).dt.total_microseconds() / 1e6).alias("arrival_lag_s"),
    ).with_columns(
        ((lag - lag.filter(live).median().over("home").fill_null(0.0)) > late_after.total_seconds()).alias("is_late"),
        (pl.col("received_at") > later_rows_first_receipt).fill_null(False).alias("is_out_of_order"),
    )


def _first_of_run(key: tuple[str, ...]) -> pl.Expr:
    """True on the first row of each run of equal ``key`` values (rows sorted by the key: copies are adjacent)."""
    return pl.any_horizontal([pl.col(column).ne_missing(pl.col(column).shift(1)) for column in key]).fill_null(True)


def split_day(
    raw: pl.LazyFrame, spec: TableSpec, *, strict_json: bool = False, late_after: dt.timedelta = DEFAULT_LATE_AFTER
) -> SplitDay:
    """Split one day of a raw table (``STATES`` or ``EVENTS``) into validated and quarantined rows.

    Validated rows keep the raw columns (plus, for states, ``TYPED_COLUMNS``) and ``LATENESS_COLUMNS``,
    sorted by event time; of rows sharing ``spec.key`` one is kept (``SOURCE_PRIORITY``, then the first
    received) and the others are quarantined under the rule ``duplicate``.
    """
    raw_columns = raw.collect_schema().names()
    checked = check_rows(raw, spec, strict_json=strict_json)
    priority = (
        pl.col("source").replace_strict(SOURCE_PRIORITY, default=len(SOURCE_PRIORITY), return_dtype=pl.Int8)
        if spec.table == "states"
        else pl.lit(0, pl.Int8)
    )
    ordered = (
        checked.filter(pl.col(PASSES))
        .with_columns(priority.alias(_PRIORITY))
        .sort([spec.time_column, *spec.key, _PRIORITY, "received_at"])
        .with_columns(_first_of_run(spec.key).alias("_kept"))
    )
    duplicates = ordered.filter(~pl.col("_kept")).with_columns(
        pl.lit([DUPLICATE_RULE.name], pl.List(pl.String)).alias("failed_rules")
    )
    kept = ordered.filter(pl.col("_kept"))
    if spec.table == "states":
        kept = typed_values(kept, pl.col(_ATTRIBUTES))
    validated = lateness(kept, spec, late_after).select(
        *raw_columns, *(TYPED_COLUMNS if spec.table == "states" else ()), *LATENESS_COLUMNS
    )
    quarantine = pl.concat(
        [
            quarantine_rows(failing_rows(checked, spec), spec, raw_columns),
            quarantine_rows(duplicates, spec, raw_columns),
        ]
    )
    return SplitDay(validated=validated, quarantine=quarantine)


def split_with_fallback(
    raw: pl.LazyFrame, spec: TableSpec, late_after: dt.timedelta
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``split_day`` with the fast JSON test, or, when a text fails to parse, the per-row one."""
    try:
        day = split_day(raw, spec, strict_json=False, late_after=late_after)
        validated, quarantine = pl.collect_all([day.validated, day.quarantine], engine=COLLECT_ENGINE)
    except pl.exceptions.ComputeError:
        day = split_day(raw, spec, strict_json=True, late_after=late_after)
        validated, quarantine = pl.collect_all([day.validated, day.quarantine], engine=COLLECT_ENGINE)
    return validated, quarantine
