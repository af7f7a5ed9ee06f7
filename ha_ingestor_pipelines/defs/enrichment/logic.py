"""State rows enriched with the registry as it was, local time, place and surroundings (pure polars).

``enrich_states`` is the core of ``["derived", "enriched_states"]``. It stays lazy over the state rows
(only the small registry timeline is computed up front), sorts the wide frame once, and joins the
registry with a single as-of join per row: the registry chain (entity -> device -> area -> floor, config
entry, label names) is resolved beforehand on the type 2 dimensions of ``registry_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from .registry_history import DIMENSIONS, UTC_US, dimension_schema

# before a key's first known version, that version is the best knowledge: the registry is only
# snapshotted on connect, so rows from the history backfill or the first seconds precede it
BEFORE_ALL = datetime(1970, 1, 1, tzinfo=UTC)

TRACKER_DOMAINS = ("person", "device_tracker")
# domains whose state changes are a person using the home (not measurements or bookkeeping)
USAGE_DOMAINS = (
    "light",
    "switch",
    "fan",
    "cover",
    "climate",
    "media_player",
    "lock",
    "vacuum",
    "humidifier",
    "water_heater",
    "valve",
    "siren",
    "alarm_control_panel",
    "scene",
    "button",
    "input_boolean",
    "input_button",
    "input_number",
    "input_select",
    "input_text",
    "input_datetime",
    "select",
    "number",
    "text",
)
PEAK_HOURS_PER_SCOPE = 3
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NORTH_SEASONS = {
    12: "winter",
    1: "winter",
    2: "winter",
    3: "spring",
    4: "spring",
    5: "spring",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "autumn",
    10: "autumn",
    11: "autumn",
}
SOUTH_OF = {"winter": "summer", "spring": "autumn", "summer": "winter", "autumn": "spring"}
ENVIRONMENT_CLASSES = {"temperature": "area_temperature", "humidity": "area_humidity"}
EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class RegistryDims:
    """The six registry dimensions (tables of ``registry_history``) as lazy frames."""

    entities: pl.LazyFrame
    devices: pl.LazyFrame
    areas: pl.LazyFrame
    floors: pl.LazyFrame
    labels: pl.LazyFrame
    config_entries: pl.LazyFrame

    @classmethod
    def empty(cls) -> RegistryDims:
        return cls(**{kind: pl.LazyFrame(schema=dimension_schema(spec)) for kind, spec in DIMENSIONS.items()})


def _asof_table(dim: pl.LazyFrame, key: str, columns: dict[str, pl.Expr | str]) -> pl.LazyFrame:
    """(home, key, join_from, columns...) for a backward as-of join; a key's first version also covers
    the time before it."""
    exprs = [pl.col(v).alias(k) if isinstance(v, str) else v.alias(k) for k, v in columns.items()]
    return (
        dim.filter(pl.col(key).is_not_null())
        .select("home", key, "valid_from", *exprs)
        .sort("home", key, "valid_from")
        .with_columns(
            join_from=pl.when(pl.int_range(pl.len()).over("home", key) == 0)
            .then(pl.lit(BEFORE_ALL, dtype=UTC_US))
            .otherwise(pl.col("valid_from"))
        )
        .drop("valid_from")
        .sort("join_from")
    )


REGISTRY_COLUMNS = [
    "entity_uid",
    "entity_name",
    "platform",
    "device_id",
    "device_name",
    "manufacturer",
    "model",
    "via_device_id",
    "area_id",
    "area_name",
    "floor_id",
    "floor_name",
    "floor_level",
    "config_entry_id",
    "integration",
    "config_entry_title",
    "labels",
    "label_names",
    "device_labels",
]


def _join_asof(frame: pl.LazyFrame, table: pl.LazyFrame, key: str) -> pl.LazyFrame:
    return frame.join_asof(
        table,
        left_on="last_updated",
        right_on="join_from",
        by=["home", key],
        strategy="backward",
        check_sortedness=False,
    ).drop("join_from")


def _label_names(entities: pl.LazyFrame, labels: pl.LazyFrame) -> pl.LazyFrame:
    """(home, labels_key, join_from, label_names): the names of each label set the entity registry used,
    from each time one of its labels changed; resolved per distinct set, never per row."""
    names = _asof_table(labels, "label_id", {"label_name": "name"})
    members = (
        entities.select(
            "home", labels_key=pl.col("labels").list.sort().list.join(","), label_id=pl.col("labels").list.sort()
        )
        .filter(pl.col("label_id").list.len() > 0)
        .unique(subset=["home", "labels_key"])
        .explode("label_id")
        .with_columns(position=pl.int_range(pl.len()).over("home", "labels_key"))
    )
    # a set's names can change only when one of its labels gets a new version
    breaks = (
        members.join(names.select("home", "label_id", "join_from"), on=["home", "label_id"])
        .select("home", "labels_key", "join_from")
        .unique()
    )
    return (
        breaks.join(members, on=["home", "labels_key"])
        .sort("join_from")
        .join_asof(
            names.rename({"join_from": "name_from"}),
            left_on="join_from",
            right_on="name_from",
            by=["home", "label_id"],
            strategy="backward",
            check_sortedness=False,
        )
        .sort("home", "labels_key", "join_from", "position")
        .group_by("home", "labels_key", "join_from", maintain_order=True)
        .agg(label_names=pl.col("label_name"))
        .sort("join_from")
    )


def zones_from_states(states: pl.LazyFrame) -> pl.LazyFrame:
    """Zones (``zone.*`` entities) with their centre, radius and name, from their latest state rows."""
    attrs = pl.col("attributes")
    return (
        states.filter((pl.col("domain") == "zone") & pl.col("state").is_not_null())
        .sort("last_updated")
        .unique(subset=["home", "entity_id"], keep="last")
        .select(
            "home",
            zone_entity_id=pl.col("entity_id"),
            zone_name=attrs.str.json_path_match("$.friendly_name"),
            zone_latitude=attrs.str.json_path_match("$.latitude").cast(pl.Float64, strict=False),
            zone_longitude=attrs.str.json_path_match("$.longitude").cast(pl.Float64, strict=False),
            zone_radius=attrs.str.json_path_match("$.radius").cast(pl.Float64, strict=False),
            zone_passive=attrs.str.json_path_match("$.passive") == "true",
        )
    )


def _haversine_m(lat1: pl.Expr, lon1: pl.Expr, lat2: pl.Expr, lon2: pl.Expr) -> pl.Expr:
    dlat, dlon = (lat2 - lat1).radians(), (lon2 - lon1).radians()
    a = (dlat / 2).sin() ** 2 + lat1.radians().cos() * lat2.radians().cos() * (dlon / 2).sin() ** 2
    return 2 * EARTH_RADIUS_M * a.sqrt().arcsin()


def tracker_zones(trackers: pl.LazyFrame, zones: pl.LazyFrame) -> pl.LazyFrame:
    """(home, entity_id, last_updated, zone_entity_id, zone_name, zone_match) for person/device_tracker rows.

    The state names the zone (``home`` is ``zone.home``, else the zone's name, as HA sets it); a tracker
    outside every named zone (``not_home``) with coordinates is placed in the nearest active zone whose
    radius holds it. Where several zones qualify alike (same name, same distance), the first by entity id.
    """
    keys = ["home", "entity_id", "last_updated"]
    # of zones sharing a name, the first by entity id
    keyed = (
        zones.with_columns(
            zone_key=pl.when(pl.col("zone_entity_id") == "zone.home")
            .then(pl.lit("home"))
            .otherwise(pl.col("zone_name").str.to_lowercase())
        )
        .sort("zone_entity_id")
        .unique(subset=["home", "zone_key"], keep="first")
    )
    by_name = (
        trackers.with_columns(zone_key=pl.col("state").str.to_lowercase())
        .join(keyed.select("home", "zone_key", "zone_entity_id", "zone_name"), on=["home", "zone_key"])
        .unique(subset=keys, keep="first")
        .select(*keys, "zone_entity_id", "zone_name", zone_match=pl.lit("state"))
    )
    attrs = pl.col("attributes")
    by_position = (
        trackers.join(by_name.select(keys), on=keys, how="anti")
        .with_columns(
            lat=attrs.str.json_path_match("$.latitude").cast(pl.Float64, strict=False),
            lon=attrs.str.json_path_match("$.longitude").cast(pl.Float64, strict=False),
        )
        .filter(pl.col("lat").is_not_null() & pl.col("lon").is_not_null())
        .join(zones.filter(~pl.col("zone_passive").fill_null(False)), on="home")
        .with_columns(
            distance=_haversine_m(pl.col("lat"), pl.col("lon"), pl.col("zone_latitude"), pl.col("zone_longitude"))
        )
        .filter(pl.col("distance") <= pl.col("zone_radius"))
        .sort(*keys, "distance", "zone_entity_id")
        .unique(subset=keys, keep="first")
        .select(*keys, "zone_entity_id", "zone_name", zone_match=pl.lit("position"))
    )
    return pl.concat([by_name, by_position])


def _to_celsius(value: pl.Expr, unit: pl.Expr) -> pl.Expr:
    return pl.when(unit == "°F").then((value - 32) * 5 / 9).when(unit == "K").then(value - 273.15).otherwise(value)


@dataclass(frozen=True)
class _Lookups:
    entities: pl.LazyFrame
    devices: pl.LazyFrame
    areas: pl.LazyFrame
    floors: pl.LazyFrame
    entries: pl.LazyFrame
    label_sets: pl.LazyFrame


def _lookups(dims: RegistryDims) -> _Lookups:
    sorted_labels = pl.col("labels").list.sort()
    return _Lookups(
        entities=_asof_table(
            dims.entities,
            "entity_id",
            {
                "entity_uid": "entity_uid",
                "entity_name": pl.coalesce("name", "original_name"),
                "platform": "platform",
                "device_id": "device_id",
                "_entity_area_id": "area_id",
                "_entity_config_entry_id": "config_entry_id",
                "labels": sorted_labels,
                "labels_key": sorted_labels.list.join(","),
            },
        ),
        devices=_asof_table(
            dims.devices,
            "device_id",
            {
                "device_name": pl.coalesce("name_by_user", "name"),
                "manufacturer": "manufacturer",
                "model": "model",
                "via_device_id": "via_device_id",
                "_device_area_id": "area_id",
                "_device_config_entry_id": pl.coalesce("primary_config_entry", pl.col("config_entries").list.first()),
                "device_labels": "labels",
            },
        ),
        areas=_asof_table(
            dims.areas,
            "area_id",
            {
                "area_name": "name",
                "floor_id": "floor_id",
                "_area_temperature_entity_id": "temperature_entity_id",
                "_area_humidity_entity_id": "humidity_entity_id",
            },
        ),
        floors=_asof_table(dims.floors, "floor_id", {"floor_name": "name", "floor_level": "level"}),
        entries=_asof_table(
            dims.config_entries.rename({"entry_id": "config_entry_id"}),
            "config_entry_id",
            {"integration": "domain", "config_entry_title": "title"},
        ),
        label_sets=_label_names(dims.entities, dims.labels),
    )


def _with_registry(frame: pl.LazyFrame, lookups: _Lookups) -> pl.LazyFrame:
    """Registry columns as of each row's ``last_updated`` (``frame`` sorted by it)."""
    frame = _join_asof(frame, lookups.entities, "entity_id")
    frame = _join_asof(frame, lookups.devices, "device_id")
    frame = frame.with_columns(
        area_id=pl.coalesce("_entity_area_id", "_device_area_id"),
        config_entry_id=pl.coalesce("_entity_config_entry_id", "_device_config_entry_id"),
    )
    frame = _join_asof(frame, lookups.areas, "area_id")
    frame = _join_asof(frame, lookups.floors, "floor_id")
    frame = _join_asof(frame, lookups.entries, "config_entry_id")
    frame = frame.join_asof(
        lookups.label_sets,
        left_on="last_updated",
        right_on="join_from",
        by=["home", "labels_key"],
        strategy="backward",
        check_sortedness=False,
    ).drop("join_from")
    return frame.with_columns(
        label_names=pl.when(pl.col("labels").is_not_null()).then(
            pl.col("label_names").fill_null(pl.lit([], dtype=pl.List(pl.String)))
        )
    )


def registry_timeline(dims: RegistryDims) -> pl.LazyFrame:
    """Per entity_id, the registry context (entity, device, area, floor, config entry, label names) from
    each moment any part of its chain changed: (home, entity_id, join_from, columns...).

    The chain is resolved here, on the small dimensions, so a day of state rows needs one as-of join.
    Every time one of an entity's referenced devices, areas, floors, entries or labels got a new version
    is a break point, so resolving at the break points is exact.
    """
    lk = _lookups(dims)
    ids = ["home", "entity_id"]
    entity = lk.entities.select(
        *ids, "join_from", "device_id", "_entity_area_id", "_entity_config_entry_id", "labels_key"
    )
    device = (
        entity.select(*ids, "device_id")
        .drop_nulls()
        .unique()
        .join(
            lk.devices.select("home", "device_id", "join_from", "_device_area_id", "_device_config_entry_id"),
            on=["home", "device_id"],
        )
    )
    area_refs = (
        pl.concat([entity.select(*ids, area_id="_entity_area_id"), device.select(*ids, area_id="_device_area_id")])
        .drop_nulls()
        .unique()
    )
    area = area_refs.join(lk.areas.select("home", "area_id", "join_from", "floor_id"), on=["home", "area_id"])
    floor = (
        area.select(*ids, "floor_id")
        .drop_nulls()
        .unique()
        .join(lk.floors.select("home", "floor_id", "join_from"), on=["home", "floor_id"])
    )
    entry = (
        pl.concat(
            [
                entity.select(*ids, config_entry_id="_entity_config_entry_id"),
                device.select(*ids, config_entry_id="_device_config_entry_id"),
            ]
        )
        .drop_nulls()
        .unique()
        .join(lk.entries.select("home", "config_entry_id", "join_from"), on=["home", "config_entry_id"])
    )
    label = (
        entity.select(*ids, "labels_key")
        .unique()
        .join(lk.label_sets.select("home", "labels_key", "join_from"), on=["home", "labels_key"])
    )
    breaks = (
        pl.concat([part.select(*ids, last_updated="join_from") for part in (entity, device, area, floor, entry, label)])
        .unique()
        .sort("last_updated")
    )
    resolved = _with_registry(breaks, lk).rename({"last_updated": "join_from"})
    # categorical: a day's rows repeat a few hundred distinct values, and gathering and writing codes is
    # several times cheaper than strings (DuckDB reads them as VARCHAR)
    return (
        resolved.select(*ids, "join_from", *REGISTRY_COLUMNS, "_area_temperature_entity_id", "_area_humidity_entity_id")
        .with_columns(
            pl.col(pl.String).exclude(ids).cast(pl.Categorical),
            pl.col(pl.List(pl.String)).cast(pl.List(pl.Categorical)),
        )
        .sort("join_from")
    )


def _area_readings(source: pl.LazyFrame, timeline: pl.LazyFrame, value_column: str) -> dict[str, pl.LazyFrame]:
    """Per environment class, the numeric readings of sensors of that class with the area they were in.

    Temperatures are in °C whatever unit the sensor reported at that time; an area that names its own
    ``temperature_entity_id`` / ``humidity_entity_id`` takes readings from that sensor only.
    """
    parsed = pl.col("attributes").str.json_decode(
        dtype=pl.Struct({"device_class": pl.String, "unit_of_measurement": pl.String})
    )
    sensors = (
        source.filter((pl.col("domain") == "sensor") & pl.col(value_column).is_not_null())
        .select("home", "entity_id", "last_updated", value=pl.col(value_column), _parsed=parsed)
        .unnest("_parsed")
        .filter(pl.col("device_class").is_in(list(ENVIRONMENT_CLASSES)))
        .sort("last_updated")
    )
    placed = _join_asof(sensors, timeline, "entity_id").filter(pl.col("area_id").is_not_null())
    tables = {}
    for device_class, prefix in ENVIRONMENT_CLASSES.items():
        chosen = pl.col(f"_area_{device_class}_entity_id")
        if device_class == "temperature":
            value = _to_celsius(pl.col("value"), pl.col("unit_of_measurement")).alias(f"{prefix}_c")
        else:
            value = pl.col("value").alias(f"{prefix}_pct")
        tables[prefix] = (
            placed.filter(
                (pl.col("device_class") == device_class) & (chosen.is_null() | (chosen == pl.col("entity_id")))
            )
            .select(
                "home",
                "area_id",
                value,
                pl.col("last_updated").alias(f"{prefix}_at"),
                pl.col("entity_id").alias(f"{prefix}_entity_id"),
            )
            .sort(f"{prefix}_at")
        )
    return tables


def _local_time(tz: str) -> dict[str, pl.Expr]:
    local = pl.col("last_updated").dt.convert_time_zone(tz)
    return {"local_time": local, "local_date": local.dt.date(), "local_hour": local.dt.hour().cast(pl.Int8)}


def _season(month: pl.Expr, latitude: float | None) -> pl.Expr:
    seasons = NORTH_SEASONS if latitude is None or latitude >= 0 else {m: SOUTH_OF[s] for m, s in NORTH_SEASONS.items()}
    return month.replace_strict(seasons, return_dtype=pl.String)


def is_usage() -> pl.Expr:
    """A change of state value (not attribute-only) of an entity a person operates."""
    return (
        pl.col("domain").is_in(USAGE_DOMAINS)
        & pl.col("old_state").is_not_null()
        & (pl.col("state") != pl.col("old_state"))
    ).fill_null(False)


def peak_hours(enriched: pl.LazyFrame) -> pl.LazyFrame:
    """Rows and usage (see :func:`is_usage`) per local hour, per home and per area (``enriched_states``
    rows): hours whose usage is one of the ``PEAK_HOURS_PER_SCOPE`` highest counts of that day (and not 0)
    are peaks."""
    rows = enriched.with_columns(usage=is_usage())

    def per(scope: str, keys: list[str]) -> pl.LazyFrame:
        grouped = rows.group_by("home", *keys, "local_date", "local_hour").agg(
            events=pl.len().cast(pl.Int64), usage_events=pl.col("usage").sum().cast(pl.Int64)
        )
        if not keys:
            grouped = grouped.with_columns(
                area_id=pl.lit(None, dtype=pl.String), area_name=pl.lit(None, dtype=pl.String)
            )
        rank = pl.col("usage_events").rank("dense", descending=True).over("home", "area_id", "local_date")
        return grouped.with_columns(scope=pl.lit(scope), usage_rank=rank.cast(pl.Int64)).with_columns(
            is_peak=(pl.col("usage_rank") <= PEAK_HOURS_PER_SCOPE) & (pl.col("usage_events") > 0)
        )

    columns = [
        "home",
        "scope",
        pl.col("area_id").cast(pl.String),
        pl.col("area_name").cast(pl.String),
        "local_date",
        "local_hour",
        "events",
        "usage_events",
        "usage_rank",
        "is_peak",
    ]
    home = per("home", []).select(columns)
    area = per("area", ["area_id", "area_name"]).filter(pl.col("area_id").is_not_null()).select(columns)
    return pl.concat([home, area]).sort("home", "scope", "area_id", "local_date", "local_hour", nulls_last=False)


ADDED_COLUMNS = [
    *REGISTRY_COLUMNS,
    "local_time",
    "local_date",
    "local_hour",
    "weekday",
    "weekday_name",
    "is_weekend",
    "season",
    "seconds_since_previous",
    "entity_events_day",
    "entity_events_hour",
    "entity_events_per_hour",
    "is_home_peak_hour",
    "is_area_peak_hour",
    "zone_entity_id",
    "zone_name",
    "zone_match",
    "area_temperature_c",
    "area_temperature_at",
    "area_temperature_entity_id",
    "area_humidity_pct",
    "area_humidity_at",
    "area_humidity_entity_id",
]


def _in_time_order(rows: pl.LazyFrame) -> bool:
    """Whether ``rows`` are already in ``last_updated`` order without nulls, as validation writes a day: a
    look at one column, against a sort of every column."""
    last_updated = pl.col("last_updated")
    return rows.select(last_updated.is_sorted() & (last_updated.null_count() == 0)).collect().item()


def _time_ordered(day: pl.LazyFrame, context: pl.LazyFrame | None) -> pl.LazyFrame:
    """``context`` and ``day`` rows together in ``last_updated`` order, a context row first among equal
    times: the stable sort of the two concatenated, or, when ``day`` is in time order already (validated
    days are), a merge with the few context rows sorted."""
    if not _in_time_order(day):
        rows = day if context is None else pl.concat([context, day], how="vertical_relaxed")
        return rows.sort("last_updated", maintain_order=True)
    day = day.with_columns(pl.col("last_updated").set_sorted())
    if context is None:
        return day
    if context.collect_schema() != day.collect_schema():
        return pl.concat([context, day], how="vertical_relaxed").sort("last_updated", maintain_order=True)
    return context.sort("last_updated", maintain_order=True).merge_sorted(day, key="last_updated", maintain_order=True)


def enrich_states(
    states: pl.LazyFrame,
    dims: RegistryDims,
    tz: str,
    *,
    latitude: float | None = None,
    zones: pl.LazyFrame | None = None,
    context: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Every row of ``states`` (lake ``states`` schema, or ``validated_states`` with ``value_num``), all its
    columns but ``attributes``, plus (``ADDED_COLUMNS``):

    - the registry as of ``last_updated``: entity (followed through renames by its registry id), device,
      area (the entity's own, else its device's), floor, labels and their names, config entry/integration;
    - time in HA's zone ``tz``: local date, hour, weekday, season (hemisphere from ``latitude``), seconds
      since the entity's previous row, the entity's rows that day / that UTC hour / per active hour of the
      home that day, and whether the local hour is a peak usage hour of the home and of the row's area;
    - place: for person/device_tracker rows the zone (by state name, else by coordinates);
    - surroundings: the area's latest temperature (°C) and humidity at that time.

    ``zones`` defaults to the zones found in the rows; ``context`` (e.g. the previous day's rows) only
    feeds "previous row" and "latest reading" and is not emitted.
    """
    schema = states.collect_schema()
    value_column = "value_num" if "value_num" in schema else "state_num"
    day = states.with_columns(_context=pl.lit(False))
    last_known = None
    if context is not None:
        latest_first = context if _in_time_order(context) else context.sort("last_updated")
        last_known = (
            latest_first.unique(subset=["home", "entity_id"], keep="last")
            .select(schema.names())
            .with_columns(_context=pl.lit(True))
        )
    source = day if last_known is None else pl.concat([last_known, day], how="vertical_relaxed")
    # small (entities x registry changes): computed once here instead of once per use in the plan
    timeline = registry_timeline(dims).collect().lazy()
    emitted = ~pl.col("_context")

    readings = _area_readings(source, timeline, value_column)
    zones = zones if zones is not None else zones_from_states(source)
    placed = tracker_zones(
        source.filter(emitted & pl.col("domain").is_in(TRACKER_DOMAINS) & pl.col("state").is_not_null()).select(
            "home", "entity_id", "last_updated", "state", "attributes"
        ),
        zones,
    ).sort("last_updated")

    entity = ["home", "entity_id"]
    utc_hour = pl.col("last_updated").dt.truncate("1h")
    hour = ["home", "local_date", "local_hour"]
    area_hour = ["home", "area_id", "local_date", "local_hour"]
    # time order is what every as-of join needs and what the output keeps
    frame = _time_ordered(
        day.drop("attributes", strict=False),
        None if last_known is None else last_known.drop("attributes", strict=False),
    )
    frame = (
        _join_asof(frame, timeline, "entity_id")
        .with_columns(
            **_local_time(tz),
            seconds_since_previous=(
                pl.col("last_updated") - pl.col("last_updated").shift(1).over(entity)
            ).dt.total_microseconds()
            / 1e6,
            entity_events_day=emitted.sum().over(entity).cast(pl.Int64),
            entity_events_hour=emitted.sum().over([*entity, utc_hour]).cast(pl.Int64),
            _active_hours=utc_hour.filter(emitted).n_unique().over("home"),
            _usage=is_usage() & emitted,
        )
        .with_columns(weekday=pl.col("local_time").dt.weekday().cast(pl.Int8))
        .with_columns(
            weekday_name=pl.col("weekday").replace_strict(dict(enumerate(WEEKDAYS, start=1)), return_dtype=pl.String),
            is_weekend=pl.col("weekday") >= 6,
            season=_season(pl.col("local_time").dt.month(), latitude),
            entity_events_per_hour=pl.col("entity_events_day") / pl.col("_active_hours"),
            _hour_usage=pl.col("_usage").sum().over(hour),
            _area_hour_usage=pl.col("_usage").sum().over(area_hour),
        )
        .with_columns(  # the same definition as peak_hours, computed in place
            # ranks of values, so equal to ranking the hours; local dates as far as this UTC day covers them
            is_home_peak_hour=(pl.col("_hour_usage") > 0)
            & (pl.col("_hour_usage").rank("dense", descending=True).over("home", "local_date") <= PEAK_HOURS_PER_SCOPE),
            is_area_peak_hour=pl.col("area_id").is_not_null()
            & (pl.col("_area_hour_usage") > 0)
            & (
                pl.col("_area_hour_usage").rank("dense", descending=True).over("home", "area_id", "local_date")
                <= PEAK_HOURS_PER_SCOPE
            ),
        )
    )
    for prefix, table in readings.items():
        frame = frame.join_asof(
            table,
            left_on="last_updated",
            right_on=f"{prefix}_at",
            by=["home", "area_id"],
            strategy="backward",
            check_sortedness=False,
        )
    # exact matches only: the zone of that very row
    frame = frame.join_asof(
        placed, on="last_updated", by=entity, strategy="backward", tolerance=timedelta(0), check_sortedness=False
    )
    passthrough = [name for name in schema.names() if name != "attributes"]
    return frame.filter(emitted).select(*passthrough, *ADDED_COLUMNS)
