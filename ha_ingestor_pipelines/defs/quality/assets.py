"""Validated events and states, the validation quarantine, and the daily quality report."""

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ha_ingestor_lake.durable import write_bytes_atomically
from ha_ingestor_lake.tables import AUTOMATION_GRAPH_PICTURE, QUALITY_REPORTS_DIR

from ..common.asset_keys import (
    AUTOMATION_NODES,
    LAKE_COLLECTOR_SESSIONS,
    LAKE_EVENTS,
    LAKE_QUARANTINE,
    LAKE_REGISTRY,
    LAKE_STATES,
    QUALITY_REPORT,
    VALIDATED_EVENTS,
    VALIDATED_STATES,
    VALIDATION_QUARANTINE,
    table_name,
)
from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .report_figures import ReportInputs, ReportParameters, quality_figures, session_days, sessions_of_day
from .report_html import render_html
from .rules import DUPLICATE_RULE
from .validation import EVENTS, QUARANTINE_SCHEMA, STATES, split_with_fallback

GROUP = "quality"


class ValidationConfig(dg.Config):
    late_after_minutes: float = 10.0


def _preview(frame: pl.DataFrame, columns: list[str]) -> dg.MetadataValue:
    head = frame.select(columns).head(5).with_columns(pl.all().cast(pl.String))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join((v or "").replace("|", "\\|")[:60] for v in row) + " |" for row in head.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


def _rule_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    if quarantine.is_empty():
        return {}
    exploded = quarantine.select(pl.col("failed_rules").explode()).group_by("failed_rules").agg(pl.len())
    return dict(sorted(exploded.iter_rows(), key=lambda kv: -kv[1]))


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            VALIDATED_EVENTS,
            deps=[LAKE_EVENTS],
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            description="One UTC day of the lake's events that pass every event rule, one row per "
            "event_id, in time_fired order, flagged is_late / is_out_of_order.",
        ),
        dg.AssetSpec(
            VALIDATED_STATES,
            deps=[LAKE_STATES],
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            description="One UTC day of the lake's states that pass every state rule, one row per "
            "(home, entity_id, last_updated), in time order, with typed values (value_num, "
            "value_bool, value_str, value_ts), normalised units and lateness flags.",
        ),
        dg.AssetSpec(
            VALIDATION_QUARANTINE,
            deps=[LAKE_EVENTS, LAKE_STATES],
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            description="The day's event and state rows that failed a rule or duplicated a kept row, "
            "with the rules they failed and the original row as JSON.",
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    can_subset=False,
)
def validation(
    context: dg.AssetExecutionContext, config: ValidationConfig, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """Split the day's raw events and states into validated rows and quarantined rows: every input row
    lands in exactly one of them (validated + quarantined == input, per table)."""
    date = context.partition_key
    late_after = dt.timedelta(minutes=config.late_after_minutes)
    quarantined: list[pl.DataFrame] = []
    for key, spec in ((VALIDATED_EVENTS, EVENTS), (VALIDATED_STATES, STATES)):
        raw = lake.scan_raw(spec.table, date)
        validated, quarantine = split_with_fallback(raw, spec, late_after)
        input_rows = raw.select(pl.len()).collect().item()
        if validated.height + quarantine.height != input_rows:
            raise dg.Failure(
                f"{spec.table} {date}: {input_rows} input rows but {validated.height} validated and "
                f"{quarantine.height} quarantined"
            )
        path = lake.replace_partition(table_name(key), date, validated)
        preview = (
            ["entity_id", "last_updated", "state", "value_num", "value_bool", "value_ts", "unit_normalized"]
            if spec is STATES
            else ["event_type", "time_fired", "entity_id", "is_late"]
        )
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": validated.height,
                "input_rows": input_rows,
                "quarantined_rows": quarantine.height,
                "duplicates_removed": quarantine.filter(
                    pl.col("failed_rules").list.contains(DUPLICATE_RULE.name)
                ).height,
                "failing_rows_per_rule": dg.MetadataValue.json(_rule_counts(quarantine)),
                "late_rows": int(validated["is_late"].sum()),
                "out_of_order_rows": int(validated["is_out_of_order"].sum()),
                "path": dg.MetadataValue.path(path),
                "preview": _preview(validated, preview),
            },
        )
        quarantined.append(quarantine)
        del validated  # the day's events are released before its states are read

    quarantine = pl.concat(quarantined).match_to_schema(QUARANTINE_SCHEMA)
    path = lake.replace_partition(table_name(VALIDATION_QUARANTINE), date, quarantine)
    yield dg.MaterializeResult(
        asset_key=VALIDATION_QUARANTINE,
        metadata={
            "dagster/row_count": quarantine.height,
            "rows_per_table": dg.MetadataValue.json(dict(quarantine.group_by("table").agg(pl.len()).iter_rows())),
            "failing_rows_per_rule": dg.MetadataValue.json(_rule_counts(quarantine)),
            "path": dg.MetadataValue.path(path),
            "preview": _preview(
                quarantine.with_columns(pl.col("failed_rules").list.join(", ")), ["table", "row_key", "failed_rules"]
            ),
        },
    )


class QualityReportConfig(dg.Config):
    silent_after_hours: float = 6.0
    gap_minutes: float = 6.0
    lookback_days: int = 7


def report_dir(lake: LakeResource, date: str) -> Path:
    return lake.path / QUALITY_REPORTS_DIR / f"date={date}"


