"""The landing zone the collector writes (external assets), and the raw Delta tables loaded from it."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from ha_ingestor_lake.schema import SCHEMAS, table_schema

from ..common.asset_keys import LANDING_KEYS, RAW_TABLE_KEYS
from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .load import RAW_TABLES, LoadedDay, load_landing_day, prune_landing

LANDING_FILES_CHECK = "landing_files_loaded"

LAYOUTS = {
    "events": "events/date=YYYY-MM-DD/part-*.parquet",
    "states": "states/date=YYYY-MM-DD/part-*.parquet",
    "registry": "registry/<kind>/date=YYYY-MM-DD/part-*.parquet",
    "quarantine": "quarantine/date=YYYY-MM-DD/part-*.parquet",
    "collector_sessions": "collector_sessions/date=YYYY-MM-DD/session-<session_id>-<collector_id>.parquet",
}
DESCRIPTIONS = {
    "events": "Every Home Assistant event, one row per event_id.",
    "states": "Every state change (live, backfilled from HA's history, or from snapshots), one row per "
    "(home, entity_id, last_updated).",
    "registry": "Registry and configuration snapshots of every kind (areas, floors, labels, devices, entities, "
    "config entries, automations, scripts, core config, services), one row per (home, kind, snapshot_seq, item_id).",
    "quarantine": "Input the collector could not turn into rows, with the reason and the raw text; and landing "
    "files the loader set aside whole (stage `landing_file`, the file's path in `raw`).",
    "collector_sessions": "The collector's own record of each connection to Home Assistant (the gap it closed, "
    "its backfill, its counters), one row per session in its newest version.",
}


def _column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


landing = [
    dg.AssetSpec(
        key=LANDING_KEYS[table],
        description=f"The collector's landing files for `lake/{table}`: plain Parquet, committed exactly once.",
        group_name="landing",
        kinds={"parquet"},
        metadata={"layout": LAYOUTS[table], "dagster/column_schema": _column_schema(SCHEMAS[table])},
    )
    for table in RAW_TABLES
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_TABLE_KEYS[table],
            deps=[LANDING_KEYS[table]] + ([] if table != "quarantine" else list(LANDING_KEYS.values())),
            description=DESCRIPTIONS[table] + f" Delta table `<tables>/{table}`, partitioned by `date`.",
            group_name="lake",
            kinds={"deltalake", "polars"},
            metadata={"dagster/column_schema": _column_schema(table_schema(table))},
        )
        for table in RAW_TABLES
    ],
    check_specs=[
        dg.AssetCheckSpec(
            LANDING_FILES_CHECK,
            asset=RAW_TABLE_KEYS[table],
            description="Every landing file of the day was loaded: none set aside for a wrong schema, an "
            "unreadable body or a name that is not a committed file's (those are in lake/quarantine).",
        )
        for table in RAW_TABLES
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=7),
    can_subset=False,
)
def lake_tables(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """Load each landed day into the raw Delta tables: every landing file read once, bad files set aside into
    quarantine, rows deduplicated on their identity, and the day replaced in one Delta transaction per table
    (a rerun gives the same rows)."""
    loads: dict[str, list[LoadedDay]] = {table: [] for table in RAW_TABLES}
    for date in context.partition_keys:
        day = load_landing_day(lake.path, lake.store, date)
        for load in day:
            loads[load.table].append(load)
            context.log.info(
                "%s %s: %d rows from %d files (%d duplicates dropped, %d files set aside)",
                load.table,
                date,
                load.rows,
                len(load.files),
                load.duplicates,
                len(load.set_aside),
            )
        _apply_retention(context, lake, date, day)
    for table in RAW_TABLES:
        set_aside = [item for load in loads[table] for item in load.set_aside]
        yield dg.MaterializeResult(
            asset_key=RAW_TABLE_KEYS[table],
            metadata={
                "dagster/row_count": sum(load.rows for load in loads[table]),
                "landing_files": sum(len(load.files) for load in loads[table]),
                "landed_rows": sum(load.landed_rows for load in loads[table]),
                "duplicates_dropped": sum(load.duplicates for load in loads[table]),
                "files_set_aside": len(set_aside),
                "delta_version": loads[table][-1].version,
                "path": dg.MetadataValue.path(lake.store.uri(table)),
            },
            check_results=[
                dg.AssetCheckResult(
                    asset_key=RAW_TABLE_KEYS[table],
                    check_name=LANDING_FILES_CHECK,
                    passed=not set_aside,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=None
                    if not set_aside
                    else f"{len(set_aside)} landing files set aside into lake/quarantine (stage landing_file)",
                    metadata={
                        "set_aside": dg.MetadataValue.json(
                            [
                                {"path": str(item.path.relative_to(lake.path)), "reason": item.reason}
                                for item in set_aside
                            ]
                        )
                    },
                )
            ],
        )


def _apply_retention(context: dg.AssetExecutionContext, lake: LakeResource, date: str, loads: list[LoadedDay]) -> None:
    if lake.landing_retention_days < 0:
        return
    age = dt.datetime.now(dt.UTC).date() - dt.date.fromisoformat(date)
    if age.days <= lake.landing_retention_days:
        return
    pruned = sum(prune_landing(lake.path, load.table, date, load.files) for load in loads)
    context.log.info(
        "%s: %d loaded landing files deleted (landing retention %d days)", date, pruned, lake.landing_retention_days
    )
