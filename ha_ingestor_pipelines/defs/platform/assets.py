"""Upkeep of the raw lake: the collector's many small part files merged into one per day."""

import dagster as dg

from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .compaction import CompactionReport, compact_date


class CompactionConfig(dg.Config):
    quiet_minutes: float = 60.0
    """Leave a day's files alone until the newest is this old: the collector may still be writing that day."""


@dg.asset(
    key=["platform", "lake_compaction"],
    group_name="platform",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=31),
    deps=[["lake", "events"], ["lake", "states"], ["lake", "registry"], ["lake", "quarantine"]],
    kinds={"parquet"},
)
def lake_compaction(
    context: dg.AssetExecutionContext, config: CompactionConfig, lake: LakeResource
) -> dg.MaterializeResult:
    """The raw lake's days after compaction: per table and collector, one Parquet file holding the rows of all
    the small files the collector committed that day, named with the union of their spool seq ranges. Rows
    are neither added nor removed; a rerun finds one file per collector and does nothing."""
    reports: list[CompactionReport] = [
        compact_date(lake.path, date, quiet_seconds=config.quiet_minutes * 60) for date in context.partition_keys
    ]
    for report in reports:
        for what, why in report.skipped.items():
            context.log.info("%s %s not compacted: %s", report.date, what, why)
    return dg.MaterializeResult(
        metadata={
            "days": len(reports),
            "files_before": sum(r.files_before for r in reports),
            "files_after": sum(r.files_after for r in reports),
            "rows_rewritten": sum(r.rows for r in reports),
            "bytes_before": sum(r.bytes_before for r in reports),
            "bytes_after": sum(r.bytes_after for r in reports),
            "superseded_removed": sum(r.superseded_removed for r in reports),
            "skipped": dg.MetadataValue.json({f"{r.date} {k}": v for r in reports for k, v in r.skipped.items()}),
            "merged": dg.MetadataValue.json({f"{r.date} {k}": v for r in reports for k, v in r.merged.items()}),
        }
    )
