"""The lake's upkeep runs on a clock: a day is compacted once the collector has moved on from it."""

import datetime as dt

import dagster as dg

from .selections import lake_compaction


def _previous_day(context: dg.ScheduleEvaluationContext) -> str:
    return (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    target=lake_compaction,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compacts the raw lake's files of the day before, once the collector has moved on.",
)
def lake_compaction_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = _previous_day(context)
    return dg.RunRequest(partition_key=day, run_key=f"lake-compaction:{day}")
