"""Registry history as type 2 slowly changing dimensions, built from the raw ``registry/<kind>`` snapshots.

The collector lands a full copy of a registry on every (re)connect and after every ``*_registry_updated``
event. Per item (keyed by a stable id), consecutive snapshots with the same JSON form one version; a
version starts when the item's JSON changes and ends at the next version or when a later full snapshot
no longer holds the item.

Times are HA's clock. A snapshot carries the collector's receive time, so it is moved onto HA's clock by
the offset (``received_at - time_fired``) of the event the collector received nearest to it; a version's
start is HA's own ``modified_at`` of the item when that is later than the previous version's last sighting
(the registry records exactly when it changed), else the time the changed snapshot was observed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

UTC_US = pl.Datetime("us", "UTC")

ENTITY_FIELDS = {
    "entity_id": pl.String,
    "unique_id": pl.String,
    "platform": pl.String,
    "device_id": pl.String,
    "config_entry_id": pl.String,
    "area_id": pl.String,
    "labels": pl.List(pl.String),
    "name": pl.String,
    "original_name": pl.String,
    "has_entity_name": pl.Boolean,
    "entity_category": pl.String,
    "disabled_by": pl.String,
    "hidden_by": pl.String,
}
DEVICE_FIELDS = {
    "name": pl.String,
    "name_by_user": pl.String,
    "manufacturer": pl.String,
    "model": pl.String,
    "area_id": pl.String,
    "via_device_id": pl.String,
    "config_entries": pl.List(pl.String),
    "primary_config_entry": pl.String,
    "labels": pl.List(pl.String),
    "entry_type": pl.String,
    "disabled_by": pl.String,
}
AREA_FIELDS = {
    "name": pl.String,
    "floor_id": pl.String,
    "labels": pl.List(pl.String),
    "aliases": pl.List(pl.String),
    "icon": pl.String,
    "temperature_entity_id": pl.String,
    "humidity_entity_id": pl.String,
}
FLOOR_FIELDS = {"name": pl.String, "level": pl.Int64, "aliases": pl.List(pl.String), "icon": pl.String}
LABEL_FIELDS = {"name": pl.String, "color": pl.String, "icon": pl.String, "description": pl.String}
CONFIG_ENTRY_FIELDS = {
    "domain": pl.String,
    "title": pl.String,
    "source": pl.String,
    "state": pl.String,
    "disabled_by": pl.String,
}


@dataclass(frozen=True)
class DimensionSpec:
    """How one registry kind becomes a dimension: its key column and the JSON fields parsed into columns."""

    kind: str
    key: str
    fields: dict[str, pl.DataType]
    key_field: str | None = None  # JSON field holding the stable key when the lake's item_id is not stable

    @property
    def table(self) -> str:
        return f"dim_{self.kind}"


DIMENSIONS: dict[str, DimensionSpec] = {
    # an entity's item_id is its entity_id, which a rename changes; the registry's own "id" does not change
    "entities": DimensionSpec("entities", "entity_uid", ENTITY_FIELDS, key_field="id"),
    "devices": DimensionSpec("devices", "device_id", DEVICE_FIELDS),
    "areas": DimensionSpec("areas", "area_id", AREA_FIELDS),
    "floors": DimensionSpec("floors", "floor_id", FLOOR_FIELDS),
    "labels": DimensionSpec("labels", "label_id", LABEL_FIELDS),
    "config_entries": DimensionSpec("config_entries", "entry_id", CONFIG_ENTRY_FIELDS),
}

SCD_COLUMNS = ["home", "version", "valid_from", "valid_to", "is_current"]
TRAILING_COLUMNS = [
    "created_at",
    "modified_at",
    "change_source",
    "first_seen_at",
    "last_seen_at",
    "first_snapshot_seq",
    "last_snapshot_seq",
    "data",
]


def dimension_schema(spec: DimensionSpec) -> pl.Schema:
    """Column schema of a dimension table."""
    return pl.Schema(
        {
            "home": pl.String,
            spec.key: pl.String,
            "version": pl.Int64,
            "valid_from": UTC_US,
            "valid_to": UTC_US,
            "is_current": pl.Boolean,
            **{k: v for k, v in spec.fields.items() if k != spec.key},
            "created_at": UTC_US,
            "modified_at": UTC_US,
            "change_source": pl.String,
            "first_seen_at": UTC_US,
            "last_seen_at": UTC_US,
            "first_snapshot_seq": pl.Int64,
            "last_snapshot_seq": pl.Int64,
            "data": pl.String,
        }
    )


def _unix_to_utc(expr: pl.Expr) -> pl.Expr:
    return (expr * 1_000_000).round().cast(pl.Int64).cast(UTC_US)


def snapshot_clock(snapshots: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """Each snapshot's time on HA's clock: ``observed_at`` per (home, kind, snapshot_at, snapshot_seq).

    ``snapshot_at`` is when the collector received the answer; the nearest event it received gives the
    offset between its clock and HA's (network delay, host clock skew, or a replay's time shift).
    """
    snaps = snapshots.group_by("home", "kind", "snapshot_at", "snapshot_seq").agg().sort("snapshot_at")
    offsets = (
        events.select("home", "received_at", offset=pl.col("received_at") - pl.col("time_fired"))
        .drop_nulls()
        .sort("received_at")
    )
    return snaps.join_asof(
        offsets, left_on="snapshot_at", right_on="received_at", by="home", strategy="nearest", check_sortedness=False
    ).select(
        "home",
        "kind",
        "snapshot_at",
        "snapshot_seq",
        observed_at=pl.col("snapshot_at") - pl.col("offset").fill_null(pl.duration(seconds=0)),
    )


def registry_history(snapshots: pl.LazyFrame, spec: DimensionSpec, clock: pl.LazyFrame | None = None) -> pl.DataFrame:
    """The type 2 dimension of one registry kind from all its raw snapshot rows.

    ``snapshots``: rows of the lake's ``registry/<kind>`` table (other kinds are ignored); ``clock``: the
    output of :func:`snapshot_clock` (without it, ``snapshot_at`` is taken as HA's time).
    """
    rows = snapshots.filter(pl.col("kind") == spec.kind)
    if clock is None:
        rows = rows.with_columns(observed_at=pl.col("snapshot_at"))
    else:
        rows = rows.join(
            clock, on=["home", "kind", "snapshot_at", "snapshot_seq"], how="left", nulls_equal=True
        ).with_columns(observed_at=pl.coalesce("observed_at", "snapshot_at"))
    # every full snapshot of the home, in order, with the time of the one after it (when an absent item ended)
    snaps = (
        rows.select("home", "snapshot_at", "snapshot_seq", "observed_at")
        .unique()
        .sort("home", "observed_at", "snapshot_seq")
        .with_columns(
            snap_idx=pl.int_range(pl.len()).over("home"),
            next_observed_at=pl.col("observed_at").shift(-1).over("home"),
            last_idx=(pl.len() - 1).over("home"),
        )
    )
    key = pl.col("data").str.json_path_match(f"$.{spec.key_field}") if spec.key_field else pl.col("item_id")
    order = ["home", spec.key, "snap_idx"]
    group = ["home", spec.key]
    rows = (
        rows.with_columns(key.alias(spec.key))
        .filter(pl.col(spec.key).is_not_null())
        .join(snaps, on=["home", "snapshot_at", "snapshot_seq", "observed_at"])
        .unique(subset=order, keep="first")
        .sort(order)
        .with_columns(
            prev_idx=pl.col("snap_idx").shift(1).over(group),
            next_idx=pl.col("snap_idx").shift(-1).over(group),
            prev_data=pl.col("data").shift(1).over(group),
        )
        .with_columns(new_run=pl.col("prev_idx").is_null() | (pl.col("snap_idx") != pl.col("prev_idx") + 1))
        .with_columns(
            changed=pl.col("new_run") | (pl.col("data") != pl.col("prev_data")),
            removed_at=pl.when(
                (pl.col("next_idx").is_null() | (pl.col("next_idx") != pl.col("snap_idx") + 1))
                & (pl.col("snap_idx") < pl.col("last_idx"))
            ).then(pl.col("next_observed_at")),
        )
        .with_columns(version=pl.col("changed").cast(pl.Int64).cum_sum().over(group))
    )
    versions = (
        rows.group_by("home", spec.key, "version", maintain_order=True)
        .agg(
            pl.col("data").first(),
            first_seen_at=pl.col("observed_at").first(),
            last_seen_at=pl.col("observed_at").last(),
            first_snapshot_seq=pl.col("snapshot_seq").first(),
            last_snapshot_seq=pl.col("snapshot_seq").last(),
            removed_at=pl.col("removed_at").last(),
        )
        .sort("home", spec.key, "version")
        .with_columns(
            stamps=pl.col("data").str.json_decode(
                dtype=pl.Struct({"created_at": pl.Float64, "modified_at": pl.Float64})
            )
        )
        .with_columns(
            created_at=_unix_to_utc(pl.col("stamps").struct.field("created_at")),
            modified_at=_unix_to_utc(pl.col("stamps").struct.field("modified_at")),
            prev_last_seen=pl.col("last_seen_at").shift(1).over(group),
        )
        .with_columns(
            valid_from=pl.when(
                pl.col("modified_at").is_not_null()
                & (pl.col("prev_last_seen").is_null() | (pl.col("modified_at") > pl.col("prev_last_seen")))
            )
            .then(pl.col("modified_at"))
            .otherwise(pl.col("first_seen_at"))
        )
        .with_columns(valid_to=pl.coalesce(pl.col("removed_at"), pl.col("valid_from").shift(-1).over(group)))
        .with_columns(is_current=pl.col("valid_to").is_null(), change_source=pl.lit("snapshot"))
    )
    return _with_fields(versions.collect(), spec)


def _with_fields(versions: pl.DataFrame, spec: DimensionSpec) -> pl.DataFrame:
    fields = {k: v for k, v in spec.fields.items() if k != spec.key}
    parsed = versions.with_columns(parsed=pl.col("data").str.json_decode(dtype=pl.Struct(fields))).unnest("parsed")
    return parsed.select(dimension_schema(spec).names()).cast(dict(dimension_schema(spec)))


def rename_events(events: pl.LazyFrame) -> pl.LazyFrame:
    """Entity id renames announced by ``entity_registry_updated`` events: (home, renamed_at, old, new)."""
    return (
        events.filter(pl.col("event_type") == "entity_registry_updated")
        .select(
            "home",
            renamed_at=pl.col("time_fired"),
            action=pl.col("data").str.json_path_match("$.action"),
            old_entity_id=pl.col("data").str.json_path_match("$.old_entity_id"),
            new_entity_id=pl.col("data").str.json_path_match("$.entity_id"),
        )
        .filter((pl.col("action") == "update") & pl.col("old_entity_id").is_not_null())
        .drop("action")
        .sort("renamed_at")
    )


def apply_entity_renames(entities: pl.DataFrame, renames: pl.DataFrame) -> pl.DataFrame:
    """Split entity versions at renames that no snapshot shows yet.

    The registry answer the collector fetches after a rename normally holds the new entity_id (then the
    event adds nothing). When it is missing or stale, the event alone says that from ``renamed_at`` on the
    entity that was ``old_entity_id`` is ``new_entity_id``: the version covering that time is split in two.
    """
    spec = DIMENSIONS["entities"]
    rows = entities.to_dicts()
    for rename in renames.sort("renamed_at").iter_rows(named=True):
        at, home = rename["renamed_at"], rename["home"]
        owners = {r["entity_uid"] for r in rows if r["home"] == home and r["entity_id"] == rename["old_entity_id"]}
        if len(owners) != 1:
            continue
        [uid] = owners
        versions = sorted(
            (r for r in rows if r["home"] == home and r["entity_uid"] == uid), key=lambda r: r["valid_from"]
        )
        if any(r["entity_id"] == rename["new_entity_id"] for r in versions):
            continue
        covering = [r for r in versions if r["valid_from"] <= at and (r["valid_to"] is None or at < r["valid_to"])]
        if not covering or covering[0]["entity_id"] != rename["old_entity_id"]:
            continue
        old = covering[0]
        data = json.loads(old["data"])
        data["entity_id"] = rename["new_entity_id"]
        new = {
            **old,
            "entity_id": rename["new_entity_id"],
            "valid_from": at,
            "change_source": "rename_event",
            "first_seen_at": at,
            "data": json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        }
        old["valid_to"], old["is_current"] = at, False
        rows.append(new)
    if not rows:
        return entities
    out = pl.DataFrame(rows, schema=dimension_schema(spec)).sort("home", "entity_uid", "valid_from")
    return out.with_columns(version=pl.int_range(1, pl.len() + 1).over("home", "entity_uid").cast(pl.Int64))


def home_settings(core_config: pl.LazyFrame) -> pl.DataFrame:
    """Per home, HA's time zone and location from its latest ``registry/core_config`` snapshot."""
    fields = pl.Struct({"time_zone": pl.String, "latitude": pl.Float64, "longitude": pl.Float64})
    return (
        core_config.sort("snapshot_at", "snapshot_seq")
        .unique(subset="home", keep="last")
        .select("home", settings=pl.col("data").str.json_decode(dtype=fields))
        .unnest("settings")
        .sort("home")
        .collect()
    )


def history_problems(dimension: pl.DataFrame, key: str) -> pl.DataFrame:
    """Keys whose versions do not form a proper history: an interval ending before it starts, versions
    overlapping, or more than one current version."""
    checked = (
        dimension.sort("home", key, "valid_from", "version")
        .with_columns(next_from=pl.col("valid_from").shift(-1).over("home", key))
        .with_columns(
            backwards=pl.col("valid_to") < pl.col("valid_from"),
            overlapping=pl.col("next_from").is_not_null()
            & (pl.col("valid_to").is_null() | (pl.col("next_from") < pl.col("valid_to"))),
        )
    )
    return (
        checked.group_by("home", key)
        .agg(
            backwards=pl.col("backwards").any(),
            overlapping=pl.col("overlapping").any(),
            current_versions=pl.col("is_current").sum(),
        )
        .filter(pl.col("backwards") | pl.col("overlapping") | (pl.col("current_versions") > 1))
        .sort("home", key)
    )
