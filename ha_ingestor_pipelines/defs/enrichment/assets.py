"""Enrichment: the registry's history as dimensions, state rows in context, peak usage hours."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ..common.asset_keys import (
    DIMENSION_KEYS,
    ENRICHED_STATES,
    LAKE_EVENTS,
    LAKE_REGISTRY,
    PEAK_HOURS,
    VALIDATED_STATES,
    table_name,
)
from ..common.lake_resource import LakeResource
from ..common.metadata import markdown_preview, table_metadata
from ..common.partitions import daily_partitions, neighbour_day
from .logic import RegistryDims, enrich_states, peak_hours
from .registry_history import (
    DIMENSIONS,
    apply_entity_renames,
    history_problems,
    home_settings,
    registry_history,
    rename_events,
    snapshot_clock,
)
from .tables import load_dimensions

GROUP = "enrichment"
# the validation domain's typed, de-duplicated state rows
STATES_INPUT = VALIDATED_STATES
VALID_HISTORY_CHECK = "valid_history"
ROWS_PRESERVED_CHECK = "rows_preserved"
DEFAULT_TIME_ZONE = "UTC"

DIMENSION_DESCRIPTIONS = {
    "entities": "Entity registry history keyed by the registry's stable `id` (`entity_uid`), so an entity_id "
    "rename is a new version of the same entity; renames seen only in `entity_registry_updated` "
    "events split a version too.",
    "devices": "Device registry history (area, `via_device` parent, config entries, labels) per device id.",
    "areas": "Area registry history (name, floor, labels, temperature/humidity sensors) per area id.",
    "floors": "Floor registry history per floor id.",
    "labels": "Label registry history per label id.",
    "config_entries": "Config entry history (integration domain, title, state) per entry id.",
}


def build_dimensions(lake: LakeResource) -> dict[str, pl.DataFrame]:
    """All six dimensions from every registry snapshot in the lake (and the events around them)."""
    snapshots = pl.concat([lake.scan_raw_days(f"registry/{kind}") for kind in DIMENSIONS])
    snapshot_days = {day for kind in DIMENSIONS for day in lake.raw_dates(f"registry/{kind}")}
    # renames and clock offsets: the events of the snapshot days (a re-fetch lands the day of its change,
    # or the next one around midnight)
    nearby = {neighbour_day(day, offset) for day in snapshot_days for offset in (-1, 0)}
    events = lake.scan_raw_days("events", nearby)
    clock = snapshot_clock(snapshots, events).collect().lazy()
    dimensions = {kind: registry_history(snapshots, spec, clock) for kind, spec in DIMENSIONS.items()}
    dimensions["entities"] = apply_entity_renames(dimensions["entities"], rename_events(events).collect())
    return dimensions


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            description=DIMENSION_DESCRIPTIONS[kind] + " Type 2: `valid_from`, `valid_to` "
            "(null while current), `is_current`; rebuilt from all `registry/*` snapshots.",
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            deps=[LAKE_REGISTRY, LAKE_EVENTS],
        )
        for kind, key in DIMENSION_KEYS.items()
    ],
    check_specs=[
        dg.AssetCheckSpec(
            VALID_HISTORY_CHECK,
            asset=key,
            description="Versions of each key follow each other without overlap and at most one is current.",
        )
        for key in DIMENSION_KEYS.values()
    ],
)
def registry_dimensions(lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """Registry history as slowly changing dimensions (the Delta tables ``dim_<kind>``).

    Not partitioned: a version can span any number of days, and the whole registry history is small
    (one row per item and change), so each run rebuilds every dimension from all snapshots.
    """
    for kind, frame in build_dimensions(lake).items():
        spec = DIMENSIONS[kind]
        path = lake.write_table(spec.table, frame)
        problems = history_problems(frame, spec.key)
        metadata = table_metadata(
            frame, path, [spec.key, "version", "valid_from", "valid_to", "is_current", *list(spec.fields)[:3]]
        )
        metadata["items"] = dg.MetadataValue.int(frame.select(pl.struct("home", spec.key).n_unique()).item())
        metadata["changed_items"] = dg.MetadataValue.int(
            frame.filter(pl.col("version") > 1).select(pl.struct("home", spec.key).n_unique()).item()
        )
        yield dg.MaterializeResult(
            asset_key=DIMENSION_KEYS[kind],
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    asset_key=DIMENSION_KEYS[kind],
                    check_name=VALID_HISTORY_CHECK,
                    passed=problems.is_empty(),
                    metadata={
                        "bad_keys": dg.MetadataValue.int(problems.height),
                        "sample": markdown_preview(problems, problems.columns),
                    },
                )
            ],
        )


def validated_states(lake: LakeResource, day: str) -> pl.LazyFrame | None:
    name = table_name(STATES_INPUT)
    return lake.scan_day(name, day) if lake.has_day(name, day) else None


def enrich_day(lake: LakeResource, day: str, dims: RegistryDims, settings: pl.DataFrame) -> pl.LazyFrame:
    """One UTC day of validated state rows enriched, each home in its own time zone; the previous day (when
    validated) only supplies each entity's last row before midnight."""
    states = validated_states(lake, day)
    if states is None:
        raise dg.Failure(f"{table_name(STATES_INPUT)} has no partition {day}: materialise validation first")
    previous = validated_states(lake, neighbour_day(day, -1))
    homes = states.select("home").unique().collect()["home"].sort().to_list()
    if not homes:
        return enrich_states(states, dims, DEFAULT_TIME_ZONE)
    frames = []
    for home in homes:
        found = settings.filter(pl.col("home") == home)
        tz = (found["time_zone"].item() if found.height else None) or DEFAULT_TIME_ZONE
        latitude = found["latitude"].item() if found.height else None
        context = None if previous is None else previous.filter(pl.col("home") == home)
        # the usual lake holds one home: then every row is that home's, and filtering would copy them all
        rows = states if homes == [home] else states.filter(pl.col("home") == home)
        frames.append(enrich_states(rows, dims, tz, latitude=latitude, context=context))
    # a home's local time column carries its zone; several homes share the column in UTC
    return (
        frames[0]
        if len(frames) == 1
        else pl.concat([f.with_columns(pl.col("local_time").dt.convert_time_zone("UTC")) for f in frames])
    )


