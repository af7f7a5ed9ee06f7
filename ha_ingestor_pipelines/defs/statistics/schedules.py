"""Pull the statistics every hour, after HA has compiled the hour that just ended."""

import datetime as dt
import os

import dagster as dg

from ..platform.selections import statistics


# HA compiles an hour's long-term statistics about ten seconds after it ends; twenty minutes leaves room.
@dg.schedule(
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    target=statistics,
    default_status=(dg.DefaultScheduleStatus.RUNNING if os.environ.get("HA_URL") else dg.DefaultScheduleStatus.STOPPED),
    description="Today's hourly and 5-minute statistics every hour, and yesterday's final ones just after "
    "midnight UTC. Runs by default when HA_URL is set (the embedded demo has no statistics).",
)
def statistics_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    moment = context.scheduled_execution_time.astimezone(dt.UTC)
    days = [moment - dt.timedelta(days=1), moment] if moment.hour == 0 else [moment]
    return [
        dg.RunRequest(partition_key=day.strftime("%Y-%m-%d"), run_key=f"statistics:{day:%Y-%m-%d}:{moment:%H}")
        for day in days
    ]
