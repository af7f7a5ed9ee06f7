"""What the collector has committed, per day, in a form small enough to keep in a sensor cursor.

For one (day, collector) the mark is ``[newest last_seq, number of files ending at it]`` over the
watched landing tables. A collector commits in increasing seq order, one file per (table, date) per
commit, so new data for a day always raises the mark: a higher last_seq, or (when a crashed commit's
remaining renames are finished by its recovery) more files at the same last_seq. Landing retention
only deletes files already loaded, which lowers a mark and so asks for nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ha_ingestor_lake.files import date_directories, part_files, table_locations

WATCHED_TABLES = ("events", "states", "registry")

Marks = dict[str, dict[str, list[int]]]  # date -> collector_id -> [last_seq, files at last_seq]


def committed_marks(lake_root: Path, tables: tuple[str, ...] = WATCHED_TABLES) -> Marks:
    marks: Marks = {}
    for location in table_locations(lake_root, tables):
        for date, directory in date_directories(lake_root, location).items():
            for part in part_files(directory):
                mark = marks.setdefault(date, {}).setdefault(part.collector_id, [0, 0])
                if part.last_seq > mark[0]:
                    mark[:] = [part.last_seq, 1]
                elif part.last_seq == mark[0]:
                    mark[1] += 1
    return marks


def has_new_data(previous: dict[str, list[int]] | None, current: dict[str, list[int]]) -> bool:
    previous = previous or {}
    for collector_id, (last_seq, count) in current.items():
        seen = previous.get(collector_id, [0, 0])
        if last_seq > seen[0] or (last_seq == seen[0] and count > seen[1]):
            return True
    return False


def run_key(date: str, marks: dict[str, list[int]]) -> str:
    """The same committed data gives the same key, so a repeated request launches nothing."""
    newest = ",".join(f"{cid}:{seq}.{n}" for cid, (seq, n) in sorted(marks.items()))
    return f"lake:{date}:{hashlib.blake2b(newest.encode(), digest_size=8).hexdigest()}"


@dataclass
class LakeCursor:
    """Everything the sensor knows: the marks it has launched runs for, per day."""

    marks: Marks = field(default_factory=dict)

    VERSION = 1

    @classmethod
    def parse(cls, text: str | None) -> LakeCursor:
        if not text:
            return cls()
        document = json.loads(text)
        if document.get("v") != cls.VERSION:
            return cls()
        return cls(marks=document["marks"])

    def dump(self) -> str:
        return json.dumps({"v": self.VERSION, "marks": self.marks}, sort_keys=True, separators=(",", ":"))
