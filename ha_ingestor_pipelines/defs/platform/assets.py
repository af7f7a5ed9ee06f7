"""Upkeep of the Delta tables: a finished day's small files compacted, files of old versions removed."""

import dagster as dg

from ..common.asset_keys import RAW_TABLE_KEYS, TABLE_MAINTENANCE, table_name
from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .selections import PLATFORM_GROUP


@dg.asset(
    key=TABLE_MAINTENANCE,
    group_name=PLATFORM_GROUP,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=31),
    deps=list(RAW_TABLE_KEYS.values()),
    kinds={"deltalake"},
)
def table_maintenance(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Every Delta table's day compacted with Delta's ``optimize`` (one new version; readers see each row once
    before, during and after), then ``vacuum`` deletes the files no version younger than the lake's
    ``vacuum_retention_hours`` needs. Rows never change; a rerun finds nothing left to compact."""
    store = lake.store
    names = [table_name(key) for key in RAW_TABLE_KEYS.values()] + _derived_tables(lake)
    compacted: dict[str, dict[str, int]] = {}
    for name in names:
        for day in context.partition_keys:
            metrics = store.optimize(name, day)
            if metrics.get("numFilesRemoved"):
                compacted[f"{name} {day}"] = {
                    "files_before": metrics["numFilesRemoved"],
                    "files_after": metrics["numFilesAdded"],
                }
    removed = {name: len(store.vacuum(name, lake.vacuum_retention_hours)) for name in names}
    context.log.info("compacted %d table days; vacuum removed %d files", len(compacted), sum(removed.values()))
    return dg.MaterializeResult(
        metadata={
            "tables": len(names),
            "days_compacted": len(compacted),
            "compacted": dg.MetadataValue.json(compacted),
            "files_vacuumed": sum(removed.values()),
            "vacuum_retention_hours": lake.vacuum_retention_hours,
        }
    )


def _derived_tables(lake: LakeResource) -> list[str]:
    raw = {table_name(key) for key in RAW_TABLE_KEYS.values()}
    return sorted(name for name in lake.store.names() if name not in raw)
