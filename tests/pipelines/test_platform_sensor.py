"""The lake sensor against a real lake: one run per day with new commits, idempotent run keys, a cursor that
round-trips, no run for landing retention, one unfinished run per day at a time."""

import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ha_ingestor_lake.files import PartFile, part_files, part_name
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake.load import prune_landing
from ha_ingestor_pipelines.defs.platform.lake_changes import LakeCursor
from ha_ingestor_pipelines.defs.platform.sensors import SENSOR_NAME, lake_commits_sensor


@pytest.fixture
def lake(fixture_lake, tmp_path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(fixture_lake, root)
    return root


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def evaluate(instance: dg.DagsterInstance, lake: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"lake": LakeResource(root=str(lake))}
    )
    return lake_commits_sensor(context)


def commit(lake: Path, location: str, date: str, rows_from: Path | None = None) -> Path:
    """What a collector commit looks like: a new part file after the newest one, same collector."""
    directory = lake / location / f"date={date}"
    newest = part_files(directory)[-1]
    source = rows_from or newest.path
    target = directory / part_name(newest.last_seq + 1, newest.last_seq + 7, newest.collector_id)
    pq.write_table(pq.read_table(source).slice(0, 3), target)
    return target


def test_new_commits_request_one_run_per_day_with_an_idempotent_key(lake, instance):
    [date] = LakeResource(root=str(lake)).raw_dates("states")

    first = evaluate(instance, lake, None)
    [request] = first.run_requests
    assert request.partition_key == date
    assert request.run_key.startswith(f"lake:{date}:")
    assert first.cursor is not None

    again = evaluate(instance, lake, first.cursor)  # the cursor round trip: nothing new
    assert not again.run_requests
    assert "no new commits" in again.skip_reason.skip_message

    fresh_start = evaluate(instance, lake, None)  # a lost cursor asks again, under the same key
    assert [r.run_key for r in fresh_start.run_requests] == [request.run_key]

    commit(lake, "states", date)
    after_commit = evaluate(instance, lake, first.cursor)
    [next_request] = after_commit.run_requests
    assert next_request.partition_key == date
    assert next_request.run_key != request.run_key
    assert not evaluate(instance, lake, after_commit.cursor).run_requests


def test_the_cursor_carries_every_day_and_collector(lake, instance):
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    marks = LakeCursor.parse(evaluate(instance, lake, None).cursor).marks
    newest = max(p.last_seq for loc in ("events", "states") for p in part_files(lake / loc / f"date={date}"))
    [(collector_id, (last_seq, count))] = marks[date].items()
    assert last_seq == newest
    assert count >= 2  # events and states of the last commit both end at it
    assert LakeCursor.parse(LakeCursor(marks).dump()).marks == marks


def test_landing_retention_is_not_new_data(lake, instance):
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    cursor = evaluate(instance, lake, None).cursor
    loaded = [part.path for part in part_files(lake / "states" / f"date={date}")]
    assert prune_landing(lake, "states", date, loaded[:-1]) == len(loaded) - 1
    assert not evaluate(instance, lake, cursor).run_requests


def test_a_recovered_commit_with_the_same_last_seq_is_new_data(lake, instance):
    """A crash between two renames of one commit: recovery later renames the rest, ending at the same seq."""
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    events_dir = lake / "events" / f"date={date}"
    last_events = part_files(events_dir)[-1]
    held_back = last_events.path.with_name(last_events.path.name + ".held")
    last_events.path.rename(held_back)
    cursor = evaluate(instance, lake, None).cursor
    held_back.rename(last_events.path)
    assert [r.partition_key for r in evaluate(instance, lake, cursor).run_requests] == [date]


def test_a_day_with_an_unfinished_run_waits(lake, instance):
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    cursor = evaluate(instance, lake, None).cursor
    run = instance.create_run_for_job(
        dg.Definitions(jobs=[dg.define_asset_job("stand_in")]).resolve_job_def("stand_in"),
        tags={"dagster/sensor_name": SENSOR_NAME, "dagster/partition": date},
        status=dg.DagsterRunStatus.STARTED,
    )
    commit(lake, "events", date)

    waiting = evaluate(instance, lake, cursor)
    assert not waiting.run_requests
    assert date in waiting.skip_reason.skip_message
    assert LakeCursor.parse(waiting.cursor).marks == LakeCursor.parse(cursor).marks  # still to do

    instance.report_run_failed(run)
    assert [r.partition_key for r in evaluate(instance, lake, waiting.cursor).run_requests] == [date]


def test_days_before_the_partitions_are_remembered_not_requested(lake, instance):
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    cursor = evaluate(instance, lake, None).cursor
    old = lake / "states" / "date=2019-06-30"
    old.mkdir()
    source = part_files(lake / "states" / f"date={date}")[0]
    shutil.copy(source.path, old / source.path.name)

    result = evaluate(instance, lake, cursor)
    assert not result.run_requests
    assert "2019-06-30" in result.skip_reason.skip_message
    assert "no new commits" in evaluate(instance, lake, result.cursor).skip_reason.skip_message


def test_part_file_names_round_trip():
    part = PartFile.parse(Path("x") / part_name(12, 345, "66b95201"))
    assert (part.first_seq, part.last_seq, part.collector_id) == (12, 345, "66b95201")
    assert PartFile.parse(Path("part-1-2-abc.parquet.tmp")) is None
