"""Blocking data-contract checks: one asset check per entry of the schema registry, plus row accounting."""

from typing import Any

import dagster as dg
import pandera.polars as pa
import polars as pl

from ..common.asset_keys import VALIDATED_EVENTS, VALIDATED_STATES, VALIDATION_QUARANTINE, table_name
from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .schemas import SCHEMA_REGISTRY, SchemaEntry

SAMPLE_FAILURES = 10


def load_checked_table(lake: LakeResource, entry: SchemaEntry, date: str | None) -> pl.DataFrame | None:
    """The rows ``entry`` checks: one day of a raw or derived table, or every registry snapshot.

    None when a derived table has no such partition.
    """
    if entry.derived:
        frame = lake.scan_day(entry.table, date or "")
        return frame.collect() if frame is not None and lake.has_day(entry.table, date or "") else None
    if entry.table == "registry":
        return lake.scan_raw_days("registry").collect()
    return lake.scan_raw(entry.table, date or "").collect()


def _dtype_mismatches(schema_failures: pl.DataFrame) -> dict[str, dict[str, str]]:
    dtypes = schema_failures.filter(pl.col("check").str.starts_with("dtype("))
    return {
        column: {"expected": check.removeprefix("dtype('").removesuffix("')"), "actual": actual}
        for column, check, actual in dtypes.select("column", "check", "failure_case").iter_rows()
    }


def _samples_md(row_failures: pl.DataFrame) -> str:
    lines = ["| rule | row | failure case |", "|---|---|---|"]
    for check, index, case in row_failures.select("check", "index", "failure_case").head(SAMPLE_FAILURES).iter_rows():
        lines.append(f"| {check} | {index} | `{(case or '')[:160].replace('|', '/')}` |")
    return "\n".join(lines)


def contract_result(entry: SchemaEntry, frame: pl.DataFrame) -> dg.AssetCheckResult:
    """Validate ``frame`` against ``entry.model``; metadata: failing rows per rule, samples, dtype mismatches."""
    checks = [check.name for check in entry.model.to_schema().checks]
    try:
        entry.model.validate(frame, lazy=True)
        failures = None
    except pa.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    metadata: dict[str, Any] = {
        "rows_checked": frame.height,
        "rules_checked": len(checks),
        "model": entry.model.__name__,
    }
    if failures is None:
        return dg.AssetCheckResult(passed=True, metadata={**metadata, "failing_rows": 0})
    failures = failures.with_columns(pl.col("failure_case").cast(pl.String))
    row_failures = failures.filter(pl.col("index").is_not_null())
    schema_failures = failures.filter(pl.col("index").is_null())
    failing_rows = row_failures["index"].n_unique()
    per_rule = dict(row_failures.group_by("check").agg(pl.col("index").n_unique()).sort("check").iter_rows())
    share = failing_rows / frame.height if frame.height else 0.0
    passed = schema_failures.is_empty() and share <= entry.max_failing_share
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if passed
        else f"{failing_rows} of {frame.height} rows fail the {entry.model.__name__} "
        f"contract" + ("; schema errors" if not schema_failures.is_empty() else ""),
        metadata={
            **metadata,
            "failing_rows": failing_rows,
            "failing_share": share,
            "max_failing_share": entry.max_failing_share,
            "failing_rows_per_rule": dg.MetadataValue.json(per_rule),
            "sample_failures": dg.MetadataValue.md(_samples_md(row_failures)),
            "dtype_mismatches": dg.MetadataValue.json(_dtype_mismatches(schema_failures)),
            "schema_errors": dg.MetadataValue.json(
                [
                    {"column": c, "check": k, "case": v}
                    for c, k, v in schema_failures.select("column", "check", "failure_case").iter_rows()
                ]
            ),
        },
    )


def build_contract_check(entry: SchemaEntry) -> dg.AssetChecksDefinition:
    """An asset check that validates ``entry.table`` against ``entry.model`` (the pudl pattern)."""

    @dg.asset_check(
        asset=dg.AssetKey(list(entry.asset_key)),
        name=entry.check_name,
        blocking=entry.blocking,
        partitions_def=daily_partitions if entry.partitioned else None,
        description=f"{entry.model.__doc__} Fails when more than {entry.max_failing_share:.0%} of the rows of "
        f"{'derived/' if entry.derived else 'the lake table '}{entry.table} break a rule.",
    )
    def _contract(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        date = context.partition_key if entry.partitioned else None
        frame = load_checked_table(lake, entry, date)
        if frame is None:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"derived/{entry.table} has no partition {date}",
            )
        return contract_result(entry, frame)

    return _contract


contract_checks = [build_contract_check(entry) for entry in SCHEMA_REGISTRY]


# No additional_deps on the validated tables: a failing contract check on them must not stop the accounting.
@dg.asset_check(
    asset=VALIDATION_QUARANTINE,
    blocking=True,
    partitions_def=daily_partitions,
    description="Nothing silently dropped: per table, validated rows + quarantined rows == the day's raw rows.",
)
def rows_accounted_for(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    date = context.partition_key
    quarantine = lake.scan_day(table_name(VALIDATION_QUARANTINE), date)
    quarantined = (
        dict(quarantine.group_by("table").agg(pl.len()).collect().iter_rows()) if quarantine is not None else {}
    )
    accounts: dict[str, dict[str, int | None]] = {}
    for table, key in (("events", VALIDATED_EVENTS), ("states", VALIDATED_STATES)):
        validated = lake.scan_day(table_name(key), date) if lake.has_day(table_name(key), date) else None
        accounts[table] = {
            "input": lake.scan_raw(table, date).select(pl.len()).collect().item(),
            "validated": validated.select(pl.len()).collect().item() if validated is not None else None,
            "quarantined": quarantined.get(table, 0),
        }
    passed = all(
        a["validated"] is not None and a["validated"] + a["quarantined"] == a["input"] for a in accounts.values()
    )
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata={"rows": dg.MetadataValue.json(accounts)}
    )
