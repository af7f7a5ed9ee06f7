"""Row rules for the raw lake tables: one polars expression per rule, true where a row satisfies it.

The same rules split a day into validated and quarantined rows (``validation.py``) and become the
dataframe checks of the pandera models (``schemas.py``), so a rule has one name everywhere: in the
quarantine's ``failed_rules``, in asset check metadata and in the quality report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

# HA's own entity id pattern (homeassistant.core.VALID_ENTITY_ID) without look-arounds, which polars'
# regex engine lacks: lowercase letters, digits and underscores, no leading/trailing underscore per
# part, and no double underscore anywhere (checked separately).
_ID_PART = r"[a-z0-9](?:[a-z0-9_]*[a-z0-9])?"
ENTITY_ID_PATTERN = rf"^{_ID_PART}\.{_ID_PART}$"
DOMAIN_PATTERN = rf"^{_ID_PART}$"
HEX32_PATTERN = r"^[0-9a-f]{32}$"

SOURCES = ("live", "snapshot", "backfill")
ORIGINS = ("LOCAL", "REMOTE")
REGISTRY_KINDS = (
    "areas",
    "floors",
    "labels",
    "devices",
    "entities",
    "config_entries",
    "automations",
    "scripts",
    "core_config",
    "services",
)

# HA caps a state at 255 characters (homeassistant.const.MAX_LENGTH_STATE_STATE) and an event type at 64.
MAX_STATE_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 64
# A timestamp later than the collector's receipt by more than this is a clock fault, not clock skew.
FUTURE_TOLERANCE = dt.timedelta(hours=1)
# Home Assistant's first release: nothing it recorded can be older.
EARLIEST_PLAUSIBLE = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)

JSON_OBJECT_RULE_COLUMN = "_json_object"


@dataclass(frozen=True)
class Rule:
    """``passes`` is a boolean expression over one row: true where the row satisfies the rule."""

    name: str
    description: str
    passes: pl.Expr


def _present(column: str) -> pl.Expr:
    col = pl.col(column)
    if column in ("home", "entity_id", "domain", "event_id", "event_type", "context_id", "item_id", "kind"):
        return col.is_not_null() & (col.str.len_bytes() > 0)
    return col.is_not_null()


def _entity_id_valid(column: str) -> pl.Expr:
    col = pl.col(column)
    return col.is_null() | (col.str.contains(ENTITY_ID_PATTERN) & ~col.str.contains("__", literal=True))


def _plausible_time(column: str) -> pl.Expr:
    col = pl.col(column)
    received = pl.col("received_at")
    return col.is_null() | ((col >= EARLIEST_PLAUSIBLE) & (received.is_null() | (col <= received + FUTURE_TOLERANCE)))


def _json_object(column: str) -> pl.Expr:
    """Filled in by ``validation.with_json_object_flag``: parsing JSON is the one costly rule."""
    return pl.col(column).is_null() | pl.col(JSON_OBJECT_RULE_COLUMN)


STATE_RULES: tuple[Rule, ...] = (
    Rule("home_present", "every row names its home", _present("home")),
    Rule("entity_id_present", "every row has an entity_id", _present("entity_id")),
    Rule("entity_id_format", "entity_id is domain.object_id in HA's lowercase format", _entity_id_valid("entity_id")),
    Rule(
        "domain_matches_entity_id",
        "domain is the part of entity_id before the dot",
        pl.col("entity_id").is_null()
        | (pl.col("domain").is_not_null() & pl.col("entity_id").str.starts_with(pl.col("domain") + ".")),
    ),
    Rule("last_updated_present", "last_updated is set", _present("last_updated")),
    Rule("last_changed_present", "last_changed is set", _present("last_changed")),
    Rule(
        "last_updated_plausible",
        "last_updated is after 2013 and at most 1 h after the collector received it",
        _plausible_time("last_updated"),
    ),
    Rule(
        "last_changed_not_after_last_updated",
        "last_changed <= last_updated",
        pl.col("last_changed").is_null()
        | pl.col("last_updated").is_null()
        | (pl.col("last_changed") <= pl.col("last_updated")),
    ),
    Rule(
        "last_reported_not_before_last_updated",
        "last_reported, when HA gives one, >= last_updated",
        pl.col("last_reported").is_null()
        | pl.col("last_updated").is_null()
        | (pl.col("last_reported") >= pl.col("last_updated")),
    ),
    Rule(
        "state_length",
        f"state is at most {MAX_STATE_LENGTH} characters (HA's limit)",
        pl.col("state").is_null() | (pl.col("state").str.len_chars() <= MAX_STATE_LENGTH),
    ),
    Rule(
        "state_num_finite",
        "state_num is a finite number when set",
        pl.col("state_num").is_null() | pl.col("state_num").is_finite(),
    ),
    Rule(
        "state_num_matches_state",
        "state_num, when set, is the number the state string spells",
        pl.col("state_num").is_null() | (pl.col("state").cast(pl.Float64, strict=False) == pl.col("state_num")),
    ),
    Rule("attributes_json_object", "attributes, when present, is a valid JSON object", _json_object("attributes")),
    Rule(
        "removal_has_no_attributes",
        "a removal (null state) carries no attributes",
        pl.col("state").is_not_null() | pl.col("attributes").is_null(),
    ),
    Rule("source_known", f"source is one of {', '.join(SOURCES)}", pl.col("source").is_in(SOURCES)),
    Rule(
        "live_row_has_event_id",
        "a live row names its state_changed event",
        (pl.col("source") != "live") | pl.col("event_id").is_not_null(),
    ),
    Rule(
        "event_id_format",
        "event_id, when set, is 32 lowercase hex characters",
        pl.col("event_id").is_null() | pl.col("event_id").str.contains(HEX32_PATTERN),
    ),
    Rule("received_at_present", "received_at is set", _present("received_at")),
)

EVENT_RULES: tuple[Rule, ...] = (
    Rule("home_present", "every row names its home", _present("home")),
    Rule("event_id_present", "every event has an id", _present("event_id")),
    Rule(
        "event_id_format",
        "event_id is 32 lowercase hex characters",
        pl.col("event_id").is_null() | pl.col("event_id").str.contains(HEX32_PATTERN),
    ),
    Rule("event_type_present", "every event has a type", _present("event_type")),
    Rule(
        "event_type_length",
        f"event_type is at most {MAX_EVENT_TYPE_LENGTH} characters (HA's limit)",
        pl.col("event_type").is_null() | (pl.col("event_type").str.len_chars() <= MAX_EVENT_TYPE_LENGTH),
    ),
    Rule("time_fired_present", "time_fired is set", _present("time_fired")),
    Rule(
        "time_fired_plausible",
        "time_fired is after 2013 and at most 1 h after the collector received it",
        _plausible_time("time_fired"),
    ),
    Rule("origin_known", f"origin is one of {', '.join(ORIGINS)}", pl.col("origin").is_in(ORIGINS)),
    Rule("context_id_present", "HA gives every event a context", _present("context_id")),
    Rule("entity_id_format", "entity_id, when set, is domain.object_id in HA's format", _entity_id_valid("entity_id")),
    Rule(
        "state_changed_has_entity_id",
        "a state_changed event names its entity",
        (pl.col("event_type") != "state_changed") | pl.col("entity_id").is_not_null(),
    ),
    Rule("data_json_object", "data is a valid JSON object", _present("data") & _json_object("data")),
    Rule("received_at_present", "received_at is set", _present("received_at")),
)

REGISTRY_RULES: tuple[Rule, ...] = (
    Rule("home_present", "every row names its home", _present("home")),
    Rule("kind_known", "kind is one of the registries the collector snapshots", pl.col("kind").is_in(REGISTRY_KINDS)),
    Rule("item_id_present", "every item has an id", _present("item_id")),
    Rule(
        "entity_item_id_format",
        "an entity registry item's id is a valid entity_id",
        (pl.col("kind") != "entities") | _entity_id_valid("item_id"),
    ),
    Rule("snapshot_at_present", "snapshot_at is set", _present("snapshot_at")),
    Rule(
        "snapshot_seq_non_negative",
        "snapshot_seq is a spool position (>= 0)",
        pl.col("snapshot_seq").is_not_null() & (pl.col("snapshot_seq") >= 0),
    ),
    Rule(
        "item_unique_in_snapshot",
        "an item appears once per snapshot",
        pl.struct("home", "kind", "snapshot_seq", "item_id").is_unique(),
    ),
    Rule("data_json_object", "data is a valid JSON object", _present("data") & _json_object("data")),
)

RULES: dict[str, tuple[Rule, ...]] = {"states": STATE_RULES, "events": EVENT_RULES, "registry": REGISTRY_RULES}
# The column whose JSON text the ``*_json_object`` rule of each table checks.
JSON_COLUMN = {"states": "attributes", "events": "data", "registry": "data"}

DUPLICATE_RULE = Rule(
    "duplicate",
    "the same row (states: home, entity_id, last_updated; events: event_id) "
    "already came from another file or source: one copy is kept",
    pl.lit(True),
)


def json_object_flag(column: str, *, strict: bool) -> pl.Expr:
    """True where ``column`` is a JSON object.

    ``strict=False`` looks only at the braces: the caller then proves validity by decoding the whole
    column once (a decode error names no row). ``strict=True`` parses each row with polars' JSON
    parser, the exact test, about twice as slow.
    """
    text = pl.col(column)
    braces = text.str.starts_with("{") & text.str.ends_with("}")
    if not strict:
        return braces
    return braces & text.str.json_path_match("$").is_not_null()


def passes_all(rules: Sequence[Rule]) -> pl.Expr:
    """True where a row satisfies every rule."""
    return pl.all_horizontal([rule.passes.fill_null(False) for rule in rules])


def failed_rules(rules: Sequence[Rule]) -> pl.Expr:
    """The names of the rules a row fails, as a list (empty when it passes all).

    Building lists is costly: apply it to the rows that fail ``passes_all`` only.
    """
    return (
        pl.concat_list(
            [
                pl.when(rule.passes.fill_null(False)).then(pl.lit(None, pl.String)).otherwise(pl.lit(rule.name))
                for rule in rules
            ]
        )
        .list.drop_nulls()
        .alias("failed_rules")
    )
