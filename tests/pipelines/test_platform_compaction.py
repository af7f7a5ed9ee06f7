"""Compaction of the raw lake on a real lake: same rows before and after, one file per (table, date, collector),
idempotent, and never a duplicated or missing row for a reader that skips superseded files."""

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from ha_ingestor_lake.files import live_files, part_files, part_name, table_locations
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.platform.assets import lake_compaction
from ha_ingestor_pipelines.defs.platform.compaction import compact_date

TABLES = ("events", "states", "registry", "quarantine")
SORT_KEYS = {
    "events": ["event_id"],
    "states": ["entity_id", "last_updated"],
    "registry": ["kind", "snapshot_seq", "item_id"],
    "quarantine": ["received_at", "raw"],
}


@pytest.fixture
def lake(fixture_lake, tmp_path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(fixture_lake, root)
    return root


def day_of(lake: Path) -> str:
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    return date


def contents(lake: Path, date: str) -> dict[str, pl.DataFrame]:
    """Every location's rows as a reader following the lake contract sees them, in a canonical order."""
    frames = {}
    for location in table_locations(lake, TABLES):
        files = live_files(lake / location / f"date={date}")
        if files:
            frame = pl.read_parquet(files)
            frames[location] = frame.sort(SORT_KEYS[location.split("/")[0]])
    return frames


def materialize(lake: Path, date: str, quiet_minutes: float) -> dg.MaterializeResult:
    result = dg.materialize(
        [lake_compaction],
        partition_key=date,
        resources={"lake": LakeResource(root=str(lake))},
        run_config={"ops": {"platform__lake_compaction": {"config": {"quiet_minutes": quiet_minutes}}}},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata


def test_compaction_keeps_every_row_and_reruns_change_nothing(lake):
    date = day_of(lake)
    before = contents(lake, date)
    files_before = {loc: len(part_files(lake / loc / f"date={date}")) for loc in before}
    assert files_before["events"] > 1 and files_before["states"] > 1

    metadata = materialize(lake, date, quiet_minutes=0)

    after = contents(lake, date)
    assert after.keys() == before.keys()
    for location, frame in before.items():
        assert after[location].equals(frame), location
        assert len(part_files(lake / location / f"date={date}")) == 1
    assert metadata["files_before"].value == sum(files_before.values())
    assert metadata["files_after"].value == len(before)
    assert metadata["rows_rewritten"].value == sum(f.height for loc, f in before.items() if files_before[loc] > 1)
    assert LakeResource(root=str(lake)).scan_raw("events", date).collect().height == before["events"].height

    listing = {p: p.stat().st_mtime_ns for p in lake.rglob("*.parquet")}
    metadata = materialize(lake, date, quiet_minutes=0)
    assert {p: p.stat().st_mtime_ns for p in lake.rglob("*.parquet")} == listing
    assert metadata["rows_rewritten"].value == 0
    assert metadata["files_before"].value == metadata["files_after"].value == len(before)


def test_the_merged_name_carries_the_union_of_the_seq_ranges(lake):
    date = day_of(lake)
    directory = lake / "states" / f"date={date}"
    inputs = part_files(directory)
    compact_date(lake, date, quiet_seconds=0)
    [merged] = part_files(directory)
    assert merged.path.name == part_name(inputs[0].first_seq, inputs[-1].last_seq, inputs[0].collector_id)


def test_a_day_still_being_written_is_left_alone(lake):
    date = day_of(lake)
    listing = sorted(lake.rglob("*.parquet"))
    metadata = materialize(lake, date, quiet_minutes=60)  # the fixture's files are minutes old
    assert sorted(lake.rglob("*.parquet")) == listing
    assert "quiet period" in str(metadata["skipped"].value)


def test_a_commit_in_flight_blocks_its_directory(lake):
    date = day_of(lake)
    directory = lake / "states" / f"date={date}"
    inputs = part_files(directory)
    (
        directory / (part_name(inputs[-1].last_seq + 1, inputs[-1].last_seq + 9, inputs[-1].collector_id) + ".tmp")
    ).write_bytes(b"")
    report = compact_date(lake, date, quiet_seconds=0)
    assert part_files(directory) == inputs
    assert report.skipped["states"] == "a collector commit is in flight"
    assert len(part_files(lake / "events" / f"date={date}")) == 1


def test_each_collector_keeps_its_own_file(lake):
    date = day_of(lake)
    directory = lake / "events" / f"date={date}"
    [collector_id] = {part.collector_id for part in part_files(directory)}
    for part in part_files(directory):
        shutil.copy(part.path, directory / part_name(part.first_seq, part.last_seq, "0ther1d"))
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in live_files(directory))
    compact_date(lake, date, quiet_seconds=0)
    assert sorted(p.collector_id for p in part_files(directory)) == sorted(["0ther1d", collector_id])
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in live_files(directory)) == rows