def _scan_derived_day(lake: LakeResource, key: dg.AssetKey, date: str) -> pl.LazyFrame:
    frame = lake.scan_day(table_name(key), date)
    if frame is None or not lake.has_day(table_name(key), date):
        raise dg.Failure(f"{table_name(key)} has no partition {date}: materialise the validation assets first")
    return frame


def report_inputs(lake: LakeResource, date: str, lookback_days: int) -> ReportInputs:
    day = dt.date.fromisoformat(date)
    earlier_days = [(day - dt.timedelta(days=n)).isoformat() for n in range(lookback_days, 0, -1)]
    history_columns = ["home", "entity_id", "last_updated", "state"]
    none_earlier = lake.scan_raw("states", date).select(history_columns).clear()
    earlier = [lake.scan_raw("states", d).select(history_columns) for d in earlier_days]
    earlier_states = pl.concat([none_earlier, *earlier]).filter(
        pl.col("entity_id").is_not_null() & pl.col("last_updated").is_not_null()
    )
    collector_sessions = lake.scan_collector_sessions()
    day_receipts = pl.concat(
        [
            lake.scan_raw_by_collector(table, [date]).select(
                pl.lit(table).alias("table"), "collector_id", "received_at"
            )
            for table in ("events", "states", "quarantine")
        ]
    )
    days = session_days(sessions_of_day(collector_sessions, day_receipts, date).collect(), date)

    def receipts(table: str, rows: pl.Expr | None = None) -> pl.LazyFrame:
        frame = lake.scan_raw_by_collector(table, days[table])
        return (frame if rows is None else frame.filter(rows)).select("collector_id", "received_at")

    return ReportInputs(
        date=date,
        raw_events=lake.scan_raw("events", date),
        raw_states=lake.scan_raw("states", date),
        collector_quarantine=lake.scan_raw("quarantine", date),
        core_config_snapshots=lake.scan_raw("registry/core_config", date),
        validated_events=_scan_derived_day(lake, VALIDATED_EVENTS, date),
        validated_states=_scan_derived_day(lake, VALIDATED_STATES, date),
        validation_quarantine=_scan_derived_day(lake, VALIDATION_QUARANTINE, date),
        earlier_states=earlier_states,
        collector_sessions=collector_sessions,
        day_receipts=day_receipts,
        session_events=receipts("events"),
        session_quarantine=receipts("quarantine"),
        session_backfill=receipts("states", pl.col("source") == "backfill"),
    )


def automation_graph_picture(lake: LakeResource) -> tuple[dict[str, Any], bytes | None]:
    """The automation graph's PNG as the graphs asset last drew it: (what the JSON says about it, its bytes or
    None when it was not drawn yet)."""
    path = lake.path / AUTOMATION_GRAPH_PICTURE
    try:
        picture = path.read_bytes()
    except FileNotFoundError:
        return {"png": str(AUTOMATION_GRAPH_PICTURE), "exists": False, "drawn_at": None}, None
    drawn_at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()
    return {"png": str(AUTOMATION_GRAPH_PICTURE), "exists": True, "drawn_at": drawn_at}, picture


@dg.asset(
    key=QUALITY_REPORT,
    deps=[
        VALIDATED_EVENTS,
        VALIDATED_STATES,
        VALIDATION_QUARANTINE,
        LAKE_EVENTS,
        LAKE_STATES,
        LAKE_QUARANTINE,
        LAKE_REGISTRY,
        LAKE_COLLECTOR_SESSIONS,
        AUTOMATION_NODES,
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    group_name=GROUP,
    kinds={"html", "json"},
)
def quality_report(
    context: dg.AssetExecutionContext, config: QualityReportConfig, lake: LakeResource
) -> dg.MaterializeResult:
    """The day's data quality report, ``<lake>/reports/quality/date=D/report.html`` and ``report.json``: events
    per type, completeness (also against the collector's own session records), validation pass rate per
    rule, duplicates, late data, silent entities and unavailable time, from the raw lake and the validation
    assets; and the automation graph's picture (``<lake>/reports/automation_graph.png``),
    embedded in the page."""
    date = context.partition_key
    parameters = ReportParameters(
        silent_after_hours=config.silent_after_hours, gap_minutes=config.gap_minutes, lookback_days=config.lookback_days
    )
    figures = quality_figures(report_inputs(lake, date, config.lookback_days), parameters)
    figures["automation_graph"], picture = automation_graph_picture(lake)
    directory = report_dir(lake, date)
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(directory / "report.json", json.dumps(figures, indent=1, ensure_ascii=False).encode())
    write_bytes_atomically(directory / "report.html", render_html(figures, picture).encode())
    states = figures["validation"]["states"]
    return dg.MaterializeResult(
        metadata={
            "html": dg.MetadataValue.path(str(directory / "report.html")),
            "json": dg.MetadataValue.path(str(directory / "report.json")),
            "events": figures["events"]["total"],
            "state_rows_input": states["input_rows"],
            "state_pass_rate": states["pass_rate"],
            "duplicates_removed": figures["duplicates_removed"]["states"] + figures["duplicates_removed"]["events"],
            "gaps": len(figures["completeness"]["gaps"]),
            "collector_sessions": len(figures["completeness"]["collector"]["sessions"]),
            "events_received_not_in_lake": figures["completeness"]["collector"]["totals"]["events_received"]
            - figures["completeness"]["collector"]["totals"]["events_in_lake"],
            "coverage_share": figures["completeness"]["coverage_share"],
            "silent_entities": len(figures["silence"]["silent"]),
            "entities_with_unavailable_time": len(figures["unavailable"]),
        }
    )
