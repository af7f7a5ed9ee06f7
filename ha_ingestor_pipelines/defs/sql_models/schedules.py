"""Rebuild every SQL model, run their assertions and publish the readers' snapshot, every hour."""

import dagster as dg

sql_models_job = dg.define_asset_job(
    name="sql_models",
    selection=dg.AssetSelection.groups("sql_models"),
    description="All SQL models in dependency order, their assertion checks, then the read-only snapshot.",
)

sql_models_hourly = dg.ScheduleDefinition(
    name="sql_models_hourly",
    job=sql_models_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
