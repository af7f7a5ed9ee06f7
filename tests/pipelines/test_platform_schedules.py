import datetime as dt

import dagster as dg

from ha_ingestor_pipelines.defs.platform.schedules import table_maintenance_schedule
from ha_ingestor_pipelines.defs.statistics.schedules import statistics_schedule


def at(text: str) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(scheduled_execution_time=dt.datetime.fromisoformat(text))


def test_table_maintenance_runs_for_the_day_before():
    request = table_maintenance_schedule(at("2026-03-02T02:00:00+00:00"))
    assert (request.partition_key, request.run_key) == ("2026-03-01", "table-maintenance:2026-03-01")


def test_statistics_run_for_today_every_hour_and_for_yesterday_after_midnight():
    assert [r.partition_key for r in statistics_schedule(at("2026-03-02T13:20:00+00:00"))] == ["2026-03-02"]
    requests = statistics_schedule(at("2026-03-02T00:20:00+00:00"))
    assert [r.partition_key for r in requests] == ["2026-03-01", "2026-03-02"]
    assert len({r.run_key for r in requests}) == 2
