"""pandera (polars) contracts of the raw lake tables and of the validated tables, and the schema registry.

The raw models' columns are the lake contract's (``ha_ingestor_lake.schema``, documented in
``docs/lake.md``), with its dtypes, declared nullable: required
values are rules (``*_present``), so every row-level failure has one name, the rule's, in the
quarantine, in check metadata and in the quality report. Each ``Rule`` of ``rules.py`` becomes one
dataframe check of the model, named after the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from ha_ingestor_lake.schema import SCHEMAS

from .rules import (
    EVENT_RULES,
    JSON_COLUMN,
    JSON_OBJECT_RULE_COLUMN,
    REGISTRY_RULES,
    STATE_RULES,
    Rule,
    json_object_flag,
)
from .typed_values import SENTINEL_STATES

UTC = pl.Datetime("us", "UTC")
STRING_LIST = pl.List(pl.String)


def _nullable() -> Any:
    return pa.Field(nullable=True)


def contract_columns(name: str, table: str) -> type[pa.DataFrameModel]:
    """A strict model of the lake contract's columns for ``table`` (``ha_ingestor_lake.schema``), all nullable."""
    dtypes = pl.from_arrow(SCHEMAS[table].empty_table()).schema
    namespace: dict[str, Any] = {
        "__annotations__": dict(dtypes),
        "__module__": __name__,
        "__doc__": f"The columns of the lake's {table} table.",
        "Config": type("Config", (), {"strict": True}),
        **{column: _nullable() for column in dtypes},
    }
    return type(name, (pa.DataFrameModel,), namespace)


RawEventColumns = contract_columns("RawEventColumns", "events")
RawStateColumns = contract_columns("RawStateColumns", "states")
RawRegistryColumns = contract_columns("RawRegistryColumns", "registry")


class _LatenessColumns(pa.DataFrameModel):
    arrival_lag_s: pl.Float64 = _nullable()
    is_late: pl.Boolean
    is_out_of_order: pl.Boolean


class ValidatedEventColumns(RawEventColumns, _LatenessColumns):
    pass


class ValidatedStateColumns(RawStateColumns, _LatenessColumns):
    unit: pl.String = _nullable()
    value_num: pl.Float64 = _nullable()
    value_bool: pl.Boolean = _nullable()
    value_str: pl.String = _nullable()
    value_ts: UTC = _nullable()
    value_num_normalized: pl.Float64 = _nullable()
    unit_normalized: pl.String = _nullable()


class QuarantineColumns(pa.DataFrameModel):
    table: pl.String
    home: pl.String = _nullable()
    row_key: pl.String = _nullable()
    event_time: UTC = _nullable()
    received_at: UTC = _nullable()
    failed_rules: STRING_LIST
    row_json: pl.String

    class Config:
        strict = True


def _sorted(column: str) -> pl.Expr:
    return (pl.col(column) >= pl.col(column).shift(1)).fill_null(True)


VALIDATED_STATE_RULES: tuple[Rule, ...] = (
    Rule(
        "state_key_unique",
        "one row per (home, entity_id, last_updated)",
        pl.struct("home", "entity_id", "last_updated").is_unique(),
    ),
    Rule("sorted_by_event_time", "rows are in last_updated order", _sorted("last_updated")),
    Rule(
        "value_num_is_state_num",
        "value_num is the collector's state_num",
        pl.col("value_num").eq_missing(pl.col("state_num")),
    ),
    Rule(
        "normalized_when_numeric",
        "a numeric value has a normalised value and nothing else has",
        pl.col("value_num").is_null() == pl.col("value_num_normalized").is_null(),
    ),
    Rule(
        "typed_value_present",
        "a state other than unknown/unavailable/removed has value_num or value_str",
        pl.col("state").is_null()
        | pl.col("state").is_in(SENTINEL_STATES)
        | pl.col("value_num").is_not_null()
        | pl.col("value_str").is_not_null(),
    ),
)
VALIDATED_EVENT_RULES: tuple[Rule, ...] = (
    Rule("event_id_unique", "one row per event_id", pl.col("event_id").is_unique()),
    Rule("sorted_by_event_time", "rows are in time_fired order", _sorted("time_fired")),
)
UNIT_RULES: tuple[Rule, ...] = (
    Rule(
        "one_unit_per_entity",
        "an entity's normalised values share one unit within the day",
        pl.col("unit_normalized").drop_nulls().n_unique().over("home", "entity_id") <= 1,
    ),
)
QUARANTINE_RULES: tuple[Rule, ...] = (
    Rule("table_known", "table is events or states", pl.col("table").is_in(("events", "states"))),
    Rule("names_a_rule", "a quarantined row names at least one failed rule", pl.col("failed_rules").list.len() > 0),
    Rule("row_json_object", "the original row is kept as a JSON object", pl.col(JSON_OBJECT_RULE_COLUMN)),
)