@dg.asset(
    key=ENRICHED_STATES,
    group_name=GROUP,
    kinds={"polars", "deltalake"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[STATES_INPUT, LAKE_REGISTRY, *DIMENSION_KEYS.values()],
    check_specs=[
        dg.AssetCheckSpec(
            ROWS_PRESERVED_CHECK,
            asset=ENRICHED_STATES,
            description="Every state row of the day comes out exactly once.",
        )
    ],
)
def enriched_states(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Validated state rows (``derived/validated_states``) with the registry as it was at each row's time
    (entity followed through renames, device, area, floor, labels, integration), HA local time, season,
    time since the entity's previous row, event frequency, peak usage hours, zone, and the area's latest
    temperature and humidity. Each UTC day replaced whole in the Delta table ``enriched_states``."""
    dims = load_dimensions(lake)
    settings = home_settings(lake.scan_raw_days("registry/core_config"))
    written, input_rows, output_rows, lost = [], 0, 0, []
    for day in context.partition_keys:
        # every step after the scan blocks (as-of joins, per-entity windows): the in-memory engine does the
        # same work as the streaming one with less CPU and a lower peak
        enriched = enrich_day(lake, day, dims, settings).collect(engine="in-memory")
        path = lake.replace_partition(table_name(ENRICHED_STATES), day, enriched)
        rows_in = validated_states(lake, day).select(pl.len()).collect().item()
        rows_out = lake.scan_day(table_name(ENRICHED_STATES), day).select(pl.len()).collect().item()
        written.append(path)
        input_rows, output_rows = input_rows + rows_in, output_rows + rows_out
        if rows_in != rows_out:
            lost.append(day)
        context.log.info("enriched %s: %d rows", day, rows_out)
    sample = enriched.head(5000)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(output_rows),
            "days": dg.MetadataValue.int(len(written)),
            "path": dg.MetadataValue.path(str(written[-1])),
            "preview": markdown_preview(
                sample,
                [
                    "entity_id",
                    "last_updated",
                    "state",
                    "device_name",
                    "area_name",
                    "floor_name",
                    "integration",
                    "local_time",
                    "season",
                    "zone_name",
                    "area_temperature_c",
                ],
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ROWS_PRESERVED_CHECK,
                passed=not lost,
                metadata={
                    "input_rows": dg.MetadataValue.int(input_rows),
                    "output_rows": dg.MetadataValue.int(output_rows),
                    "days_with_a_difference": dg.MetadataValue.json(lost),
                },
            )
        ],
    )


@dg.asset(
    key=PEAK_HOURS,
    group_name=GROUP,
    kinds={"polars", "deltalake"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ENRICHED_STATES],
)
def peak_hours_by_day(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Rows and usage per local hour, per home and per area, with each day's peak usage hours flagged
    (usage: state value changes of entities a person operates, see ``logic.USAGE_DOMAINS``)."""
    frames = []
    for day in context.partition_keys:
        source = lake.scan_day(table_name(ENRICHED_STATES), day)
        if source is None:
            raise dg.Failure(f"{table_name(ENRICHED_STATES)} was never written: materialise it first")
        table = peak_hours(source).collect()
        path = lake.replace_partition(table_name(PEAK_HOURS), day, table)
        frames.append(table)
    table = pl.concat(frames)
    return dg.MaterializeResult(
        metadata=table_metadata(
            table.filter("is_peak"), path, ["home", "scope", "area_name", "local_date", "local_hour", "usage_events"]
        )
    )