def test_a_crash_between_rename_and_unlink_leaves_a_correct_lake(lake, tmp_path):
    """The inputs outlive the merged file: readers skip them as superseded, the next run deletes them."""
    date = day_of(lake)
    before = contents(lake, date)
    saved = tmp_path / "saved"
    shutil.copytree(lake / "states" / f"date={date}", saved)
    compact_date(lake, date, quiet_seconds=0)
    for path in saved.iterdir():
        shutil.copy(path, lake / "states" / f"date={date}" / path.name)
    assert len(part_files(lake / "states" / f"date={date}")) == len(list(saved.iterdir())) + 1
    assert contents(lake, date)["states"].equals(before["states"])

    report = compact_date(lake, date, quiet_seconds=0)
    assert report.superseded_removed == len(list(saved.iterdir()))
    assert len(part_files(lake / "states" / f"date={date}")) == 1
    assert contents(lake, date)["states"].equals(before["states"])


def split_into_small_files(directory: Path, pieces: int) -> int:
    """Turn each committed file into ``pieces`` files with consecutive seq ranges, as a busy day would look."""
    rows = 0
    seq = 0
    for part in part_files(directory):
        table = pq.read_table(part.path)
        rows += table.num_rows
        step = -(-table.num_rows // pieces)
        for offset in range(0, table.num_rows, step):
            seq += 1
            pq.write_table(table.slice(offset, step), directory / part_name(seq, seq, part.collector_id))
        part.path.unlink()
    old = time.time() - 7200
    for path in directory.iterdir():
        os.utime(path, (old, old))
    return rows


def test_a_reader_sees_every_row_once_after_each_step_of_the_compaction(lake, monkeypatch):
    """Count the rows a contract-abiding reader sees after every rename and unlink the compaction makes."""
    date = day_of(lake)
    directory = lake / "states" / f"date={date}"
    expected = split_into_small_files(directory, pieces=5)
    seen: list[int] = []

    def read() -> None:
        seen.append(sum(pq.ParquetFile(p).metadata.num_rows for p in live_files(directory)))

    real_replace, real_unlink = os.replace, Path.unlink

    def replace(source, target):
        real_replace(source, target)
        read()

    def unlink(path, missing_ok=False):
        real_unlink(path, missing_ok=missing_ok)
        read()

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    report = compact_date(lake, date, quiet_seconds=3600, tables=("states",))
    monkeypatch.undo()

    assert report.merged, report.skipped
    assert len(part_files(directory)) == 1
    assert len(seen) == 1 + report.files_before  # the rename, then each unlink
    assert set(seen) == {expected}


def test_a_dead_compactions_temp_file_is_removed_once_stale(lake):
    date = day_of(lake)
    directory = lake / "events" / f"date={date}"
    stale, fresh = directory / ".compact-dead.parquet.tmp", directory / ".compact-running.parquet.tmp"
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7 * 3600,) * 2)
    compact_date(lake, date, quiet_seconds=0)
    assert not stale.exists() and fresh.exists()