def _rule_check(rule: Rule, json_column: str | None) -> Any:
    def check(cls: Any, data: PolarsData) -> pl.LazyFrame:
        frame = data.lazyframe
        if json_column is not None:
            frame = frame.with_columns(json_object_flag(json_column, strict=True).alias(JSON_OBJECT_RULE_COLUMN))
        return frame.select(rule.passes.fill_null(False).alias(rule.name))

    check.__name__ = f"rule_{rule.name}"
    return pa.dataframe_check(name=rule.name, description=rule.description)(check)


def with_rules(
    name: str, columns: type[pa.DataFrameModel], rules: Sequence[Rule], json_column: str | None, doc: str
) -> type[pa.DataFrameModel]:
    """A DataFrameModel: the columns of ``columns`` plus one dataframe check per rule, named after it."""
    namespace: dict[str, Any] = {f"rule_{rule.name}": _rule_check(rule, json_column) for rule in rules}
    return type(name, (columns,), {"__doc__": doc, "__module__": __name__, **namespace})


RawEvents = with_rules(
    "RawEvents",
    RawEventColumns,
    EVENT_RULES,
    JSON_COLUMN["events"],
    "One day of the lake's events table as the collector wrote it.",
)
RawStates = with_rules(
    "RawStates",
    RawStateColumns,
    STATE_RULES,
    JSON_COLUMN["states"],
    "One day of the lake's states table as the collector wrote it.",
)
RawRegistry = with_rules(
    "RawRegistry",
    RawRegistryColumns,
    REGISTRY_RULES,
    JSON_COLUMN["registry"],
    "Registry and configuration snapshots as the collector wrote them.",
)
ValidatedEvents = with_rules(
    "ValidatedEvents",
    ValidatedEventColumns,
    EVENT_RULES + VALIDATED_EVENT_RULES,
    JSON_COLUMN["events"],
    "derived/validated_events: every event rule holds, one row per event, in time order.",
)
ValidatedStates = with_rules(
    "ValidatedStates",
    ValidatedStateColumns,
    STATE_RULES + VALIDATED_STATE_RULES,
    JSON_COLUMN["states"],
    "derived/validated_states: every state rule holds, one row per state, in time order, with consistent typed values.",
)
NormalizedUnits = with_rules(
    "NormalizedUnits",
    ValidatedStateColumns,
    UNIT_RULES,
    None,
    "derived/validated_states: one normalised unit per entity and day.",
)
ValidationQuarantine = with_rules(
    "ValidationQuarantine",
    QuarantineColumns,
    QUARANTINE_RULES,
    "row_json",
    "derived/validation_quarantine: each row says which rules it failed.",
)


@dataclass(frozen=True)
class SchemaEntry:
    """One asset check: validate ``table`` (a raw lake table or a derived table) against ``model``.

    A partitioned entry checks one day; the registry entry checks every snapshot. The check fails
    when more than ``max_failing_share`` of the rows fail (any failure when 0).
    """

    asset_key: tuple[str, ...]
    check_name: str
    model: type[pa.DataFrameModel]
    table: str
    derived: bool
    blocking: bool = True
    max_failing_share: float = 0.0
    partitioned: bool = True


# Raw input contracts tolerate a small share of bad rows (they are quarantined); the validated tables
# must hold their contract for every row.
MAX_RAW_FAILING_SHARE = 0.01

SCHEMA_REGISTRY: tuple[SchemaEntry, ...] = (
    SchemaEntry(("lake", "registry"), "registry_contract", RawRegistry, "registry", derived=False, partitioned=False),
    SchemaEntry(
        ("derived", "validated_events"),
        "raw_events_contract",
        RawEvents,
        "events",
        derived=False,
        max_failing_share=MAX_RAW_FAILING_SHARE,
    ),
    SchemaEntry(
        ("derived", "validated_events"), "validated_events_contract", ValidatedEvents, "validated_events", derived=True
    ),
    SchemaEntry(
        ("derived", "validated_states"),
        "raw_states_contract",
        RawStates,
        "states",
        derived=False,
        max_failing_share=MAX_RAW_FAILING_SHARE,
    ),
    SchemaEntry(
        ("derived", "validated_states"), "validated_states_contract", ValidatedStates, "validated_states", derived=True
    ),
    SchemaEntry(
        ("derived", "validated_states"),
        "normalized_units_consistent",
        NormalizedUnits,
        "validated_states",
        derived=True,
        blocking=False,
    ),
    SchemaEntry(
        ("derived", "validation_quarantine"),
        "validation_quarantine_contract",
        ValidationQuarantine,
        "validation_quarantine",
        derived=True,
    ),
)
