"""The landing zone's file names: what the collector commits, and what the table loader accepts.

A committed file is ``part-<first_seq>-<last_seq>-<collector_id>.parquet``: the rows one collector
committed for one (table, date) from that range of its spool sequence numbers; a collector's files
never overlap. ``collector_sessions`` holds ``session-<session_id>-<collector_id>.parquet``, one per
session, replaced whole while the session runs. Files are never rewritten once committed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .schema import COLLECTOR_SESSIONS_LOCATION

PART_NAME = re.compile(r"^part-(\d+)-(\d+)-([A-Za-z0-9_]+)\.parquet$")
SESSION_NAME = re.compile(r"^session-(\d+)-([A-Za-z0-9_]+)\.parquet$")
# a file the loader leaves alone without setting it aside: a commit in flight, or the loader's own marker
_IN_FLIGHT_SUFFIX = ".tmp"
_LOADER_PREFIX = "_"


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
    """Every committed part file of one ``date=`` directory, in seq order."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(part for entry in entries if (part := PartFile.parse(Path(entry.path))) is not None)


@dataclass(frozen=True)
class LandingFile:
    """A committed landing file and the collector that wrote it (from its name)."""

    path: Path
    collector_id: str


@dataclass(frozen=True)
class LandingListing:
    """One ``date=`` directory of one landing location: the files a loader reads, and the strays it sets aside
    (anything else a person or a tool put there: a ``part-*`` name is the only contract)."""

    files: list[LandingFile]
    strays: list[Path]


def landing_listing(directory: Path, location: str) -> LandingListing:
    """Classify a landing ``date=`` directory; files in flight (``*.tmp``) and loader markers (``_*``) are
    neither read nor set aside."""
    pattern = SESSION_NAME if location == COLLECTOR_SESSIONS_LOCATION else PART_NAME
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except FileNotFoundError:
        return LandingListing([], [])
    files, strays = [], []
    for entry in entries:
        if entry.name.endswith(_IN_FLIGHT_SUFFIX) or entry.name.startswith(_LOADER_PREFIX):
            continue
        match = pattern.match(entry.name)
        if match is not None and entry.is_file():
            files.append(LandingFile(Path(entry.path), match[match.re.groups]))
        else:
            strays.append(Path(entry.path))
    if pattern is PART_NAME:  # in commit order: seq ranges of a collector grow
        files.sort(key=lambda f: (PartFile.parse(f.path).first_seq, f.collector_id))  # type: ignore[union-attr]
    return LandingListing(files, strays)


def table_locations(lake_root: Path, tables: tuple[str, ...]) -> list[str]:
    """Landing locations under the lake root: ``events``, ``states``, and each ``registry/<kind>``."""
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
