"""Merge the collector's small part files into one file per (table, date, collector).

Order of operations, chosen so that a reader applying the superseded-file rule
(``lake_files.live_files``) sees every row exactly once at every instant, and a crash at any
point leaves a lake that is correct for such readers:

1. write the merged rows to ``.compact-<uuid>.parquet.tmp`` in the same directory (no reader
   globs it: it does not end in ``.parquet``; the collector's recovery only deletes its own
   ``part-*-<id>.parquet.tmp``), fsync it, and check its row count against the inputs';
2. rename it to ``part-<min first_seq>-<max last_seq>-<collector>.parquet`` and fsync the
   directory: from this instant the inputs are superseded (their ranges lie inside the new one);
3. unlink the inputs and fsync the directory. A crash before this step leaves superseded files,
   which the next run deletes (and a crash before step 2 a temp file, deleted once it is 6 hours old).

A directory is left alone while a collector commit is in flight there (a ``part-*.tmp``: its
recovery may still rename a file whose range falls inside the union) or while files are younger
than the quiet period (the collector is still writing that day, or backfilling it).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ha_ingestor_lake.durable import fsync_path
from ha_ingestor_lake.files import (
    PartFile,
    date_directories,
    has_commit_in_flight,
    part_files,
    part_name,
    split_superseded,
    table_locations,
)
from ha_ingestor_lake.schema import SCHEMAS

RAW_TABLES = ("events", "states", "registry", "quarantine")
ROW_GROUP_ROWS = 128 * 1024
STALE_TEMP_SECONDS = 6 * 3600


@dataclass
class CompactionReport:
    date: str
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    superseded_removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)


def compact_date(
    lake_root: Path, date: str, *, quiet_seconds: float, now: float | None = None, tables: tuple[str, ...] = RAW_TABLES
) -> CompactionReport:
    """Compact every raw location's ``date=<date>`` directory; safe to rerun (one file per collector is a no-op)."""
    now = time.time() if now is None else now
    report = CompactionReport(date)
    for location in table_locations(lake_root, tables):
        directory = date_directories(lake_root, location).get(date)
        if directory is not None:
            _compact_directory(location, directory, quiet_seconds, now, report)
    return report


def _compact_directory(
    location: str, directory: Path, quiet_seconds: float, now: float, report: CompactionReport
) -> None:
    if has_commit_in_flight(directory):
        report.skipped[location] = "a collector commit is in flight"
        return
    for stale in directory.glob(".compact-*.parquet.tmp"):  # left by a compaction that died; a live one is younger
        if now - stale.stat().st_mtime > STALE_TEMP_SECONDS:
            stale.unlink(missing_ok=True)
    parts = part_files(directory)
    live, superseded = split_superseded(parts)
    for part in superseded:
        part.path.unlink(missing_ok=True)
    if superseded:
        fsync_path(directory)
        report.superseded_removed += len(superseded)
    sizes = {part.path: part.path.stat().st_size for part in live}
    report.files_before += len(live)
    report.bytes_before += sum(sizes.values())
    by_collector: dict[str, list[PartFile]] = {}
    for part in live:
        by_collector.setdefault(part.collector_id, []).append(part)
    for collector_id, inputs in sorted(by_collector.items()):
        newest = max(part.path.stat().st_mtime for part in inputs)
        if len(inputs) < 2:
            report.files_after += len(inputs)
            report.bytes_after += sum(sizes[p.path] for p in inputs)
            continue
        if now - newest < quiet_seconds:
            report.skipped[f"{location}/{collector_id}"] = (
                f"newest file is {now - newest:.0f} s old (quiet period {quiet_seconds:.0f} s)"
            )
            report.files_after += len(inputs)
            report.bytes_after += sum(sizes[p.path] for p in inputs)
            continue
        merged, rows = _merge(location, directory, collector_id, inputs)
        report.files_after += 1
        report.bytes_after += merged.stat().st_size
        report.rows += rows
        report.merged[f"{location}/{merged.name}"] = f"{len(inputs)} files, {rows} rows"


def _merge(location: str, directory: Path, collector_id: str, inputs: list[PartFile]) -> tuple[Path, int]:
    schema = SCHEMAS[location.split("/", 1)[0]]
    expected = sum(pq.ParquetFile(part.path).metadata.num_rows for part in inputs)
    temp = directory / f".compact-{uuid.uuid4().hex}.parquet.tmp"
    try:
        with pq.ParquetWriter(temp, schema, compression="zstd") as writer:
            batch: list[pa.Table] = []
            for part in inputs:  # a row group's worth at a time: bounded memory, no tiny row groups
                batch.append(pq.read_table(part.path, schema=schema))
                if sum(t.num_rows for t in batch) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(batch), row_group_size=ROW_GROUP_ROWS)
                    batch = []
            if batch:
                writer.write_table(pa.concat_tables(batch), row_group_size=ROW_GROUP_ROWS)
        fsync_path(temp)
        written = pq.ParquetFile(temp).metadata.num_rows
        if written != expected:
            raise RuntimeError(f"compacting {directory}: wrote {written} rows, inputs hold {expected}")
        final = directory / part_name(inputs[0].first_seq, max(p.last_seq for p in inputs), collector_id)
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_path(directory)
    for part in inputs:
        part.path.unlink(missing_ok=True)  # a concurrent compaction of the same day may have removed it
    fsync_path(directory)
    return final, written
