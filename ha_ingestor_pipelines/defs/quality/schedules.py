"""The daily quality report: shortly after each UTC day ends, revalidate it and write its report."""

import datetime as dt

import dagster as dg

from ..common.asset_keys import QUALITY_REPORT, VALIDATED_EVENTS, VALIDATED_STATES, VALIDATION_QUARANTINE


@dg.schedule(
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(VALIDATED_EVENTS, VALIDATED_STATES, VALIDATION_QUARANTINE, QUALITY_REPORT),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 00:30 UTC: validate the day that just ended again (late rows included) and write its quality "
    "report.",
)
def daily_quality_report(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    return dg.RunRequest(run_key=f"quality-report-{day}", partition_key=day)
