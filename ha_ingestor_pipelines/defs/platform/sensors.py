"""Run the pipelines for a day as soon as the collector commits new data for it."""

import dagster as dg

from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .lake_changes import LakeCursor, committed_marks, has_new_data, run_key
from .selections import on_new_lake_data

SENSOR_NAME = "lake_commits_sensor"
MAX_RUNS_PER_TICK = 25
FIRST_DAY = daily_partitions.start.strftime("%Y-%m-%d")

_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _days_with_unfinished_runs(context: dg.SensorEvaluationContext) -> set[str]:
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(statuses=_UNFINISHED, tags={"dagster/sensor_name": SENSOR_NAME})
    )
    return {run.tags["dagster/partition"] for run in runs if "dagster/partition" in run.tags}


@dg.sensor(
    name=SENSOR_NAME,
    target=on_new_lake_data,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing zone (events, states, registry snapshots) for newly committed part files "
    "and runs the day's table load and derived tables; one run at a time per day, newest days first.",
)
def lake_commits_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    cursor = LakeCursor.parse(context.cursor)
    current = committed_marks(lake.path)
    changed = sorted(
        (date for date, marks in current.items() if has_new_data(cursor.marks.get(date), marks)), reverse=True
    )
    if not changed:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new commits in the lake"))

    busy = _days_with_unfinished_runs(context)
    requests, waiting, outside = [], [], []
    for date in changed:
        if not daily_partitions.has_partition_key(date):
            outside.append(date)
            if date < FIRST_DAY:  # never runnable: remember it so it is not reported again
                cursor.marks[date] = current[date]
        elif date in busy:
            waiting.append(date)  # picked up on a later tick, once that day's run has finished
        elif len(requests) < MAX_RUNS_PER_TICK:
            requests.append(
                dg.RunRequest(
                    partition_key=date,
                    run_key=run_key(date, current[date]),
                    tags={"ha_ingestor/trigger": "lake_commit"},
                )
            )
            cursor.marks[date] = current[date]
    context.log.info(
        "%d days with new data: %d runs requested, %d waiting for a running run, %d outside the partitions",
        len(changed),
        len(requests),
        len(waiting),
        len(outside),
    )
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())
    reason = (
        f"new data for {', '.join(waiting)} waits for that day's unfinished run"
        if waiting
        else f"new data only for days outside the partitions: {', '.join(outside)}"
    )
    return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor.dump())
