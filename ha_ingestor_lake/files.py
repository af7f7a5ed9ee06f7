"""The raw lake's file names and the one rule readers need once files are compacted.

A committed file is ``part-<first_seq>-<last_seq>-<collector_id>.parquet``: the rows one collector
committed for one (table, date) from that range of its spool sequence numbers. The collector's own
files never overlap. A compacted file carries the union of its inputs' ranges, so while its inputs
still exist (between its rename and their unlink, or after a crash in between) they lie inside its
range: such a file is *superseded* and readers skip it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PART_NAME = re.compile(r"^part-(\d+)-(\d+)-([A-Za-z0-9_]+)\.parquet$")
# the collector id at the end of a part file's path (for readers that match paths, e.g. polars' str.extract)
COLLECTOR_OF_PART_PATH = r"part-\d+-\d+-([A-Za-z0-9_]+)\.parquet$"


@dataclass(frozen=True, order=True)
class PartFile:
    first_seq: int
    last_seq: int
    collector_id: str
    path: Path

    @staticmethod
    def parse(path: Path) -> PartFile | None:
        match = PART_NAME.match(path.name)
        if match is None:
            return None
        return PartFile(int(match[1]), int(match[2]), match[3], path)


def part_name(first_seq: int, last_seq: int, collector_id: str) -> str:
    return f"part-{first_seq:012d}-{last_seq:012d}-{collector_id}.parquet"


def part_files(directory: Path) -> list[PartFile]:
    """Every committed part file of one ``date=`` directory, superseded ones included, in seq order."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(part for entry in entries if (part := PartFile.parse(Path(entry.path))) is not None)


def split_superseded(parts: list[PartFile]) -> tuple[list[PartFile], list[PartFile]]:
    """(live, superseded): a file is superseded when another file of its collector covers its range."""
    live, superseded = [], []
    widest: dict[str, tuple[int, int]] = {}  # collector -> (first, last) of the widest-reaching range so far
    for part in sorted(parts, key=lambda p: (p.collector_id, p.first_seq, -p.last_seq)):
        reach = widest.get(part.collector_id)
        # sorted by first_seq, so every earlier range starts at or before this one
        if reach is not None and reach[1] >= part.last_seq and reach != (part.first_seq, part.last_seq):
            superseded.append(part)
        else:
            live.append(part)
        if reach is None or part.last_seq > reach[1]:
            widest[part.collector_id] = (part.first_seq, part.last_seq)
    return sorted(live), sorted(superseded)


def live_files(directory: Path) -> list[Path]:
    """The files a reader of one ``date=`` directory should read: each committed row exactly once."""
    return [part.path for part in split_superseded(part_files(directory))[0]]


def has_commit_in_flight(directory: Path) -> bool:
    """A collector's ``part-*.parquet.tmp`` means a commit (or its recovery) is not finished in this directory."""
    try:
        return any(entry.name.startswith("part-") and entry.name.endswith(".tmp") for entry in os.scandir(directory))
    except FileNotFoundError:
        return False


def table_locations(lake_root: Path, tables: tuple[str, ...]) -> list[str]:
    """Raw locations under the lake root: ``events``, ``states``, and each ``registry/<kind>``."""
    locations = []
    for table in tables:
        if table == "registry":
            registry = lake_root / "registry"
            if registry.is_dir():
                locations += [f"registry/{kind.name}" for kind in sorted(registry.iterdir()) if kind.is_dir()]
        elif (lake_root / table).is_dir():
            locations.append(table)
    return locations


def date_directories(lake_root: Path, location: str) -> dict[str, Path]:
    directory = lake_root / location
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return {}
    return {
        entry.name.removeprefix("date="): Path(entry.path)
        for entry in entries
        if entry.name.startswith("date=") and entry.is_dir()
    }
