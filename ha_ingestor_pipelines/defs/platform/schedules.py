"""The Delta tables' upkeep runs on a clock: a day is compacted once the collector has moved on from it."""

import datetime as dt

import dagster as dg

from .selections import table_maintenance


def _previous_day(context: dg.ScheduleEvaluationContext) -> str:
    return (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    target=table_maintenance,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compacts the Delta tables' files of the day before (optimize) and vacuums old versions' files.",
)
def table_maintenance_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = _previous_day(context)
    return dg.RunRequest(partition_key=day, run_key=f"table-maintenance:{day}")
